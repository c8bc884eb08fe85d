"""TiedLM: one table embeds the ids and is the fused head's weight; its gradient is the
sum of the two uses'."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jbp
from jbp.layers import EmbeddingParams, TiedLM, TiedLMParams
from jbp.models import gpt
from helpers import rel_errors
from layer_cases import RTOL64

VOCAB, T = 11, 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, VOCAB, (3, T)), rng.integers(0, VOCAB, (3, T))
    y[0, 4:] = -1
    return x, y


def test_fused_and_layer_backwards_match_autodiff_float64():
    net = gpt(VOCAB, T, blocks=1, heads=2, features=8, tied=True)
    assert isinstance(net.layers[0], TiedLM) and net.fused_head is net.layers[0]
    params = net.init(jax.random.key(0), jnp.float64)
    x, y = _data()
    loss, grads = jax.jit(net.loss_and_grad)(params, x, y)
    want_loss, want = jax.jit(jax.value_and_grad(net.loss))(params, x, y)
    assert abs(float(loss - want_loss)) <= RTOL64 * float(want_loss) and max(rel_errors(grads, want)) <= RTOL64

    @jax.jit
    def layer_backward(params, x, y):
        _, cache = net.forward(params, x)
        return net.backward(params, cache, net.output_delta(cache, y))

    layer_grads, dx = layer_backward(params, x, y)
    assert dx is None and max(rel_errors(layer_grads, want)) <= RTOL64


def test_the_table_gradient_is_the_embeddings_plus_the_heads():
    tied_net, net = (gpt(VOCAB, T, blocks=1, heads=2, features=8, tied=t) for t in (True, False))
    tied = tied_net.init(jax.random.key(1), jnp.float64)
    (p,) = tied
    untied = (EmbeddingParams(p.table), *p.body, jbp.Layer(W=p.table, b=p.bias))
    x, y = _data(1)
    (g,) = jax.jit(tied_net.loss_and_grad)(tied, x, y)[1]
    u = jax.jit(net.loss_and_grad)(untied, x, y)[1]
    chex.assert_trees_all_close(g, TiedLMParams(u[0].table + u[-1].W, tuple(u[1:-1]), u[-1].b), rtol=1e-12)


def test_check_layer_float32():
    layer = TiedLM(VOCAB, 8, [jbp.layers.PositionEmbedding(T), jbp.layers.LayerNorm()])
    report = jbp.check_layer(layer, (T,), key=jax.random.key(2), batch=2)
    assert report.ok and all(leaf.name.startswith("params") for leaf in report.leaves), str(report)
