"""The forward pass (BP1, BP2) against a direct transcription of the seed's sums."""

import jax.numpy as jnp
import numpy as np

import jbp
from jbp.model.forward_pass import dense
from helpers import problem


def test_dense_is_the_seed_sum():
    """BP1: z_j = sum_i w_ji x_i + b_j, written as loops over the seed's indices."""
    rng = np.random.default_rng(0)
    W, b, x = rng.normal(size=(4, 3)), rng.normal(size=4), rng.normal(size=(2, 3))
    z = dense(jbp.Layer(jnp.asarray(W), jnp.asarray(b)), jnp.asarray(x))
    want = [[sum(W[j, i] * x[r, i] for i in range(3)) + b[j] for j in range(4)] for r in range(2)]
    np.testing.assert_allclose(z, want, rtol=1e-13)


def test_cache_keeps_z_and_x_of_every_layer():
    net = jbp.MLP((3, 5, 4, 2), activation=("tanh", "relu"), output_activation="sigmoid")
    params, x, _ = problem(net, 6, np.float64)
    out, cache = jbp.forward(params, x, net.activations)
    assert [z.shape for z in cache.zs] == [(6, 5), (6, 4), (6, 2)]
    assert [a.shape for a in cache.xs] == [(6, 3), (6, 5), (6, 4), (6, 2)]
    assert cache.xs[0] is x and cache.xs[-1] is out
    h = x
    for layer, f, z, a in zip(params, (np.tanh, lambda v: np.maximum(v, 0), lambda v: 1 / (1 + np.exp(-v))), cache.zs, cache.xs[1:]):
        np.testing.assert_allclose(z, h @ np.asarray(layer.W).T + np.asarray(layer.b), rtol=1e-13)
        np.testing.assert_allclose(a, f(np.asarray(z)), rtol=1e-13)
        h = np.asarray(a)
