"""The protocol of an optimizer that reads the backward pass: what the training step hands it.

The seed's backward pass already holds, for every layer, the two operands of BP5: the
layer's input ``x^(l-1)`` (in its forward residuals) and the ``dy`` it received (the
chain's ``dys``, :func:`jbp.layers.chain.backward`). Curvature methods such as K-FAC are
built from exactly these, so jbp hands them over instead of tracing the network again.

**The protocol.** An optimizer is an optax ``GradientTransformation``: ``init(params)``
and ``update(grads, state, params)``. One that also has a true attribute
``reads_backward`` is called by the training step (:func:`jbp.fit`,
:func:`jbp.train_step`, :func:`jbp.fit_stream`, :func:`jbp.make_train_step`) as
``update(grads, state, params, backward=Backward(...))``, where :class:`Backward` holds
the step's forward cache and the ``dys`` of its backward, and can run one more backward
pass from another output delta (:meth:`Backward.rerun`), e.g. from targets sampled from
the model (:meth:`Backward.sampled_dys`): no second forward pass, no trace of the network.
It also holds the batch and the step's loss, and evaluates the loss at other parameters on
the same batch (:meth:`Backward.loss_at`, one forward pass), which an optimizer that adapts
its damping to the loss's actual change needs.
:func:`jbp.kfac` is built on this protocol alone; ``docs/kfac.md`` shows a user's own
optimizer that uses it.

The step can hand it only when it runs its own backward pass: not with ``loss_and_grad``
(autodiff), a learning rule other than backprop, a mesh or DP-SGD. There it calls
``update`` without ``backward``, and the optimizer says so (:func:`missing`).

**Sampled targets.** Each loss is, per example, ``c`` times the negative log-likelihood
of a distribution over the targets given the output; the Fisher of that distribution is
what K-FAC approximates:

==========================  ================================  ===============================
loss                        targets drawn given the output     ``c``
==========================  ================================  ===============================
``mse`` (``½‖ŷ − y‖²``)     ``y = ŷ + ε``, ``ε ~ N(0, I)``       1
``cross_entropy``           ``y ~ Categorical(softmax(z))``     1
``binary_cross_entropy``    ``y_j ~ Bernoulli(sigmoid(z_j))``   ``1/m`` (its mean over outputs)
==========================  ================================  ===============================
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax

from jbp.layers import chain
from jbp.model import base

Array = jax.Array


def sample_targets(loss_name: str, z: Array, out: Array, key: Array) -> Array:
    """Targets drawn from the model's own predictive distribution (the module's table),
    in ``out``'s shape and dtype.

    Args:
      loss_name: the network's loss.
      z, out: the output layer's pre-activations and activations, ``(B, m)``.
      key: a PRNG key.
    """
    if loss_name == "cross_entropy":
        return jax.nn.one_hot(jax.random.categorical(key, z, axis=-1), z.shape[-1], dtype=out.dtype)
    if loss_name == "binary_cross_entropy":
        return jax.random.bernoulli(key, out).astype(out.dtype)
    if loss_name == "mse":
        return out + jax.random.normal(key, out.shape, out.dtype)
    raise ValueError(f"the sampled Fisher needs a loss of mse, cross_entropy or binary_cross_entropy, "
                     f"got loss {loss_name!r}; use fisher='empirical'")


def nll_scale(loss_name: str, n_outputs: int, positions: int = 1) -> float:
    """``c``: example ``i``'s loss is ``c`` times its negative log-likelihood (module table).
    An output of ``positions`` positions (a sequence's ``(B, T, m)``: ``T``) divides the
    cross-entropies by them too, as their means run over every position (padding aside)."""
    if loss_name == "binary_cross_entropy":
        return 1.0 / (n_outputs * positions)
    return 1.0 / positions if loss_name == "cross_entropy" else 1.0


@dataclasses.dataclass(frozen=True)
class Backward:
    """What the training step hands an optimizer that reads the backward pass.

    Attributes:
      net: the network (its ``layers`` and ``loss_name``).
      params: the parameters the step ran with, one entry per layer.
      cache: the forward pass's cache: ``residuals`` (one entry per layer), ``z`` and
        ``out`` at the output.
      dys: the ``dy`` each layer received in the step's backward pass, from the data's
        targets, one entry per layer. The loss is a mean, so row ``i`` of each is
        ``c / B`` times example ``i``'s own log-likelihood gradient (:attr:`scale`).
      x, y: the batch (checked inputs and targets); ``None`` where not given.
      loss: the batch's mean loss at :attr:`params`; ``None`` where not given.
      key, train: the forward pass's PRNG key and mode (dropout), which :meth:`loss_at`
        reuses.
    """

    net: Any
    params: tuple
    cache: Any
    dys: tuple
    x: Any = None
    y: Any = None
    loss: Any = None
    key: Any = None
    train: bool = False

    @property
    def layers(self) -> tuple:
        return self.net.layers

    @property
    def residuals(self) -> tuple:
        return self.cache.residuals

    @property
    def batch(self) -> int:
        return self.cache.z.shape[0]

    @property
    def scale(self) -> float:
        """``B / c``: ``(B / c) Σ_i dy_i dy_iᵀ`` is ``c`` times the average of the
        per-example log-likelihood gradients' outer products, the curvature of the mean
        loss (``c`` from :func:`nll_scale`)."""
        z = self.cache.z
        return self.batch / nll_scale(self.net.loss_name, z.shape[-1], math.prod(z.shape[1:-1]))

    @classmethod
    def of(cls, net, params: tuple, x: Array, y: Array) -> "Backward":
        """The :class:`Backward` of one forward and backward pass of ``net`` on ``(x, y)``
        in evaluation mode, as the training step would hand it (to inspect the factors)."""
        x, y = base.inputs_and_targets(net, params, x, y)
        _, cache = net.forward_unchecked(params, x)
        dys = chain.backward(net.layers, params, cache.residuals, net.output_delta_unchecked(cache, y))[2]
        return cls(net, params, cache, dys, x, y, net.loss_value(cache, y))

    def loss_at(self, params: tuple) -> Array:
        """The mean loss of the same batch at other ``params`` (BP1-BP2 forward, with the
        step's key and mode): one more forward pass."""
        if self.x is None or self.y is None:
            raise ValueError("Backward.loss_at needs the batch: this Backward was made without x and y")
        return self.net.loss_value(self.net.forward_unchecked(params, self.x, self.key, self.train)[1], self.y)

    def subset(self, n: int) -> "Backward":
        """The same pass restricted to the batch's first ``n`` rows, as if the batch had
        been those rows: the cache, ``x`` and ``y`` sliced, each ``dy`` rescaled by
        ``B / n`` (a mean over ``n`` rows in place of ``B``); :attr:`loss` is dropped.
        Every leaf of the forward cache must carry the batch axis first, as the
        built-in layers' residuals do. ``n >= B`` returns this pass itself."""
        if n >= self.batch:
            return self
        rows = lambda tree: jax.tree.map(lambda a: a[:n], tree)
        dys = jax.tree.map(lambda d: d[:n] * (self.batch / n), self.dys)
        return dataclasses.replace(self, cache=rows(self.cache), dys=dys, x=rows(self.x), y=rows(self.y), loss=None)

    def rerun(self, delta_out: Array) -> tuple:
        """The ``dys`` of one more backward pass (the one loop, :mod:`jbp.layers.chain`)
        from the output delta ``delta_out`` ``(B, m)``, on the step's forward residuals."""
        return chain.backward(self.layers, self.params, self.residuals, delta_out)[2]

    def sampled_dys(self, key: Array) -> tuple:
        """The ``dys`` of a backward pass from targets drawn from the model's predictive
        distribution (:func:`sample_targets`): the true Fisher's, one extra backward."""
        y = sample_targets(self.net.loss_name, self.cache.z, self.cache.out, key)
        return self.rerun(self.net.output_delta_unchecked(self.cache, y))


def reads_backward(optimizer) -> bool:
    """Whether ``optimizer`` asks the training step for :class:`Backward`."""
    return bool(getattr(optimizer, "reads_backward", False))


def step_args(optimizer, net, params: tuple, p, backprop: bool, x=None, y=None, key=None) -> dict:
    """The keyword arguments the training step adds to ``optimizer.update``:
    ``{"backward": Backward(...)}`` for an optimizer that reads the backward pass and a
    step that ran its own (``p`` its :class:`jbp.model.rules.Pass`, ``None`` with
    ``loss_and_grad``; ``backprop`` whether the rule is backprop; ``x``, ``y``, ``key``
    the step's batch and key, in training mode), else ``{}``."""
    if not reads_backward(optimizer) or p is None or not backprop:
        return {}
    return {"backward": Backward(net, params, p.cache, p.dys, x, y, p.loss, key, True)}


def missing(name: str) -> ValueError:
    """The error of an optimizer that reads the backward pass, called without it."""
    return ValueError(
        f"{name} reads the training step's backward pass (each layer's input and delta) and was "
        "called without it; train with jbp.fit, jbp.train_step, jbp.make_train_step or "
        "jbp.fit_stream, without loss_and_grad, a learning rule other than backprop, a mesh or privacy"
    )

