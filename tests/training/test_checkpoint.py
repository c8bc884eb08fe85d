"""Checkpoints: round trip, atomic writes, and clear errors on bad files."""

import functools
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jbp
from jbp.training import checkpoint
from helpers import problem

NET = jbp.MLP((3, 5, 2), activation="relu", loss="cross_entropy")


def _trained(dtype=np.float32):
    params, x, y = problem(NET, 8, dtype)
    opt = optax.adam(1e-2)
    params, h = jbp.fit(NET, params, x, y, optimizer=opt, epochs=3, batch_size=4, key=jax.random.key(5))
    return params, h.opt_state, opt


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


def test_round_trip(tmp_path):
    params, opt_state, opt = _trained()
    path = tmp_path / "c.npz"
    key = jax.random.key(42)
    jbp.save_checkpoint(path, net=NET, params=params, opt_state=opt_state, epoch=3, key=key, extra={"note": [1, 2]})
    c = jbp.load_checkpoint(path, optimizer=opt)
    assert c.net == NET and c.epoch == 3 and c.extra == {"note": [1, 2]}
    _assert_trees_equal(c.params, params)
    _assert_trees_equal(c.opt_state, opt_state)
    np.testing.assert_array_equal(jax.random.key_data(c.key), jax.random.key_data(key))
    assert jax.random.key_impl(c.key) == jax.random.key_impl(key)
    # without the optimizer, the state comes back as its list of arrays
    raw = jbp.load_checkpoint(path)
    _assert_trees_equal(raw.opt_state, jax.tree.leaves(opt_state))


def test_round_trip_keeps_bfloat16_and_float64(tmp_path):
    for dtype in (jnp.bfloat16, np.float64):
        params = NET.init(jax.random.key(0), dtype=dtype)
        jbp.save_checkpoint(tmp_path / "c.npz", net=NET, params=params)
        c = jbp.load_checkpoint(tmp_path / "c.npz")
        _assert_trees_equal(c.params, params)
        assert c.opt_state is None and c.key is None


def test_resuming_from_a_checkpoint_is_exact(tmp_path):
    params, x, y = problem(NET, 8, np.float32)
    opt = optax.adam(1e-2)
    kw = dict(optimizer=opt, batch_size=4, key=jax.random.key(5))
    whole, _ = jbp.fit(NET, params, x, y, epochs=6, **kw)
    half, h = jbp.fit(NET, params, x, y, epochs=3, **kw)
    jbp.save_checkpoint(tmp_path / "c.npz", net=NET, params=half, opt_state=h.opt_state, epoch=int(h.epoch), key=kw["key"])
    c = jbp.load_checkpoint(tmp_path / "c.npz", optimizer=opt)
    rest, _ = jbp.fit(c.net, c.params, x, y, epochs=3, opt_state=c.opt_state, start_epoch=c.epoch,
                      optimizer=opt, batch_size=4, key=c.key)
    _assert_trees_equal(rest, whole)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    params, opt_state, opt = _trained()
    path = tmp_path / "c.npz"
    jbp.save_checkpoint(path, net=NET, params=params, opt_state=opt_state, epoch=3)

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(OSError, match="simulated"):
        jbp.save_checkpoint(path, net=NET, params=params, opt_state=opt_state, epoch=4)
    monkeypatch.undo()
    c = jbp.load_checkpoint(path, optimizer=opt)
    assert c.epoch == 3
    _assert_trees_equal(c.params, params)
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_checkpoint_gets_the_mode_of_any_new_file(tmp_path, umask):
    # tempfile.mkstemp creates 0600; the checkpoint must respect the umask as open() does
    old = os.umask(umask)
    try:
        jbp.save_checkpoint(tmp_path / "c.npz", net=NET, params=NET.init(jax.random.key(0)))
        (tmp_path / "other").write_text("x")
    finally:
        os.umask(old)
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777
    assert mode("c.npz") == mode("other") == 0o666 & ~umask


