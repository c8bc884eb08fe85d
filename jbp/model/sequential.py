"""The network of layers :class:`Sequential` and its pure methods.

A layer (see :mod:`jbp.layers`) is a frozen, hashable description with three pure
methods: ``init(key, input_shape, dtype) -> (params, output_shape)``,
``forward(params, x, *, key=None, train=False) -> (y, residuals)`` and the hand-derived
``backward(params, residuals, dy) -> (dparams, dx)``. A ``Sequential`` chains them: the
layers produce the output layer's pre-activations ``z^(L)``, the loss's output
activation turns them into ``x^(L)``, and the backward pass is the seed's chain rule
layer by layer: it starts from the output delta ``dL/dz^(L)`` of :mod:`jbp.model.losses`
(the fused ``p − y`` for the softmax and sigmoid heads) and hands each layer's ``dx``
to the layer below as its ``dy``. No autodiff.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jbp import _validate
from jbp.layers.activations import get_activation
from jbp.layers import as_layer, chain
from jbp.model import base
from jbp.model.base import Network, init_compiled
from jbp.layers.initializers import INITIALIZERS
from jbp.model.losses import IGNORE, get_loss, output_head

Array = jax.Array


@functools.lru_cache(maxsize=None)
def _jitted(method: Callable, static: tuple) -> Callable:
    return jax.jit(method, static_argnums=(0, *static))


def compiled(method: Callable, net, *args, static: tuple = ()):
    """``method(net, *args)`` as one XLA program per network and argument shapes, as
    ``jax.jit`` compiles it, rather than one program per operation: the public methods
    check their arguments here, in Python, then run the pass compiled. The network and
    the arguments at the positions ``static`` (counting ``net`` as 0) are static; a
    network that cannot be hashed (a user's layer that is not frozen) runs op by op, as
    everything does under ``jax.disable_jit()``, the way to step through a pass."""
    try:
        hash((net, *(args[i - 1] for i in static)))
    except TypeError:
        return method(net, *args)
    return _jitted(method, static)(net, *args)


class SequentialCache(NamedTuple):
    """What :meth:`Sequential.forward` keeps for the backward pass.

    Attributes:
      residuals: one entry per layer, what its ``forward`` returned for its ``backward``.
      z: the output layer's pre-activations ``z^(L)``, ``(batch, n_L)`` (the last layer's output).
      out: the network's output ``x^(L) = f(z^(L))``, ``(batch, n_L)``.
      outputs: every layer's output, one entry per layer (what the monitor reads; under
        ``jit`` what nothing reads costs nothing).
      state: after a forward from a ``state``, the state after the window, one entry per
        layer (``None`` for a layer without one; see :meth:`Sequential.init_state`);
        ``None`` for a forward without a state.
    """

    residuals: tuple
    z: Array
    out: Array
    outputs: tuple = ()
    state: Any = None


def _with_init(layer, init: Optional[str]):
    """``layer`` with its weight init scheme set to ``init``, when it has one (a field
    ``init_name``, as :class:`jbp.layers.Dense`, or ``init``)."""
    if init is None or not dataclasses.is_dataclass(layer):
        return layer
    names = {f.name for f in dataclasses.fields(layer)}
    field = next((n for n in ("init_name", "init") if n in names), None)
    if field is None:
        return layer
    layer = copy.copy(layer)  # a frozen dataclass: set the one field on a copy
    object.__setattr__(layer, field, init)
    return layer


def _output_shapes(layers: tuple, input_shape: tuple) -> tuple:
    """Each layer's output shape (without the batch axis), by tracing the inits."""
    shapes = []

    def init_all(key):
        shape = input_shape
        for i, layer in enumerate(layers):
            _, shape = layer.init(jax.random.fold_in(key, i), shape, jnp.float32)
            shapes.append(tuple(int(n) for n in shape))

    jax.eval_shape(init_all, jax.random.key(0))
    return tuple(shapes)


