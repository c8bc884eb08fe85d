"""Problem makers and the gradient comparison used across tests."""

import struct

import jax
import jax.numpy as jnp
import numpy as np

import jbp

#: Tolerances on each leaf's norm-wise relative gradient error, by dtype.
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def problem(net, batch, dtype, seed=0, one_hot=False):
    """Random params, inputs and targets fitting ``net``'s loss.

    Drawn with NumPy (jax.random would compile anew for every shape of the table); the
    weights have Glorot scale and the biases are non-zero, so that bias bugs show.
    """
    rng = np.random.default_rng(seed)
    params = tuple(
        jbp.Layer(
            W=jnp.asarray(rng.normal(size=(n_out, n_in)) * np.sqrt(2 / (n_in + n_out)), dtype),
            b=jnp.asarray(0.1 * rng.normal(size=n_out), dtype),
        )
        for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:])
    )
    x = jnp.asarray(rng.normal(size=(batch, net.sizes[0])), dtype)
    n_out = net.sizes[-1]
    return params, x, _targets(net.loss_name, rng, batch, n_out, dtype, one_hot)


def _targets(loss_name, rng, batch, n_out, dtype, one_hot):
    """Random targets for the loss: labels (or one-hot rows), probabilities or reals."""
    if loss_name == "cross_entropy":
        labels = rng.integers(0, n_out, size=batch)
        return jnp.asarray(np.eye(n_out)[labels], dtype) if one_hot else jnp.asarray(labels)
    if loss_name == "binary_cross_entropy":
        return jnp.asarray(rng.uniform(size=(batch, n_out)), dtype)
    return jnp.asarray(rng.normal(size=(batch, n_out)), dtype)


def layers_problem(net, batch, dtype, seed=0, one_hot=False):
    """:func:`problem` for a network of layers: every parameter ~ N(0, 0.5²) (no scale
    of one, no zero bias), inputs ~ N(0, 1) of ``net.input_shape``, targets for its loss."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), dtype), net.param_shapes(dtype))
    x = jnp.asarray(rng.normal(size=(batch, *net.input_shape)), dtype)
    (n_out,) = net.output_shape
    return params, x, _targets(net.loss_name, rng, batch, n_out, dtype, one_hot)


def rel_errors(got, want):
    """Per leaf: max |got - want| / max |want| (max |got - want| where want is all zero)."""
    out = []
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        err, scale = np.max(np.abs(g - w)), np.max(np.abs(w))
        out.append(err / scale if scale > 0 else err)
    return out


def assert_grads_close(got, want, rtol):
    """Same tree structure and shapes, and every leaf within ``rtol`` (see rel_errors)."""
    assert jax.tree.structure(got) == jax.tree.structure(want), (
        f"gradient tree {jax.tree.structure(got)} != expected {jax.tree.structure(want)}"
    )
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape, f"leaf of shape {g.shape} but expected {w.shape}"
    errors = rel_errors(got, want)
    assert all(np.isfinite(errors)) and max(errors) <= rtol, (
        f"relative errors per leaf {['%.2e' % e for e in errors]} exceed rtol {rtol:g}"
    )


def assert_same_dtypes(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == w.dtype, f"leaf of dtype {g.dtype} but expected {w.dtype}"


def to_float64(tree):
    return jax.tree.map(
        lambda a: a.astype(np.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def autodiff_grads(net, params, x, y):
    """The reference: jax.grad of the network's loss, evaluated in float64.

    Float32 autodiff rounds too, and in ill-conditioned leaves (a softmax's bias, whose
    per-example deltas cancel) its error can exceed the manual path's: both are
    measured against the float64 value of the same float32 inputs, so that the test
    judges the manual gradient, not autodiff's rounding. Jitted: one compilation of the
    whole gradient instead of one per operation.
    """
    return jax.jit(jax.grad(net.loss))(*to_float64((params, x, y)))


XOR_X = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]], jnp.float32)
XOR_Y = jnp.array([[0], [1], [1], [0]], jnp.float32)


def order_encoding_step(params, x, y):
    """A ``loss_and_grad`` whose SGD step (lr 1) is ``W <- W / 2 + x``: after an epoch of
    online steps from ``W = 0``, ``W = sum_k x_k / 2^(n-1-k)`` records the epoch's order."""
    (layer,) = params
    return jnp.sum(layer.W), (jbp.Layer(W=0.5 * layer.W - x, b=jnp.zeros_like(layer.b)),)


ORDER_NET = jbp.MLP((2, 1), loss="mse")


def idx_bytes(a: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes: magic number (0, 0, type, ndim), big-endian dimensions, data."""
    return bytes([0, 0, type_code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(">u1").tobytes()