def test_truncated_file_is_a_clear_error(tmp_path):
    params, opt_state, _ = _trained()
    path = tmp_path / "c.npz"
    jbp.save_checkpoint(path, net=NET, params=params, opt_state=opt_state)
    data = path.read_bytes()
    for cut in (len(data) // 2, 10, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="is not a readable jbp checkpoint: truncated or corrupted"):
            jbp.load_checkpoint(path)


def test_corrupted_bytes_are_a_clear_error(tmp_path):
    params, opt_state, _ = _trained()
    path = tmp_path / "c.npz"
    jbp.save_checkpoint(path, net=NET, params=params, opt_state=opt_state)
    data = bytearray(path.read_bytes())
    # flip bytes inside the first stored array's data (after its local header and .npy header)
    start = data.index(b"params/0/W.npy") + 200
    data[start : start + 8] = bytes(255 - b for b in data[start : start + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is not a readable jbp checkpoint: truncated or corrupted"):
        jbp.load_checkpoint(path)


def test_foreign_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "other.npz"
    np.savez(foreign, a=np.arange(3))
    with pytest.raises(ValueError, match="has no 'meta' entry"):
        jbp.load_checkpoint(foreign)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a readable jbp checkpoint"):
        jbp.load_checkpoint(text)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, meta=np.array('{"format": "something-else"}'))
    with pytest.raises(ValueError, match="its format is not 'jbp-checkpoint'"):
        jbp.load_checkpoint(wrong)
    with pytest.raises(FileNotFoundError):
        jbp.load_checkpoint(tmp_path / "missing.npz")


def test_loading_never_unpickles(tmp_path):
    """An npz whose meta is a pickled object array is refused, not executed."""
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array([{"format": "jbp-checkpoint"}], dtype=object))
    with pytest.raises(ValueError, match="is not a readable jbp checkpoint"):
        jbp.load_checkpoint(path)


def test_optimizer_mismatch_is_a_clear_error(tmp_path):
    params, opt_state, _ = _trained()
    jbp.save_checkpoint(tmp_path / "c.npz", net=NET, params=params, opt_state=opt_state)
    with pytest.raises(ValueError, match="does not fit the optimizer given"):
        jbp.load_checkpoint(tmp_path / "c.npz", optimizer=optax.sgd(0.1, momentum=0.9))


def test_extra_must_be_json(tmp_path):
    params = NET.init(jax.random.key(0))
    with pytest.raises(TypeError, match="extra must be JSON-serialisable"):
        jbp.save_checkpoint(tmp_path / "c.npz", net=NET, params=params, extra={"f": object()})
    assert not os.listdir(tmp_path)


@functools.cache
def _checkpoint_bytes():
    params, opt_state, _ = _trained()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "c.npz")
        jbp.save_checkpoint(path, net=NET, params=params, opt_state=opt_state, epoch=3, key=jax.random.key(1))
        with open(path, "rb") as f:
            return f.read(), params, opt_state


@settings(max_examples=60, deadline=None, derandomize=True)
@given(where=st.floats(0, 1), length=st.integers(1, 32), how=st.sampled_from(["invert", "zero", "cut", "drop"]))
def test_spoiled_bytes_give_a_clear_error_or_the_saved_values(where, length, how):
    """Any damage to the file is caught (zip CRCs cover every entry) or harmless (a date
    in a zip header, say): load_checkpoint never returns values other than those saved."""
    data, params, opt_state = _checkpoint_bytes()
    i = int(where * (len(data) - 1))
    spoiled = {
        "invert": lambda: data[:i] + bytes(255 - b for b in data[i : i + length]) + data[i + length :],
        "zero": lambda: data[:i] + bytes(len(data[i : i + length])) + data[i + length :],
        "cut": lambda: data[:i],
        "drop": lambda: data[:i] + data[i + length :],
    }[how]()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "c.npz")
        with open(path, "wb") as f:
            f.write(spoiled)
        try:
            c = jbp.load_checkpoint(path, optimizer=optax.adam(1e-2))
        except ValueError as e:
            assert "is not a readable jbp checkpoint" in str(e)
            return
    assert c.net == NET and c.epoch == 3
    _assert_trees_equal(c.params, params)
    _assert_trees_equal(c.opt_state, opt_state)


def test_a_rules_feedback_weights_round_trip(tmp_path):
    net = jbp.MLP((3, 5, 4, 2), activation="tanh", loss="cross_entropy")
    params = net.init(jax.random.key(0))
    feedback = jbp.rules.direct_feedback_alignment(jax.random.key(1)).init(net, params)
    jbp.save_checkpoint(tmp_path / "c.npz", net=net, params=params, feedback=feedback)
    _assert_trees_equal(jbp.load_checkpoint(tmp_path / "c.npz").feedback, feedback)
    jbp.save_checkpoint(tmp_path / "none.npz", net=net, params=params)
    assert jbp.load_checkpoint(tmp_path / "none.npz").feedback == ()
    with pytest.raises(TypeError, match="feedback must be a tuple of arrays"):
        jbp.save_checkpoint(tmp_path / "bad.npz", net=net, params=params, feedback=feedback[0])


def test_a_carried_state_round_trips(tmp_path):
    from jbp.layers import LSTM, Embedding, FusedLMHead

    net = jbp.Sequential((5,), [Embedding(7, 3), LSTM(4), FusedLMHead(7)], loss="cross_entropy")
    params = net.init(jax.random.key(0), jnp.float32)
    x = jax.random.randint(jax.random.key(1), (2, 5), 0, 7)
    (_, state), _ = net.loss_and_grad(params, x, x, state=net.init_state(2, jnp.float32))
    jbp.save_checkpoint(tmp_path / "c.npz", net=net, params=params, state=state)
    loaded = jbp.load_checkpoint(tmp_path / "c.npz")
    assert jax.tree.structure(loaded.state) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, loaded.state, state)
    jbp.save_checkpoint(tmp_path / "d.npz", net=net, params=params)
    assert jbp.load_checkpoint(tmp_path / "d.npz").state is None
    with pytest.raises(ValueError, match="state must be the carried state of a network with a stateful layer"):
        jbp.save_checkpoint(tmp_path / "e.npz", net=NET, params=_trained()[0], state=(jnp.zeros(2),))
