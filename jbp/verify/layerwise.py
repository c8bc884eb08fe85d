"""Per-layer localisation for a network of layers (:class:`jbp.Sequential`).

:func:`jbp.check_grads` compares the whole gradient first; then, to say *where* a
wrong gradient comes from, it checks each layer's ``backward`` on its own, fed
autodiff's exact inputs so that an error upstream cannot leak into it: the forward
pass runs in float64, ``dy`` for layer ``i`` is ``jax.grad`` of the loss with respect
to a zero offset added to that layer's output, and the layer's ``(dparams, dx)`` are
compared with autodiff's ``dL/dparams[i]`` and ``dL/d(its input)`` (the offset's
gradient one layer down, or ``dL/dx^(0)``). The output delta is checked the same way.
The first leaf that fails, from the output down, is the first wrong layer's: its
index and leaf are named (within a layer its leaves are taken last first, so that in a
composite layer, a :class:`jbp.layers.Residual`, the inner layer nearest the output
whose gradient is wrong is named, not the ones below it that receive its error), and for jbp's dense and activation layers the seed's
equation (``dW``: BP5, ``db``: BP6, ``dx``: BP3; an activation's ``dx``: BP4).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jbp.layers.activations import get_activation
from jbp.model.losses import get_loss
from jbp.verify.oracles import cast, fed_verdict, host_cast, unit_roundoff
from jbp.verify.report import jsonable


@dataclasses.dataclass(frozen=True)
class LayerCheck:
    """One leaf of one layer's backward (or the output delta), fed autodiff's exact inputs.

    Attributes:
      layer: the index in ``net.layers`` (``None`` for the output delta).
      layer_type: the layer's class name (``"Dense"``), or ``"output"``.
      leaf: ``"params[i].W"`` (a ``dparams`` leaf, as the gradient names it), ``"dx"``
        (the gradient w.r.t. the layer's input) or ``"delta"`` (the output delta).
      equation: the seed's equation this leaf is, for jbp's dense and activation layers
        (``"BP3"`` ... ``"BP6"``), ``"output delta"``, or ``None``.
      formula: what it computes.
      rel_err, rel_err_lo, tol, verdict: as :class:`jbp.verify.grads.EquationCheck`.
    """

    layer: Optional[int]
    layer_type: str
    leaf: str
    equation: Optional[str]
    formula: str
    rel_err: float
    rel_err_lo: float
    tol: float
    verdict: str

    def __str__(self) -> str:
        if self.layer is None:
            return f"output delta: {self.formula}"
        eq = f", {self.equation}: {self.formula}" if self.equation else f": {self.formula}"
        return f"layers[{self.layer}] ({self.layer_type}), {self.leaf}{eq}"

    def to_dict(self) -> dict:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _seed_equation(layer, leaf: str, i: int) -> tuple[Optional[str], str]:
    """``(equation, formula)`` of a leaf of layer ``i``'s backward (a layer that ``wraps``
    another, such as a planted mistake, has the equations of the one it wraps)."""
    layer = getattr(layer, "wraps", layer)
    builtin = type(layer).__module__.startswith("jbp.layers")  # jbp's own carry the seed's equations
    kind = type(layer).__name__ if builtin else None
    if kind == "Dense":
        if leaf.endswith(".W"):
            return "BP5", f"dW = delta.T @ x, delta = dL/d(output of layers[{i}])"
        if leaf.endswith(".b"):
            return "BP6", "db = sum over the batch of delta"
        return "BP3", "dL/dx = delta @ W"
    if kind == "ActivationLayer" and leaf == "dx":
        return "BP4", f"dL/dx = dL/dy * f'(x), f = {layer.name}"
    if leaf == "dx":
        return None, f"dL/d(input of layers[{i}]) from its backward"
    return None, f"dL/d{leaf} from the layer's backward"


def _references(net, params, x, y, key, train):
    """The float64 forward cache and autodiff's ``dL/dparams``, ``dL/d(output of each
    layer)`` and ``dL/dx^(0)``: ``jax.grad`` w.r.t. zero offsets on every layer's output."""
    keys = net.layer_keys(key)
    activation, loss = get_activation(net.output_activation), get_loss(net.loss_name)

    def loss_with_offsets(params, offsets, x):
        h = x
        for layer, p, o, k in zip(net.layers, params, offsets, keys):
            h = layer.forward(p, h, key=k, train=train)[0] + o
        return loss.value(h, activation.f(h), y)

    _, cache = net.forward_unchecked(params, x, key, train)
    dtype = next(iter(jax.tree.leaves(params)), x).dtype  # x may be integer ids
    offsets = tuple(jnp.zeros((x.shape[0], *s), dtype) for s in net.output_shapes)
    if _integer(x):  # token ids: no dL/dx^(0)
        return (cache, *jax.grad(loss_with_offsets, argnums=(0, 1))(params, offsets, x), None)
    return (cache, *jax.grad(loss_with_offsets, argnums=(0, 1, 2))(params, offsets, x))


