"""Datasets: the built-in ones (generated, or bundled with scikit-learn), a user's own files,
and character-level text for language models (:mod:`jbp.datasets.text`)."""

from jbp.datasets.builtin import DATASETS, Dataset, digits, load, moons, sine, spirals, xor
from jbp.datasets.files import TASKS, flatten, load_file, split
from jbp.datasets import text

__all__ = ["DATASETS", "Dataset", "TASKS", "digits", "flatten", "load", "load_file", "moons", "sine",
           "spirals", "split", "text", "xor"]
