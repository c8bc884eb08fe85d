"""A bridge to JAX's autodiff: the network's loss as a function that ``jax.grad`` can
differentiate, through the hand-derived backward pass.

:func:`custom_vjp_loss` wraps ``net``'s loss in ``jax.custom_vjp``. Its forward rule is
the forward pass (BP1, BP2) and the loss; its backward rule is jbp's backward pass
(BP3-BP6, the one loop of :mod:`jbp.layers.chain`) started from the output delta times
the incoming cotangent, down to the first layer's ``dx``, the gradient w.r.t. the inputs
(for an MLP ``dL/dx^(0) = delta^(1) @ W^(1)``, BP3 at the first layer).
JAX's autodiff only chains this rule into the surrounding code; it never transposes the
network's own operations. This is the one module besides :mod:`jbp.verify.grads` that uses
JAX's differentiation API, and it does so only to register the hand-derived rule.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax

from jbp import _validate
from jbp.model import base
from jbp.layers.params import Params

Array = jax.Array


def custom_vjp_loss(net) -> Callable[[Params, Array, Array], Array]:
    """``f(params, x, y) -> loss`` whose reverse-mode derivative is the hand-derived one.

    JAX's reverse mode (``grad(f)``, ``value_and_grad``, ``vjp``) and anything built on it
    (a jbp network inside a larger model, optax, outer optimisation loops) differentiate
    ``f`` w.r.t. ``params`` and ``x`` by jbp's backward pass. ``f`` works under ``jit``,
    ``vmap`` and ``lax.scan``. The targets ``y`` are constants: differentiating w.r.t.
    them raises ``ValueError`` (wrap them in ``jax.lax.stop_gradient`` if they come from
    differentiated code). Forward mode (JAX's ``jvp``, ``jacfwd``) is not defined for a
    ``custom_vjp`` function and raises JAX's ``TypeError``; use ``jacrev``.

    The backward rule is the chain of the layers' backward methods from the output
    delta (evaluation mode: dropout off), and the gradient w.r.t. ``x`` is the first
    layer's ``dx``.

    Args:
      net: the network (:class:`jbp.MLP` or :class:`jbp.Sequential`).

    Returns:
      ``f(params, x, y)``: the scalar loss, as :meth:`jbp.MLP.loss`.
    """
    base.network(net)

    def f(params: Params, x: Array, y: Array) -> Array:
        x, y = base.inputs_and_targets(net, params, x, y)
        return _loss(net, tuple(params), x, y)

    return f


def _no_targets_gradient(y) -> None:
    # With symbolic_zeros, each argument arrives wrapped, saying whether it is perturbed.
    if y.perturbed:
        raise ValueError(
            "custom_vjp_loss differentiates the loss w.r.t. params and x, not the targets y; "
            "pass y as a constant (jax.lax.stop_gradient(y) if it comes from differentiated code)"
        )


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _loss(net, params, x, y):
    _, cache = net.forward_unchecked(params, x)  # BP1, BP2
    return net.loss_value(cache, y)


def _loss_fwd(net, params, x, y):
    _no_targets_gradient(y)
    params, x, y = jax.tree.map(lambda a: a.value, (params, x, y))
    _, cache = net.forward_unchecked(params, x)
    return net.loss_value(cache, y), (params, cache, y)


def _loss_bwd(net, residuals, g):
    params, cache, y = residuals
    # The chain rule starts at the output delta, scaled by the cotangent of the loss.
    grads, dx = net.backward_unchecked(params, cache, g * net.output_delta_unchecked(cache, y))  # BP3-BP6
    return grads, dx, None


_loss.defvjp(_loss_fwd, _loss_bwd, symbolic_zeros=True)
