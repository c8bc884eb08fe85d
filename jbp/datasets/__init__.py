"""Datasets: the built-in ones (generated, or bundled with scikit-learn), a user's own files,
and character-level text for language models (:mod:`jbp.datasets.text`)."""

from jbp.datasets.builtin import DATASETS, SETTINGS, Dataset, digits, load, moons, sine, spirals, xor
from jbp.datasets.scaling import Scaling
from jbp.datasets.files import TASKS, flatten, load_file, split
from jbp.datasets import text

__all__ = ["DATASETS", "Dataset", "TASKS", "Scaling", "SETTINGS", "digits", "flatten", "load", "load_file", "moons",
           "sine", "spirals", "split", "text", "xor"]