@dataclasses.dataclass(frozen=True, init=False)
class Sequential(Network):
    """A network of layers trained by hand-derived backpropagation.

    Example::

      net = jbp.Sequential((8, 8, 1), [Conv2D(16, (3, 3)), "relu", MaxPool2D((2, 2)),
                                       Flatten(), Dense(10)], loss="cross_entropy")
      params = net.init(jax.random.key(0))        # a tuple, one entry per layer
      loss, grads = net.loss_and_grad(params, x, y, key=key, train=True)

    Args:
      input_shape: one example's shape, without the batch axis: ``(n_0,)`` for vectors,
        ``(length, channels)`` or ``(height, width, channels)`` for signals and images.
      layers: the layers, first to last (see :mod:`jbp.layers`); a string is an
        activation layer (``"relu"``). They produce the output layer's
        pre-activations ``z^(L)``, one vector ``(n_L,)`` per example; or, for a network
        of tokens (first layer :class:`jbp.layers.Embedding`, ``input_shape=(T,)``) with
        the cross-entropy loss, one ``(T, n_L)`` per example, labels ``(batch, T)``.
      loss: ``"mse"``, ``"cross_entropy"`` or ``"binary_cross_entropy"``, as for
        :class:`jbp.MLP`. Stored as :attr:`loss_name`.
      output_activation: applied to ``z^(L)``; by default the loss's natural one, as for
        :class:`jbp.MLP` (the softmax and sigmoid heads keep their fused output delta).
      init: a weight init scheme (see :mod:`jbp.layers.initializers`) given to every
        layer that has an ``init`` field (``Dense``, the convolutions); ``None`` keeps
        each layer's own. Stored as :attr:`init_name`.

    Attributes:
      input_shape: one example's shape, without the batch axis.
      layers: a tuple of layers.
      output_activation: the output activation's name.
      loss_name: the loss's name (the constructor's ``loss``).
      init_name: the init scheme's name (the constructor's ``init``), or ``None``.
      output_shapes: each layer's output shape, without the batch axis.
    """

    input_shape: tuple
    layers: tuple
    output_activation: str
    loss_name: str
    init_name: Optional[str]
    output_shapes: tuple = dataclasses.field(repr=False, compare=False)

    #: How errors name the output's width.
    output_name = "output_shape"

    def __init__(
        self,
        input_shape: Sequence[int],
        layers: Sequence[Any],
        loss: str = "mse",
        output_activation: Optional[str] = None,
        init: Optional[str] = None,
    ):
        input_shape = _validate.shape("input_shape", input_shape)
        if isinstance(layers, (str, bytes)) or not isinstance(layers, (tuple, list)):
            raise TypeError(
                f"layers must be a list of layers (or activation names), got "
                f"{_validate.describe(layers)}"
            )
        if not layers:
            raise ValueError("layers is empty; a Sequential needs at least one layer")
        if init is not None:
            _validate.name("init", init, tuple(INITIALIZERS))
        # a name is an activation layer; anything else must follow the layer protocol
        layers = tuple(
            _with_init(as_layer(layer, f"layers[{i}]"), init) for i, layer in enumerate(layers)
        )
        try:
            shapes = _output_shapes(layers, input_shape)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"layers do not fit input_shape={input_shape}: {e}"
            ) from None
        tokens_out = getattr(layers[0], "input_vocab", None) is not None and loss == "cross_entropy"
        if len(shapes[-1]) != 1 and not (tokens_out and len(shapes[-1]) == 2):
            raise ValueError(
                f"the last layer must give one vector per example, (n_L,), but "
                f"layers[{len(layers) - 1}] gives {shapes[-1]}; end with Flatten() and Dense(n)"
            )
        output_activation = output_head(loss, output_activation, shapes[-1][0], "the last layer's outputs")
        object.__setattr__(self, "input_shape", input_shape)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "output_activation", output_activation)
        object.__setattr__(self, "loss_name", loss)
        object.__setattr__(self, "init_name", init)
        object.__setattr__(self, "output_shapes", shapes)

    @property
    def output_shape(self) -> tuple:
        """``(n_L,)``: one example's output."""
        return self.output_shapes[-1]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def stochastic(self) -> bool:
        """Whether a layer draws from its key in training mode (dropout): training then
        passes a fresh key per step. A layer that does not say (no ``stochastic``
        attribute) is assumed to."""
        return any(getattr(layer, "stochastic", True) for layer in self.layers)

    @property
    def input_vocab(self):
        """The number of token ids when the first layer takes integer ids
        (:class:`jbp.layers.Embedding`): ``x`` is then ``(batch, T)`` integer and the
        output ``(batch, T, vocab)``; ``None`` for floating inputs."""
        return getattr(self.layers[0], "input_vocab", None)

    @property
    def fused_head(self):
        """The last layer when it computes the cross-entropy itself from its input
        (``fused_loss``/``fused_loss_backward``, as :class:`jbp.layers.FusedLMHead`):
        ``loss`` and ``loss_and_grad`` then never form the logits. Else ``None``."""
        head = self.layers[-1]
        fused = callable(getattr(head, "fused_loss", None)) and callable(getattr(head, "fused_loss_backward", None))
        return head if fused and self.loss_name == "cross_entropy" else None

    def param_shapes(self, dtype) -> tuple:
        """``jax.ShapeDtypeStruct`` s of ``init(key, dtype)``, one entry per layer."""
        return _param_shapes(self, jax.dtypes.canonicalize_dtype(dtype))

    def layer_keys(self, key: Optional[Array]) -> tuple:
        """The key each layer's forward gets: ``fold_in(key, i)`` for layer ``i``."""
        return chain.layer_keys(key, self.n_layers)

    def init(self, key: Array, dtype=None) -> tuple:
        """Draws parameters, layer by layer (each layer's ``init``).

        Args:
          key: a PRNG key (``jax.random.key``); layer ``i`` draws from ``fold_in(key, i)``.
          dtype: floating dtype; default float32, or float64 when x64 is enabled.

        Returns:
          A tuple with one entry per layer (``()`` for layers without parameters).
        """
        _validate.prng_key("key", key)
        return init_compiled(self, key, _validate.float_dtype("dtype", dtype))

    def init_unchecked(self, key: Array, dtype) -> tuple:
        params, shape = [], self.input_shape
        for i, layer in enumerate(self.layers):
            p, shape = layer.init(jax.random.fold_in(key, i), shape, dtype)
            params.append(p)
        return tuple(params)

    # --- The forward and backward pass, on checked arguments. -------------------------

    def forward_unchecked(self, params, x, key=None, train=False, state=None) -> tuple[Array, SequentialCache]:
        outputs, residuals = chain.forward(self.layers, params, x, key=key, train=train, state=state)
        out = get_activation(self.output_activation).f(outputs[-1])  # BP2 at the output layer
        return out, SequentialCache(residuals, outputs[-1], out, outputs,
                                    chain.final_state(self.layers, residuals, state))

    def backward_unchecked(self, params, cache: SequentialCache, delta_out: Array) -> tuple:
        """The chain rule from ``delta_out = dL/dz^(L)`` down: ``(grads, dL/dx^(0))``; after
        a forward from a state, the gradient stops at the window's edge."""
        grads, dx, _ = chain.backward(self.layers, params, cache.residuals, delta_out, state=cache.state)
        return grads, dx

    def _fused_forward(self, params, x, y, key, train, state):
        """With a :attr:`fused_head`: the layers below it, then its loss from their output,
        the logits never formed: ``(loss, head_residuals, body_residuals, body_state)``."""
        body, body_state = self.layers[:-1], None if state is None else state[:-1]
        outputs, residuals = chain.forward(body, params[:-1], x, key=key, train=train, state=body_state)
        head_key = chain.layer_keys(key, self.n_layers)[-1]
        h = outputs[-1] if outputs else x
        loss, head_residuals = self.fused_head.fused_loss(params[-1], h, y, key=head_key, train=train)
        return loss, head_residuals, residuals, body_state

    def _fused_loss_and_grad(self, params, x, y, key, train, state):
        """With a :attr:`fused_head`: :meth:`_fused_forward`, the head's gradient from its
        input, then the chain rule down: ``(loss, grads, state after the window)``."""
        loss, head_residuals, residuals, body_state = self._fused_forward(params, x, y, key, train, state)
        d_head, dh = self.fused_head.fused_loss_backward(params[-1], head_residuals)
        body = self.layers[:-1]
        grads, _, _ = chain.backward(body, params[:-1], residuals, dh, state=body_state)
        return loss, (*grads, d_head), _with_head(chain.final_state(body, residuals, body_state))

    def _fused_loss(self, params, x, y, key, train, state):
        """With a :attr:`fused_head`: ``(loss, state after the window)``."""
        loss, _, residuals, body_state = self._fused_forward(params, x, y, key, train, state)
        return loss, _with_head(chain.final_state(self.layers[:-1], residuals, body_state))

    def output_delta_unchecked(self, cache: SequentialCache, y: Array) -> Array:
        return get_loss(self.loss_name).delta(
            get_activation(self.output_activation), cache.z, cache.out, y
        )

    def loss_value(self, cache: SequentialCache, y: Array) -> Array:
        return get_loss(self.loss_name).value(cache.z, cache.out, y)

    # --- The public methods, checked at the boundary. ---------------------------------

    def leaf_names(self, params) -> tuple:
        """The checkpoint's name of each leaf of ``params``, in ``jax.tree.leaves`` order."""
        return tuple(f"params/leaf/{i}" for i in range(len(jax.tree.leaves(params))))

    def description(self, layer_description: Callable[[Any], dict]) -> dict:
        """The JSON-ready description a checkpoint keeps (:mod:`jbp.training.description`),
        each layer written by ``layer_description``."""
        return {
            "kind": "Sequential",
            "input_shape": list(self.input_shape),
            "layers": [layer_description(layer) for layer in self.layers],
            "loss": self.loss_name,
            "output_activation": self.output_activation,
            "init": self.init_name,
        }

    @property
    def stateful(self) -> bool:
        """Whether a layer carries a state from one window of a sequence to the next
        (a recurrent layer: it has ``init_state`` and ``final_state``)."""
        return any(_is_stateful(layer) for layer in self.layers)

    def init_state(self, batch: int, dtype=None) -> tuple:
        """The state ``batch`` streams start from, one entry per layer: each stateful
        layer's ``init_state`` (zeros; ``LSTMState(h, c)`` for an :class:`jbp.layers.LSTM`),
        ``None`` for the others.

        Pass it as ``state=`` to :meth:`forward`, :meth:`loss`, :meth:`loss_and_grad`,
        :func:`jbp.train_step` or :func:`jbp.fit`, which return the state after the
        window: truncated backpropagation through time, where the state crosses from
        one window of a long sequence to the next and the gradient does not.

        Args:
          batch: the number of parallel streams, the batch size of every window.
          dtype: the state's floating dtype (default JAX's default float; the
            parameters' dtype is the natural choice).
        """
        if not self.stateful:
            raise ValueError("init_state needs a network with a stateful layer (LSTM, GRU, RNN); "
                             f"none of {[type(layer).__name__ for layer in self.layers]} is")
        return tuple(layer.init_state(batch, dtype) if _is_stateful(layer) else None for layer in self.layers)

    def check_state(self, state, batch: int, dtype) -> tuple:
        """Checks ``state`` against :meth:`init_state` ``(batch, dtype)``: the same
        structure, shapes and dtype (the parameters'); returns it as a tuple of arrays."""
        want = self.init_state(batch, dtype)
        if not isinstance(state, (tuple, list)) or len(state) != self.n_layers:
            raise ValueError(f"state must have one entry per layer ({self.n_layers}), as net.init_state(batch) "
                             f"gives, got {_validate.describe(state)}")
        state = tuple(state)
        _validate.same_tree("state", state, f"net.init_state({batch}) in the parameters' dtype {dtype}", want)
        return jax.tree.map(jnp.asarray, state)

    def check_key(self, key) -> None:
        """Checks a PRNG key for the stochastic layers (``None``: evaluation mode)."""
        if key is not None:
            _validate.prng_key("key", key)

    def check_params(self, value) -> object:
        """Checks that ``value`` has ``init``'s structure, shapes and dtype; returns the dtype."""
        return layer_params(self, value)

    def check_input_shape(self, x: Array) -> None:
        """Checks ``x`` ``(batch, *input_shape)``."""
        input_shape(self, x)

    def _checked(self, params, x, y=None, key=None, train=False):
        if y is None:
            x = base.inputs(self, params, x)
        else:
            x, y = base.inputs_and_targets(self, params, x, y)
        self.check_key(key)
        _validate.flag("train", train)
        return x, y

    def forward(self, params, x: Array, *, key: Optional[Array] = None,
                train: bool = False, state: Optional[tuple] = None) -> tuple[Array, SequentialCache]:
        """The forward pass: ``(output, cache)``.

        Args:
          params: from :meth:`init`.
          x: ``(batch, *input_shape)``.
          key: PRNG key for stochastic layers in training mode (dropout); layer ``i``
            gets ``fold_in(key, i)``.
          train: training mode (dropout active); default evaluation mode.
          state: the stateful layers' state to start from (:meth:`init_state`, or the
            ``cache.state`` of the previous window); default each window from zeros.

        Returns:
          The output ``x^(L)`` ``(batch, n_L)`` and a :class:`SequentialCache`, whose
          ``state`` is the state after the window when ``state`` was given.
        """
        x, _ = self._checked(params, x, key=key, train=train)
        state = self._checked_state(params, x, state)
        return compiled(type(self).forward_unchecked, self, params, x, key, train, state, static=(4,))

    def _checked_state(self, params, x, state):
        if state is None:
            return None
        return self.check_state(state, x.shape[0], jax.tree.leaves(params)[0].dtype)

    def backward(self, params, cache: SequentialCache, delta_out: Array) -> tuple:
        """The backward pass from the output delta: ``(grads, dL/dx^(0))``.

        Each layer's hand-derived ``backward`` turns ``dL/d(its output)`` into
        ``dL/d(its parameters)`` and ``dL/d(its input)``, the next layer down's ``dy``.

        Args:
          params: the parameters the forward pass ran with.
          cache: the :class:`SequentialCache` of :meth:`forward`.
          delta_out: ``dL/dz^(L)``, ``(batch, n_L)`` (see :meth:`output_delta`).

        Returns:
          ``grads`` with exactly the structure of ``params``, and ``dL/dx^(0)``, the
          gradient w.r.t. the input ``(batch, *input_shape)``.
        """
        base.params(self, params)
        cache = sequential_cache(self, cache)
        _validate.same_tree("delta_out", delta_out, "cache.z", cache.z)
        return compiled(type(self).backward_unchecked, self, params, cache, delta_out)

    def predict(self, params, x: Array) -> Array:
        """The network's output in evaluation mode, ``(batch, n_L)``."""
        return self.forward(params, x)[0]

    def loss(self, params, x: Array, y: Array, *, key: Optional[Array] = None,
             train: bool = False, state: Optional[tuple] = None) -> Array:
        """The loss, a scalar: the mean over the batch (see :mod:`jbp.model.losses`).

        With a ``state`` (see :meth:`forward`) it is ``(loss, state after the window)``,
        the form of a loss with an auxiliary output (``has_aux=True`` in JAX's autodiff)."""
        x, y = self._checked(params, x, y, key, train)
        state = self._checked_state(params, x, state)
        return compiled(type(self).loss_unchecked, self, params, x, y, key, train, state, static=(5,))

    def loss_unchecked(self, params, x, y, key=None, train=False, state=None):
        if self.fused_head is not None:
            loss, state = self._fused_loss(params, x, y, key, train, state)
        else:
            _, cache = self.forward_unchecked(params, x, key, train, state)
            loss, state = self.loss_value(cache, y), cache.state
        return loss if state is None else (loss, state)

    def output_delta(self, cache: SequentialCache, y: Array) -> Array:
        """``dL/dz^(L)``, the output delta that starts the backward pass."""
        cache = sequential_cache(self, cache)
        y = base.targets(self, y, cache.z.shape[0], cache.z.dtype,
                              like=("the cache (cache.z)", "the cache's arrays"))
        return self.output_delta_unchecked(cache, y)

    def loss_and_grad(self, params, x: Array, y: Array, *, key: Optional[Array] = None,
                      train: bool = False, state: Optional[tuple] = None) -> tuple[Array, tuple]:
        """The loss and its hand-derived gradient (no autodiff).

        ``train=True`` with a ``key`` is the training step's loss (dropout active, its
        masks drawn from ``key``); :func:`jbp.fit` passes a fresh key per step.

        ``state`` (see :meth:`init_state`) starts the stateful layers from it: truncated
        BPTT, the gradient of this window only (none flows into ``state``).

        Returns:
          ``(loss, grads)``; ``grads`` has exactly the structure, shapes and dtypes of
          ``params``. With a ``state``, ``((loss, state after the window), grads)``, the
          form JAX's autodiff gives for a loss with an auxiliary output.
        """
        x, y = self._checked(params, x, y, key, train)
        state = self._checked_state(params, x, state)
        return compiled(type(self).loss_and_grad_unchecked, self, params, x, y, key, train, state, static=(5,))

    def loss_and_grad_unchecked(self, params, x, y, key=None, train=False, state=None):
        if self.fused_head is not None:
            loss, grads, state = self._fused_loss_and_grad(params, x, y, key, train, state)
        else:
            _, cache = self.forward_unchecked(params, x, key, train, state)
            grads, _ = self.backward_unchecked(params, cache, self.output_delta_unchecked(cache, y))
            loss, state = self.loss_value(cache, y), cache.state
        return (loss if state is None else (loss, state)), grads

    def accuracy(self, params, x: Array, y: Array) -> Array:
        """Fraction of correct predictions in evaluation mode, as :meth:`jbp.MLP.accuracy`;
        for sequences, of the positions whose label is not ``IGNORE`` (per token)."""
        if self.loss_name == "mse":
            raise ValueError("accuracy needs a classification loss, but this network's loss is 'mse'")
        x, y = self._checked(params, x, y)
        return compiled(type(self).accuracy_unchecked, self, params, x, y)

    def accuracy_unchecked(self, params, x, y):
        p = self.forward_unchecked(params, x)[0]
        if self.loss_name == "cross_entropy":
            if y.ndim == p.ndim - 1:  # integer labels, IGNORE (padding) left out
                valid = y != IGNORE
                hits = jnp.sum((jnp.argmax(p, axis=-1) == y) & valid)
                return hits / jnp.maximum(jnp.sum(valid), 1)
            return jnp.mean(jnp.argmax(p, axis=-1) == jnp.argmax(y, axis=-1))
        return jnp.mean((p > 0.5) == (y > 0.5))


