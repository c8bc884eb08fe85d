"""Data-parallel fit on several devices. JAX fixes its device count when it starts, so
tests/test_parallel.py runs this file in a pytest subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N (the file name keeps the main run
from collecting it)."""

import jax
import jax.extend
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding

import jbp
from helpers import problem

N = jax.device_count()
NET = jbp.MLP((3, 6, 2), activation="tanh", loss="cross_entropy")
# momentum gives the optimizer a state to check the sharding of; tol stops before epochs
KWARGS = dict(
    optimizer=optax.sgd(0.1, momentum=0.9), epochs=20, batch_size=2 * N, key=jax.random.key(1), tol=0.67
)


def _data():
    return problem(NET, 32, np.float64)  # the same data for every N


def _assert_replicated_on(mesh, tree):
    for leaf in jax.tree.leaves(tree):
        assert isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh == mesh, leaf.sharding
        assert leaf.sharding.is_fully_replicated, leaf.sharding


def _assert_close(got, want):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15), got, want)


def test_runs_on_the_forced_devices():
    assert N in (4, 8) and jax.default_backend() == "cpu"


MESHES = {
    "explicit": lambda: jax.make_mesh((N,), ("data",)),
    "auto": lambda: Mesh(np.array(jax.devices()), ("data",)),
    "data-x-model": lambda: jax.make_mesh((N // 2, 2), ("data", "model")),
}


def test_feedback_alignment_equals_its_single_device_fit():
    """Each device takes the rule's update on its slice, with the feedback replicated."""
    net = jbp.MLP((3, 6, 6, 2), activation="tanh", loss="cross_entropy")
    params, x, y = problem(net, 32, np.float64)
    kwargs = dict(KWARGS, rule=jbp.rules.feedback_alignment(jax.random.key(3)), tol=None, epochs=3)
    want, _ = jbp.fit(net, params, x, y, **kwargs)
    got, _ = jbp.fit(net, params, x, y, mesh=MESHES["explicit"](), **kwargs)
    _assert_close(got, want)


@pytest.mark.parametrize("make_mesh", MESHES.values(), ids=MESHES.keys())
def test_equals_the_single_device_fit(make_mesh):
    mesh = make_mesh()
    params, x, y = _data()
    want, want_history = jbp.fit(NET, params, x, y, **KWARGS)
    got, history = jbp.fit(NET, params, x, y, mesh=mesh, **KWARGS)
    assert 1 < int(want_history.epoch) < KWARGS["epochs"], "tol should stop the run early"
    assert int(history.epoch) == int(want_history.epoch)
    _assert_close(got, want)
    _assert_close(history.loss, want_history.loss)
    _assert_replicated_on(mesh, (got, history.loss, history.opt_state))


def test_each_device_computes_its_slice_of_the_batch():
    """The traced loop runs the backward pass in a shard_map on batch_size / N rows."""
    mesh = jax.make_mesh((N,), ("data",))
    params, x, y = _data()
    jaxpr = jax.make_jaxpr(lambda p: jbp.fit(NET, p, x, y, mesh=mesh, **KWARGS))(params)

    def shard_maps(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "shard_map":
                yield eqn
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from shard_maps(sub)

    (eqn,) = shard_maps(jaxpr.jaxpr)
    x_slice = eqn.params["jaxpr"].invars[len(jax.tree.leaves(params))]
    assert x_slice.aval.shape == (KWARGS["batch_size"] // N, 3)


def test_batch_size_must_divide_among_the_devices():
    mesh = jax.make_mesh((N,), ("data",))
    params, x, y = _data()
    with pytest.raises(ValueError, match=f"batch_size=6 is not a multiple of the mesh's 'data' axis size {N}"):
        jbp.fit(NET, params, x, y, mesh=mesh, **{**KWARGS, "batch_size": 6})
