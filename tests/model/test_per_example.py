"""per_example_grads, per_example_norms and clipped_grad: every example's own gradient, its norm and
its clipping, from the hand-derived backward pass."""

import functools

import jax
import numpy as np
import pytest

import jbp
from helpers import RTOL, assert_grads_close, assert_same_dtypes, layers_problem, problem, to_float64
from jbp.layers import (AvgPool1D, Conv1D, Conv2D, Dense, Dropout, Flatten, LayerNorm, MaxPool2D, Residual,
                        conv)
from jbp.model.losses import get_loss
from jbp.model.per_example import clipped_grad_sum
from user_layers import MyDense, MyDenseWithNorms, MyScale, MyTanh

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
    with pytest.raises(TypeError, match=r"net must be a jbp network \(jbp.MLP or jbp.Sequential\), got tuple"):
        jbp.per_example_norms(net.sizes, params, x, y)


# ----------------------------------------------------------------------------- networks of layers
# Each layer kind's rule (jbp/layers/per_example.py) in two small float64 networks (few,
# as each costs a compilation): (net, one-hot targets). The image net's convolution (2x2
# positions, 8 inputs per window, 12 features) takes the ghost norm; Dropout is the identity in
# evaluation mode. The signal net's strided convolution takes the direct per-example BP5, then
# average pooling, a user layer without per_example_sq_norms (vmap of its own backward), one with
# it, a residual block without parameters and a Dense.
LAYER_NETS = (
    (jbp.Sequential((4, 4, 2), [MaxPool2D(2), Conv2D(12, (2, 2)), LayerNorm(), "softplus", Flatten(),
                                Residual((Dense(48), "relu")), Dropout(0.3), Dense(3)],
                    loss="cross_entropy"), True),
    (jbp.Sequential((6, 2), [Conv1D(3, 2, stride=2, padding="VALID"), "tanh", AvgPool1D(2), Flatten(), MyDense(5),
                             MyTanh(), MyDenseWithNorms(4), Residual(("tanh",)), Dense(2)], loss="mse"), False),
)
LAYER_PROBLEMS = [layers_problem(net, 5, np.float64, seed=i, one_hot=oh) for i, (net, oh) in enumerate(LAYER_NETS)]
DROPOUT_NET = jbp.Sequential((4,), [Dense(6), "relu", Dropout(0.5), Dense(3)], loss="cross_entropy")
DROPOUT_PROBLEM = layers_problem(DROPOUT_NET, 6, np.float64)


def test_the_networks_take_both_ways_to_a_convolutions_norms():
    assert conv.sq_norm_method(4, 8, 12) == "ghost" and conv.sq_norm_method(3, 4, 3) == "direct"


def _clipped_reference(g, losses, clip_norm, mask):
    """Clipping per-example gradients ``g`` (leaves ``(B, ...)``) and their mean over the rows
    with ``mask`` 1, as :func:`_clip_reference` does, from gradients already computed."""
    n = jax.numpy.maximum(mask.sum(), 1)
    c = mask * jax.numpy.minimum(1, clip_norm / _flat_norms(g))
    return jax.numpy.sum(mask * losses) / n, jax.tree.map(lambda l: jax.numpy.tensordot(c, l, 1) / n, g)


#: The networks-of-layers checks' programs are tiny and compiled once each: without LLVM's
#: optimisations they compile in about half the time, which is most of these tests' time.
QUICK_COMPILE = {"xla_backend_optimization_level": 0}


@functools.partial(jax.jit, static_argnums=(0, 1), compiler_options=QUICK_COMPILE)
def _layers_case(net, masked, params, x, y):
    """jbp's norms, those of jbp.per_example_grads and of vmap(jax.grad) over single examples,
    jbp's clipped_grad at the median norm (all rows, or ``MASKS[1]``) and the reference."""
    g = jax.vmap(jax.grad(net.loss), in_axes=(None, 0, 0))(params, x[:, None], y[:, None])
    losses = jax.vmap(net.loss, in_axes=(None, 0, 0))(params, x[:, None], y[:, None])
    clip_norm, mask = jax.numpy.median(_flat_norms(g)), MASKS[1, :5] if masked else None
    return ((jbp.per_example_norms(net, params, x, y), _flat_norms(jbp.per_example_grads(net, params, x, y)),
             _flat_norms(g)),
            jbp.clipped_grad(net, params, x, y, clip_norm, mask=mask),
            _clipped_reference(g, losses, clip_norm, MASKS[1, :5] if masked else jax.numpy.ones(5)))


@functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
def _in_training_mode(params, x, y, key):
    """DP-SGD's clipped sum in training mode, and the reference: the Jacobian of the batch's
    per-example losses (one forward pass, the same dropout masks), clipped."""
    got = clipped_grad_sum(DROPOUT_NET, params, x, y, 0.8, MASKS[1], key, train=True)

    def losses(p):
        _, cache = DROPOUT_NET.forward(p, x, key=key, train=True)
        value = get_loss(DROPOUT_NET.loss_name).value
        return jax.vmap(lambda z, out, t: value(z[None], out[None], t[None]))(cache.z, cache.out, y)

    g = jax.jacrev(losses)(params)  # leaves (B, ...): each example's own gradient under its mask
    want_loss, want = _clipped_reference(g, losses(params), 0.8, MASKS[1])
    n = MASKS[1].sum()
    return got, (want_loss * n, jax.tree.map(lambda l: l * n, want))


@pytest.mark.parametrize("i", range(len(LAYER_NETS)))
def test_networks_of_layers_norms_and_clipping_are_those_of_the_per_example_gradients(i):
    (net, _), p = LAYER_NETS[i], LAYER_PROBLEMS[i]
    (norms, of_grads, of_autodiff), (loss, grads), (want_loss, want) = _layers_case(net, i == 1, *p)
    assert norms.shape == (5,) and norms.dtype == np.float64
    for reference in (of_grads, of_autodiff):
        err = float(jax.numpy.max(jax.numpy.abs(norms - reference) / reference))
        assert err <= 1e-10, f"{net}: relative error {err:.1e} of the per-example norms"
    assert np.sum(np.asarray(of_autodiff) > float(np.median(of_autodiff))) == 2  # some clipped, some not
    assert_grads_close(grads, want, 1e-10)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-12)
    assert_same_dtypes(grads, p[0])


def test_in_training_mode_each_example_is_clipped_under_its_own_dropout_mask():
    """DP-SGD in fit runs a network of layers in training mode."""
    (loss, grads), (want_loss, want) = _in_training_mode(*DROPOUT_PROBLEM, jax.random.key(2))
    assert_grads_close(grads, want, 1e-10)
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-12)


@functools.partial(jax.jit, compiler_options=QUICK_COMPILE)
def _conv_ways(delta, x):
    kernel, strides = (3, 2), (2, 2)
    padding = conv.pads((5, 4), kernel, strides, "SAME")
    one = lambda d, xi: conv.conv_weight_grad(d[None], xi[None], kernel, strides, padding)
    want = _flat_norms(jax.vmap(one)(delta, x)) ** 2
    return want, [conv.conv_weight_grad_sq_norms(delta, x, kernel, strides, padding, m) for m in conv.SQ_NORM_METHODS]


def test_conv_ghost_norm_and_direct_agree_with_each_examples_bp5():
    """Both ways, strided and padded, against BP5 of each example alone."""
    rng = np.random.default_rng(0)
    delta, x = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=(3, 5, 4, 2))
    want, got = _conv_ways(delta, x)
    for method, g in zip(conv.SQ_NORM_METHODS, got):
        np.testing.assert_allclose(g, want, rtol=1e-12, err_msg=method)
    with pytest.raises(ValueError, match="unknown method 'exact'; expected one of ghost, direct"):
        conv.conv_weight_grad_sq_norms(delta, x, (3, 2), (2, 2), ((1, 1), (0, 1)), "exact")


def test_a_layer_whose_backward_cannot_be_mapped_is_named():
    net = jbp.Sequential((4,), [Dense(4), MyScale(), Dense(2)], loss="mse")
    params, x, y = layers_problem(net, 3, np.float64)
    with pytest.raises(ValueError, match=r"layers\[1\] \(MyScale\) has parameters but no per_example_sq_norms "
                                         r"method, and a leaf of its residuals has shape \(4,\)"):
        jax.eval_shape(lambda: jbp.per_example_norms(net, params, x, y))  # traced only: the error is static