def _is_stateful(layer) -> bool:
    return callable(getattr(layer, "init_state", None)) and callable(getattr(layer, "final_state", None))


def _with_head(state: Optional[tuple]) -> Optional[tuple]:
    """The body's state and the fused head's entry, ``None``: the network's state."""
    return None if state is None else (*state, None)


@functools.lru_cache(maxsize=256)
def _param_shapes(net: Sequential, dtype) -> tuple:
    return jax.eval_shape(lambda key: net.init_unchecked(key, dtype), jax.random.key(0))


# --- Argument checks at the boundary. ---------------------------------------------


def layer_params(net, value: Any) -> np.dtype:
    """For a network of layers: one entry per layer, each with the structure, shapes and
    dtype of that layer's ``init``; returns their one floating dtype."""
    if not isinstance(value, tuple):  # a list would not match the tuple of gradients
        raise TypeError(
            f"params must be a tuple with one entry per layer (from net.init), got "
            f"{type(value).__name__}"
        )
    if len(value) != net.n_layers:
        raise ValueError(
            f"params has {len(value)} entries but the network has {net.n_layers} layers"
        )
    leaves = jax.tree_util.tree_flatten_with_path(value)[0]
    for path, a in leaves:
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"params{jax.tree_util.keystr(path)} must be an array, got {_validate.describe(a)}")
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(
                f"params{jax.tree_util.keystr(path)} must be floating, got dtype {a.dtype}"
            )
    dtype = _validate.one_dtype("params", [a.dtype for _, a in leaves]) if leaves else _validate.float_dtype("dtype", None)
    want = net.param_shapes(dtype)
    for i, (layer, got) in enumerate(zip(net.layers, value)):
        _validate.same_tree(f"params[{i}]", got, f"layers[{i}] ({type(layer).__name__}).init", want[i])
    return dtype


