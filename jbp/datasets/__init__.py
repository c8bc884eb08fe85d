"""Datasets: the built-in ones (generated, or bundled with scikit-learn)."""

from jbp.datasets.builtin import DATASETS, Dataset, digits, load, moons, sine, spirals, xor

__all__ = ["DATASETS", "Dataset", "digits", "load", "moons", "sine", "spirals", "xor"]
