"""Hyperparameter sweeps: many trainings in one compiled call, by ``jax.vmap`` of :func:`fit`.

``fit`` is a pure function, so ``jax.vmap`` runs K trainings as one program: an ensemble
over initialisations is ``jax.vmap(lambda k: jbp.fit(net, net.init(k), x, y, ...,
key=k)[0])(keys)``. :func:`sweep` does the same over optimizer hyperparameters. A
hyperparameter of an optax optimizer is normally a constant closed over by the
optimizer; ``optax.inject_hyperparams`` moves it into the optimizer's state, an array
that ``vmap`` can batch, so every member runs the same compiled code with its own value.

Under ``vmap``, ``fit``'s ``while_loop`` over epochs runs until every member has
stopped (at ``tol``, on divergence, or after ``epochs``); members that stopped earlier
stay frozen, so each member's result is the one its own ``fit`` would give.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.model import base
from jbp.model.base import Network
from jbp.layers.params import Params
from jbp.model.rules import Rule
from jbp.training import monitor as monitoring
from jbp.training.fit import History, fit

Array = jax.Array


def sweep(
    net: Network,
    params: Params,
    x: Array,
    y: Array,
    *,
    optimizer: Callable[..., optax.GradientTransformation],
    hyperparams: Mapping[str, Any],
    epochs: int,
    batch_size: Optional[int] = None,
    key: Optional[Array] = None,
    tol: Optional[float] = None,
    rule: Optional[Rule] = None,
    feedback: Optional[tuple] = None,
    monitor: bool = False,
) -> tuple[Params, History]:
    """Trains one copy of ``params`` per hyperparameter setting, all in one compiled call.

    Example, eight learning rates of Adam::

        params, history = jbp.sweep(net, params, x, y, optimizer=optax.adam,
                                    hyperparams={"learning_rate": jnp.logspace(-4, -1, 8)},
                                    epochs=100, batch_size=32, key=key)
        best = jnp.argmin(jnp.nanmin(history.loss, axis=1))  # lowest epoch loss of each member

    Every member starts from the same ``params`` and sees the same mini-batches (the same
    ``key``): only the hyperparameters differ. Member ``k`` equals
    ``fit(net, params, x, y, optimizer=optimizer(**{name: values[k]}), ...)``.

    Args:
      net: the network.
      params: initial parameters, shared by all members.
      x: inputs ``(n, sizes[0])``.
      y: targets for ``net``'s loss.
      optimizer: an optax optimizer *factory* such as ``optax.sgd`` or ``optax.adam``
        (use ``functools.partial`` to fix other arguments, and reuse the same object to
        avoid recompiling).
      hyperparams: ``{argument name: K values}``, e.g. ``{"learning_rate": lrs}``;
        several names sweep them together (member ``k`` takes value ``k`` of each).
      epochs, batch_size, key, tol, rule, feedback, monitor: as for :func:`jbp.fit`;
        every member trains with the same rule and feedback weights.

    Returns:
      ``(params, history)`` as :func:`jbp.fit`'s, each leaf with a leading axis of size K.
    """
    base.network(net)
    x, y = base.inputs_and_targets(net, params, x, y)
    _validate.finite("x", x)
    _validate.finite("y", y)
    names, values = _check_hyperparams(optimizer, hyperparams)
    rule, feedback, monitor = monitoring.fit_args(net, params, rule, feedback, monitor, None, None)
    tol = jnp.asarray(-jnp.inf if tol is None else tol, dtype=x.dtype)
    return _sweep(net, optimizer, names, epochs, batch_size, rule, monitor, params, x, y, key, tol, values,
                  feedback)


def _check_hyperparams(optimizer, hyperparams) -> tuple[tuple, tuple]:
    if not callable(optimizer) or hasattr(optimizer, "update"):
        raise TypeError(
            "optimizer must be an optax optimizer factory such as optax.adam (not an optimizer "
            f"such as optax.adam(1e-3)), got {optimizer!r}"
        )
    if not isinstance(hyperparams, Mapping) or not hyperparams:
        raise TypeError(
            "hyperparams must be a non-empty dict of {name: values}, e.g. "
            f"{{'learning_rate': jnp.array([1e-3, 1e-2])}}, got {hyperparams!r}"
        )
    accepted = inspect.signature(optimizer).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
    names = tuple(sorted(hyperparams))
    values = tuple(jnp.asarray(hyperparams[name]) for name in names)
    for name, v in zip(names, values):
        if name not in accepted and not takes_any:
            raise ValueError(
                f"hyperparams has {name!r} but {getattr(optimizer, '__name__', optimizer)} takes "
                f"no such argument; it takes {', '.join(accepted)}"
            )
        if v.ndim != 1 or v.shape[0] == 0:
            raise ValueError(
                f"hyperparams[{name!r}] must be a 1-D array of values, one per member, "
                f"got shape {tuple(v.shape)}"
            )
    sizes = {name: v.shape[0] for name, v in zip(names, values)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"hyperparams must all have the same number of values, got {sizes}")
    return names, values


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _sweep(net, optimizer, names, epochs, batch_size, rule, monitor, params, x, y, key, tol, values, feedback):
    # The numeric arguments live in the state; the values given here only shape it.
    injected = optax.inject_hyperparams(optimizer)(**{name: v[0] for name, v in zip(names, values)})

    def train(member_values):
        opt_state = injected.init(params)
        swept = {
            name: v.astype(opt_state.hyperparams[name].dtype)
            for name, v in zip(names, member_values)
        }
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, **swept})
        return fit(net, params, x, y, optimizer=injected, epochs=epochs, batch_size=batch_size,
                   key=key, tol=tol, opt_state=opt_state, rule=rule, feedback=feedback, monitor=monitor)

    return jax.vmap(train)(values)