def input_shape(net, x) -> None:
    """A network of layers' ``x``: ``(batch, *input_shape)``."""
    want = ("batch", *net.input_shape)
    if x.ndim != len(want) or tuple(x.shape[1:]) != net.input_shape:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but the network expects "
            f"({', '.join(map(str, want))}) (input_shape={net.input_shape})"
        )


def sequential_cache(net, cache):
    """For :meth:`jbp.Sequential.output_delta` and ``backward``: a cache of ``net.forward``."""
    residuals, z, out = (getattr(cache, a, None) for a in ("residuals", "z", "out"))
    if not isinstance(residuals, tuple) or not all(hasattr(a, "shape") for a in (z, out)):
        raise TypeError(
            f"cache must be the SequentialCache that net.forward returns, got {type(cache).__name__}"
        )
    if len(residuals) != net.n_layers:
        raise ValueError(
            f"cache holds residuals of {len(residuals)} layers but the network has "
            f"{net.n_layers}; use the cache of net.forward(params, x)"
        )
    want = ", ".join(map(str, net.output_shape))
    if z.ndim != 1 + len(net.output_shape) or tuple(z.shape[1:]) != net.output_shape or out.shape != z.shape:
        raise ValueError(
            f"cache.z has shape {tuple(z.shape)} and cache.out {tuple(out.shape)} but the "
            f"network's output is (batch, {want}) (output_shape)"
        )
    return cache._replace(z=jnp.asarray(z), out=jnp.asarray(out))
