"""Datasets: the built-in ones (generated, or bundled with scikit-learn) and a user's own files."""

from jbp.datasets.builtin import DATASETS, SETTINGS, Dataset, digits, load, moons, sine, spirals, xor
from jbp.datasets.scaling import Scaling
from jbp.datasets.files import TASKS, flatten, load_file, split

__all__ = ["DATASETS", "Dataset", "TASKS", "digits", "flatten", "load", "load_file", "moons", "Scaling", "SETTINGS", "sine",
           "spirals", "split", "xor"]
