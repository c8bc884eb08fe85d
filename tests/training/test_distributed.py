"""fit on a mesh that spans processes (jbp/training/distributed.py).

The processes are real: tests/distributed_cases.py run in N processes on 127.0.0.1,
joined by jax.distributed as `jbp launch` joins them; the single-device reference runs
here."""

import signal
import sys
import time

import chex
import jax
import numpy as np
import pytest

import jbp
from helpers import problem
from jbp.training import distributed
from jbp.training.fit import REACHED_TOL
from processes import TESTS, finish, joined

sys.path.insert(0, str(TESTS))
import distributed_cases as cases  # noqa: E402  (the same problem and settings as the processes)

CASES = [str(TESTS / "distributed_cases.py")]


def _outputs(results):
    return "\n".join(f"process {i}: status {status}\n{err[-3000:]}" for i, (status, _, err) in enumerate(results))


def _single_device(**rule):
    params, x, y = problem(cases.NET, cases.N_EXAMPLES, np.float64)
    return jbp.fit(cases.NET, params, x, y, epochs=cases.EPOCHS, **cases.KWARGS, **rule)


@pytest.mark.parametrize("processes, devices", [(2, 2), (1, 4)], ids=["2x2", "1x4"])
def test_equals_the_single_device_fit(tmp_path, processes, devices):
    """Same parameters, optimizer state, history and batches as one fit on one device,
    though trained in two calls (the second resuming from the first) and stopped by tol;
    and under feedback alignment, the same parameters as its fit on one device."""
    with joined(processes, devices, [sys.executable, *CASES, "fit", str(tmp_path)]) as procs:
        results = finish(procs)
    assert all(status == 0 for status, _, _ in results), _outputs(results)
    want, history = _single_device()
    want_fa, _ = _single_device(rule=cases.RULE)
    assert int(history.epoch) == 6 and history.reason == "reached tol"
    key, n, batch = cases.KWARGS["key"], cases.N_EXAMPLES, cases.BATCH
    got = [dict(np.load(tmp_path / f"process-{i}.npz")) for i in range(processes)]
    for g in got:
        assert list(g["devices"]) == [processes, processes * devices]
        leaves = lambda name: [g[f"{name}/{i}"] for i in range(len(jax.tree.leaves(want)))]
        chex.assert_trees_all_close(leaves("params"), jax.tree.leaves(want), rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close(leaves("fa_params"), jax.tree.leaves(want_fa), rtol=1e-10, atol=1e-12)
        chex.assert_trees_all_close([g[f"opt_state/{i}"] for i in range(len(jax.tree.leaves(history.opt_state)))],
                                    jax.tree.leaves(history.opt_state), rtol=1e-10, atol=1e-12)
        # the first call ran epochs 0-3; the second stopped at tol after epoch 5
        assert list(g["epoch_reason"]) == [4, 6, REACHED_TOL]
        np.testing.assert_allclose(g["loss"][:6], np.asarray(history.loss)[:6], rtol=1e-10)
        assert np.isnan(g["loss"][6:]).all()
    # Each process fed its contiguous slice of fit's batches, in process order.
    for epoch in range(cases.EPOCHS):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        fed = np.concatenate([g[f"indices/{epoch}"] for g in got], axis=1)
        np.testing.assert_array_equal(fed, order[: n // batch * batch].reshape(n // batch, batch))
        assert all(g[f"indices/{epoch}"].shape == (n // batch, batch // processes) for g in got)


def test_processes_with_different_data_or_networks_refuse_before_training(tmp_path):
    with joined(2, 1, [sys.executable, *CASES, "mismatch", str(tmp_path)]) as procs:
        results = finish(procs, timeout=60)
    for status, _, err in results:
        assert status == 1, _outputs(results)
        assert "ValueError: fit differs across the 2 processes, which must all pass the same arguments" in err
        assert "x is float64[32, 3] in process 0 but float64[24, 3] in process 1" in err
        assert "network is MLP(sizes=(3, 6, 2)" in err and "but MLP(sizes=(3, 5, 2)" in err


def test_a_dead_process_stops_the_others_with_a_clear_error(tmp_path):
    """No launcher here: the survivor's next collective fails, and it exits at once."""
    argv = [sys.executable, "-m", "jbp", "train", "--dataset", "moons", "--epochs", "100000",
            "--batch-size", "8", "--chunk", "1", "--no-check", "--out", str(tmp_path)]
    with joined(2, 1, argv) as procs:
        deadline = time.monotonic() + 120
        while not (tmp_path / "checkpoint.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # a chunk of epochs is done: training runs
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        (status, _, err), _ = finish(procs, timeout=30)
        assert time.monotonic() - killed < 30
    # Whichever notices first: the failed collective (jbp's one line, status 1), or JAX's
    # coordination service, which aborts the process with its own message.
    if status == 1:
        assert "jbp: error: training across 2 processes stopped: a collective failed" in err
        assert "another process has died or cannot be reached" in err
    else:
        assert status == -signal.SIGABRT, err[-3000:]
        assert "Terminating process because the JAX distributed service detected fatal errors" in err


# The pieces, in this one process.


def test_a_mesh_of_this_process_does_not_span_processes():
    mesh = jax.make_mesh((1,), ("data",))
    assert not distributed.spans_processes(mesh)
    assert distributed.local_rows(mesh, 8) == slice(0, 8)


def test_batch_indices_are_fits_shuffle_cut_into_batches():
    key = jax.random.key(3)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 5), 10))
    np.testing.assert_array_equal(distributed.batch_indices(key, 5, 10, 4, slice(2, 4)),
                                  order[:8].reshape(2, 4)[:, 2:4])
    # full batch: every example once, in order, as fit takes it
    np.testing.assert_array_equal(distributed.batch_indices(None, 5, 10, 10, slice(0, 5)), [np.arange(5)])


def test_check_same_passes_the_description_of_one_process():
    distributed.check_same("fit", {"x": "float64[4, 3]", "tol": float("-inf")})
