"""fit(..., mesh=mesh): data parallel over a device mesh.

The multi-device cases live in parallel_cases.py and run in a subprocess with 4 and 8
forced CPU devices; the cases here need only the one device of the main run."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import jbp
from helpers import problem

TESTS = pathlib.Path(__file__).parents[1]


@pytest.mark.parametrize("n_devices", [4, 8])
def test_on_forced_cpu_devices(n_devices):
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "parallel_cases.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, f"with {n_devices} devices:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"


@pytest.mark.parametrize("rule", [None, jbp.rules.sign_symmetry()], ids=["bp", "ss"])
def test_a_one_device_mesh_is_the_plain_fit(rule):
    net = jbp.MLP((3, 4, 4, 2), loss="cross_entropy")
    params, x, y = problem(net, 8, np.float64)
    kwargs = dict(optimizer=optax.sgd(0.1), epochs=3, batch_size=4, key=jax.random.key(0), rule=rule)
    mesh = jax.make_mesh((1,), ("data",))
    got, _ = jbp.fit(net, params, x, y, mesh=mesh, **kwargs)
    want, _ = jbp.fit(net, params, x, y, **kwargs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, want)
    assert all(leaf.sharding.mesh == mesh for leaf in jax.tree.leaves(got))


def test_the_monitor_on_a_mesh_is_one_clear_error():
    net = jbp.MLP((3, 4, 2), loss="cross_entropy")
    params, x, y = problem(net, 8, np.float64)
    with pytest.raises(ValueError, match="mesh cannot be combined with monitor=True yet"):
        jbp.fit(net, params, x, y, optimizer=optax.sgd(0.1), epochs=1, batch_size=4, key=jax.random.key(0),
                mesh=jax.make_mesh((1,), ("data",)), monitor=True)


@pytest.mark.parametrize(
    "mesh, error, message",
    [
        ("data", TypeError, "mesh must be a jax.sharding.Mesh"),
        (lambda: jax.make_mesh((1,), ("batch",)), ValueError,
         r"mesh has axes \('batch',\) but fit splits batches over an axis named 'data'"),
    ],
)
def test_bad_meshes_are_clear_errors(mesh, error, message):
    net = jbp.MLP((3, 2), loss="mse")
    params, x, y = problem(net, 4, np.float64)
    with pytest.raises(error, match=message):
        jbp.fit(net, params, x, y, optimizer=optax.sgd(0.1), epochs=1, mesh=mesh() if callable(mesh) else mesh)
