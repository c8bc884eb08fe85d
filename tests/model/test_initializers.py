"""Initialisation schemes: shapes, dtypes and the variance each one promises."""

import jax
import numpy as np
import pytest

import jbp
from jbp.model.initializers import init_weight

VARIANCE = {
    "glorot": lambda n_in, n_out: 2 / (n_in + n_out),
    "he": lambda n_in, n_out: 2 / n_in,
    "lecun": lambda n_in, n_out: 1 / n_in,
}


@pytest.mark.parametrize("name", list(jbp.INITIALIZERS))
def test_variance_and_shape(name):
    n_in, n_out = 300, 200
    W = init_weight(name, jax.random.key(0), n_in, n_out, np.float64)
    assert W.shape == (n_out, n_in) and W.dtype == np.float64
    want = VARIANCE[name.split("_")[0]](n_in, n_out)
    # 60,000 draws: the sample variance is within a few percent of the target
    assert abs(float(np.var(W)) / want - 1) < 0.03
    assert abs(float(np.mean(W))) < 0.01 * np.sqrt(want) * 10


def test_every_scheme_through_mlp():
    for name in jbp.INITIALIZERS:
        params = jbp.MLP((3, 4, 2), init=name).init(jax.random.key(1), dtype=np.float32)
        assert params[0].W.dtype == np.float32 and params[1].W.shape == (2, 4)
