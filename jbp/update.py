"""The gradient-descent update (BP7) and one whole training step.

BP7 is :func:`gradient_descent`. :func:`train_step` is one iteration of the seed's
algorithm with any optax optimizer in place of BP7; with ``optax.sgd(lr)`` it is
exactly BP7.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.params import Params

Array = jax.Array


def gradient_descent(params: Params, grads: Params, lr: float) -> Params:
    """BP7: ``w ← w − α dL/dw`` and ``b ← b − α dL/db`` for every layer.

    Args:
      params: the parameters.
      grads: gradients with the structure of ``params``.
      lr: the learning rate ``α``.

    Returns:
      Updated parameters, with the structure, shapes and dtypes of ``params``.
    """
    _validate.same_tree("grads", grads, "params", params)
    _validate.real("lr", lr, finite=True)
    # lr in each leaf's dtype: a float32 lr must not turn bfloat16 params into float32.
    return jax.tree.map(lambda w, dw: w - jnp.asarray(lr, w.dtype) * dw, params, grads)


def train_step(
    net,
    optimizer: optax.GradientTransformation,
    params: Params,
    opt_state: Any,
    x: Array,
    y: Array,
    loss_and_grad: Optional[Callable] = None,
) -> tuple[Params, Any, Array]:
    """One iteration: forward pass, hand-derived backward pass, optimizer update.

    Pure; ``jax.jit`` it with ``net`` and ``optimizer`` static, e.g.
    ``jax.jit(train_step, static_argnums=(0, 1))``.

    Args:
      loss_and_grad: ``(params, x, y) -> (loss, grads)`` in place of the hand-derived
        ``net.loss_and_grad``, e.g. ``jax.value_and_grad(net.loss)`` to train the same
        network with autodiff for comparison.

    Returns:
      ``(params, opt_state, loss)``, ``loss`` being the loss before the update.
    """
    _validate.train_step_args(net, optimizer, params, opt_state, loss_and_grad)
    loss, grads = (loss_and_grad or net.loss_and_grad)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
