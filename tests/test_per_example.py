"""per_example_grads, per_example_norms and clipped_grad: every example's own gradient, its norm and
its clipping, from the hand-derived backward pass."""

import functools

import jax
import numpy as np
import pytest

import jbp
from helpers import RTOL, assert_grads_close, assert_same_dtypes, problem, to_float64

# (sizes, hidden activation, output activation, loss, one-hot targets)
NETS = [
    ((3, 5, 5, 2), "relu", "sigmoid", "mse", False),
    ((3, 5, 4), "gelu", "softmax", "cross_entropy", False),
    ((3, 5, 5, 4), "elu", "softmax", "cross_entropy", True),
    ((3, 2), "softplus", "sigmoid", "binary_cross_entropy", False),
]
_per_example = jax.jit(jbp.per_example_grads, static_argnums=0)
_grad = jax.jit(lambda net, params, x, y: net.loss_and_grad(params, x, y)[1], static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _autodiff_per_example(net, params, x, y):
    """jax.grad of the loss of each example alone (a batch of one), in float64."""
    params, x, y = to_float64((params, x, y))
    return jax.vmap(jax.grad(net.loss), in_axes=(None, 0, 0))(params, x[:, None], y[:, None])


# Every net in float64, and one in float32 (the dtype plumbing; the manual path's float32
# accuracy is test_backward_pass's job).
CASES = [(spec, np.float64) for spec in NETS] + [(NETS[2], np.float32)]


@pytest.mark.parametrize(
    "spec, dtype", CASES,
    ids=[f"{s[3]}-{s[1]}-{len(s[0]) - 1}layers{'-onehot' * s[4]}-{np.dtype(d).name}" for s, d in CASES],
)
def test_each_row_is_that_examples_gradient(spec, dtype):
    sizes, hidden, out, loss, one_hot = spec
    net = jbp.MLP(sizes, activation=hidden, output_activation=out, loss=loss)
    params, x, y = problem(net, 7, dtype, one_hot=one_hot)
    got = _per_example(net, params, x, y)
    assert_same_dtypes(got, params)
    for g, p in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        assert g.shape == (7,) + p.shape
    assert_grads_close(got, _autodiff_per_example(net, params, x, y), RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("spec", NETS, ids=lambda s: s[3] + "-onehot" * s[4])
def test_their_mean_is_the_batch_gradient(spec):
    sizes, hidden, out, loss, one_hot = spec
    net = jbp.MLP(sizes, activation=hidden, output_activation=out, loss=loss)
    params, x, y = problem(net, 7, np.float64, one_hot=one_hot)
    mean = jax.tree.map(lambda g: g.mean(axis=0), _per_example(net, params, x, y))
    assert_grads_close(mean, _grad(net, params, x, y), 1e-12)


def test_a_batch_of_one_is_loss_and_grad():
    net = jbp.MLP((3, 5, 2), loss="cross_entropy")
    params, x, y = problem(net, 1, np.float64)
    one = jax.tree.map(lambda g: g[0], _per_example(net, params, x, y))
    assert_grads_close(one, _grad(net, params, x, y), 1e-14)


def test_bad_inputs_are_clear_errors():
    net = jbp.MLP((3, 5, 2), loss="cross_entropy")
    params, x, y = problem(net, 4, np.float64)
    with pytest.raises(ValueError, match=r"x has 2 features but the network expects 3 \(sizes\[0\]\)"):
        jbp.per_example_grads(net, params, x[:, :2], y)
    with pytest.raises(TypeError, match="net must be a jbp network \\(jbp.MLP or jbp.Sequential\\), got tuple"):
        jbp.per_example_grads(net.sizes, params, x, y)


# ----------------------------------------------------------------------------- norms, clipping
# Every hidden activation (at depth 2 or 3), every loss head (integer and one-hot labels),
# depth 1 to 4, and a non-fused output (mse after softmax/tanh): one compiled program each
# for jbp and for the references, over the whole table.
HIDDEN = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu")
HEADS = [("identity", "mse", False), ("softmax", "cross_entropy", False),
         ("softmax", "cross_entropy", True), ("sigmoid", "binary_cross_entropy", False)]
NORM_NETS = tuple(
    [(jbp.MLP((3, 5, 4) if i % 2 else (3, 5, 4, 4), activation=h, output_activation=HEADS[i % 4][0],
              loss=HEADS[i % 4][1]), HEADS[i % 4][2]) for i, h in enumerate(HIDDEN)]
    + [(jbp.MLP((3, 4), output_activation=o, loss=l), oh) for o, l, oh in HEADS]
    + [(jbp.MLP((3, 6, 5, 4, 3), activation="tanh", output_activation=o, loss="mse"), False)
       for o in ("softmax", "tanh")]
)
NORM_PROBLEMS = [problem(net, 6, np.float64, seed=i, one_hot=oh) for i, (net, oh) in enumerate(NORM_NETS)]


def _flat_norms(per_example):
    """Norm of each example's gradient over all leaves, from ``(B, ...)`` leaves."""
    return jax.numpy.sqrt(sum(jax.numpy.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)
                              for g in jax.tree.leaves(per_example)))


@jax.jit
def _table_norms(problems):
    return [jbp.per_example_norms(net, *p) for (net, _), p in zip(NORM_NETS, problems)]


@jax.jit
def _table_reference_norms(problems):
    """The norms of jbp.per_example_grads and of vmap(jax.grad) over single examples."""
    return [
        (_flat_norms(jbp.per_example_grads(net, *p)),
         _flat_norms(jax.vmap(jax.grad(net.loss), in_axes=(None, 0, 0))(p[0], p[1][:, None], p[2][:, None])))
        for (net, _), p in zip(NORM_NETS, problems)
    ]


def test_norms_are_those_of_the_per_example_gradients():
    got = _table_norms(NORM_PROBLEMS)
    for (net, _), norms, (of_grads, of_autodiff) in zip(NORM_NETS, got, _table_reference_norms(NORM_PROBLEMS)):
        assert norms.shape == (6,) and norms.dtype == np.float64
        for want in (of_grads, of_autodiff):
            err = float(jax.numpy.max(jax.numpy.abs(norms - want) / want))
            assert err <= 1e-10, f"{net}: relative error {err:.1e} of the per-example norms"


def _clip_reference(net, params, x, y, clip_norm, mask):
    """Clipping vmap(jax.grad)'s per-example gradients, the autodiff way, then the mean;
    the loss is the mean of the masked-in examples' own losses."""
    g = jax.vmap(jax.grad(net.loss), in_axes=(None, 0, 0))(params, x[:, None], y[:, None])
    losses = jax.vmap(net.loss, in_axes=(None, 0, 0))(params, x[:, None], y[:, None])
    n = jax.numpy.maximum(mask.sum(), 1)
    c = mask * jax.numpy.minimum(1, clip_norm / _flat_norms(g))
    return jax.numpy.sum(mask * losses) / n, jax.tree.map(lambda l: jax.numpy.tensordot(c, l, 1) / n, g)


#: Nets of the clipping table (every loss head) and the masks each is run with: all rows,
#: some rows, none (the mean over no rows is zero).
CLIP_NETS = (1, 2, 9, 12)
MASKS = np.array([np.ones(6), [1, 0, 1, 1, 0, 1.0], np.zeros(6)])


@functools.partial(jax.jit, static_argnums=0)
def _clip_table(clip, problems, clip_norms):
    return [
        jax.vmap(lambda m: clip(NORM_NETS[i][0], *p, c, mask=m))(MASKS)
        for i, p, c in zip(CLIP_NETS, problems, clip_norms)
    ]


def test_clipped_grad_is_the_mean_of_clipped_per_example_gradients():
    problems = [NORM_PROBLEMS[i] for i in CLIP_NETS]
    norms = _table_norms(NORM_PROBLEMS)
    clip_norms = [float(np.median(norms[i])) for i in CLIP_NETS]  # half clipped, half not
    got = _clip_table(jbp.clipped_grad, problems, clip_norms)
    want = _clip_table(_clip_reference, problems, clip_norms)
    for i, (loss, grads), (want_loss, want_grads) in zip(CLIP_NETS, got, want):
        assert np.sum(norms[i] > clip_norms[CLIP_NETS.index(i)]) == 3
        for k in range(len(MASKS)):
            assert_grads_close(jax.tree.map(lambda g: g[k], grads), jax.tree.map(lambda g: g[k], want_grads), 1e-10)
        np.testing.assert_allclose(np.asarray(loss), np.asarray(want_loss), rtol=1e-12, atol=0)
    assert float(np.abs(np.asarray(got[0][1][0].W[2])).max()) == 0.0  # the empty mask's mean


@jax.jit
def _unclipped(problem):
    net = NORM_NETS[0][0]
    return jbp.clipped_grad(net, *problem, 1e6), net.loss_and_grad(*problem)


def test_a_large_clip_norm_is_the_plain_gradient():
    (loss, grads), (want_loss, want) = _unclipped(NORM_PROBLEMS[0])
    assert_grads_close(grads, want, 1e-12)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-12)


def test_clipping_bad_inputs_are_clear_errors():
    net, _ = NORM_NETS[1]
    params, x, y = NORM_PROBLEMS[1]
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"clip_norm must be > 0, got {bad}"):
            jbp.clipped_grad(net, params, x, y, bad)
    with pytest.raises(ValueError, match="clip_norm must be a finite real number, got inf"):
        jbp.clipped_grad(net, params, x, y, float("inf"))
    with pytest.raises(ValueError, match=r"mask has shape \(5,\) but x has 6 rows"):
        jbp.clipped_grad(net, params, x, y, 1.0, mask=np.ones(5))
    with pytest.raises(ValueError, match=r"mask must hold only 0 and 1, got values \[0.0, 0.5, 1.0\]"):
        jbp.clipped_grad(net, params, x, y, 1.0, mask=np.array([0, 0.5, 1, 1, 1, 1]))
    with pytest.raises(TypeError, match="net must be a jbp.MLP, got tuple"):
        jbp.per_example_norms(net.sizes, params, x, y)
