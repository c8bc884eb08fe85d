"""What every network is: the base class of :class:`jbp.MLP` and :class:`jbp.Sequential`.

A network is a frozen, hashable description (static under ``jax.jit``, holding no
arrays) whose pure methods take the parameters pytree explicitly:

- ``init(key, dtype=None) -> params``
- ``forward(params, x) -> (output, cache)``, ``predict(params, x) -> output``
- ``loss(params, x, y) -> scalar``, ``accuracy(params, x, y) -> scalar``
- ``output_delta(cache, y) -> dL/dz^(L)``
- ``loss_and_grad(params, x, y) -> (loss, grads)``: the hand-derived gradient.

``forward``, ``loss`` and ``loss_and_grad`` also take ``key=`` and ``train=`` (stochastic
layers such as dropout); training passes ``train=True`` and a fresh key per step.

It imports nothing from jbp, so the argument checks can recognise a network without an
import cycle.
"""

import jax


class Network:
    """Base class of jbp's networks (see the module docstring for the contract)."""

    __slots__ = ()


#: ``net.init_unchecked(key, dtype)`` as one compiled program for all the layers' draws
#: (not one small program per eager operation): a run starts faster, and the values are
#: those of the operations run one by one. Networks' checked ``init`` calls it.
init_compiled = jax.jit(lambda net, key, dtype: net.init_unchecked(key, dtype), static_argnums=(0, 2))