def _integer(x) -> bool:
    """Whether the network's input is integer ids, which have no gradient (no ``dx`` check
    for the first layer)."""
    return not jnp.issubdtype(x.dtype, jnp.floating)


def _outputs(net, params, y, references, lo):
    """Per check, ``(output in float64, output from inputs rounded to lo, autodiff's)``,
    from the output down: the output delta, then each layer's dparams leaves and dx."""
    cache, grads, dys, dx0 = references
    out = [(net.output_delta_unchecked(cache, y),
            net.output_delta_unchecked(cast(cache, lo), y), dys[-1])]
    for i in range(net.n_layers - 1, -1, -1):
        layer = net.layers[i]
        inputs = (params[i], cache.residuals[i], dys[i])
        dp, dx = layer.backward(*inputs)
        dp_lo, dx_lo = layer.backward(*cast(inputs, lo))
        leaves = zip(jax.tree.leaves(dp), jax.tree.leaves(dp_lo), jax.tree.leaves(grads[i]))
        out += reversed(list(leaves))  # last leaf first: from the output down inside a layer
        if i or dx0 is not None:
            out.append((dx, dx_lo, dys[i - 1] if i else dx0))
    return out


_references_jit = jax.jit(_references, static_argnums=(0, 5))
_outputs_jit = jax.jit(_outputs, static_argnums=(0, 4))


def _check_list(net, params, integer_input: bool) -> list:
    """``(layer, layer_type, leaf, equation, formula)`` in the order of :func:`_outputs`."""
    out = [(None, "output", "delta", "output delta",
            f"delta = dL/dz^(L) of the {net.loss_name} loss")]
    for i in range(net.n_layers - 1, -1, -1):
        layer = net.layers[i]
        paths = [jax.tree_util.keystr(p) for p, _ in reversed(jax.tree_util.tree_flatten_with_path(params[i])[0])]
        for leaf in [f"params[{i}]{p}" for p in paths] + ["dx"] * (i > 0 or not integer_input):
            kind = type(layer).__name__
            if hasattr(layer, "wraps"):
                kind = f"{kind}({type(layer.wraps).__name__})"
            out.append((i, kind, leaf, *_seed_equation(layer, leaf, i)))
    return out


def layer_checks(net, params, x, y, key, train: bool, dtype) -> tuple:
    """Every layer's backward and the output delta, each fed autodiff's exact inputs
    (float64); one :class:`LayerCheck` per leaf, from the output down."""
    lo = np.dtype(np.float32) if dtype == np.float64 else np.dtype(dtype)
    u_lo = unit_roundoff(lo)
    with jax.enable_x64(True):
        params64, x64, y64 = host_cast((params, x, y), np.float64)
        references = _references_jit(net, params64, x64, y64, key, train)
        outputs = jax.device_get(_outputs_jit(net, params64, y64, references, lo))
    return tuple(
        LayerCheck(*names, *fed_verdict(got, got_lo, reference, np.size(reference), u_lo))
        for names, (got, got_lo, reference) in zip(_check_list(net, params, _integer(x)), outputs)
    )


def layer_table(checks) -> tuple:
    """``(head, rows)`` of the per-layer view."""
    head = ("layer", "type", "leaf", "equation", "rel err", "verdict")
    rows = [
        ("output" if c.layer is None else str(c.layer), c.layer_type, c.leaf, c.equation or "-",
         f"{c.rel_err:.1e}", c.verdict)
        for c in checks
    ]
    return head, rows
