"""Recurrent layers over ``(batch, T, features)``: :class:`RNN`, :class:`LSTM` and
:class:`GRU`, trained by backpropagation through time (BPTT), derived by hand.

A recurrent layer is one cell applied at every time step with the same weights. Its
forward is a ``lax.scan`` over time; its backward is a reverse ``lax.scan`` that carries
``dL/dh_t`` (and the LSTM's ``dL/dc_t``) from step ``t`` down to step ``t - 1``. Unrolled,
the layer is a deep network whose layers share their weights, so the seed's equations
apply step by step, and each shared weight's gradient is the sum over the steps of
that step's BP5 and BP6.

**Weights**, as :class:`jbp.layers.Dense`'s, ``(n_out, n_in)``, the ``G`` blocks of a
cell (its gates) stacked in rows: ``W`` ``(G·H, n_in)`` from the input, ``U`` ``(G·H, H)``
from the previous state, ``b`` ``(G·H,)``. Row vectors: with ``x_t`` ``(batch, n_in)``
and ``h_{t-1}`` ``(batch, H)``, every cell's pre-activations are::

    a_t = x_t @ W.T + b              BP1 from the input, all T steps in one product
    z_t = a_t + h_{t-1} @ U.T        BP1 from the previous state, inside the scan

**Backward, the sum over time.** The reverse scan gives each step's ``da_t = dL/da_t``
(and ``dm_t = dL/d(h_{t-1} @ U.T)``, equal to ``da_t`` except in the GRU's candidate
block); inside the scan, ``dm_t @ U`` (BP3 through ``U``) is the part of ``dL/dh_{t-1}``
that comes through step ``t``, carried down. Then, outside the scan, in one product
each (the rows of all ``T`` steps and the batch together)::

    dW      = Σ_t da_tᵀ x_t          BP5, summed over time
    dU      = Σ_t dm_tᵀ h_{t-1}      BP5, summed over time
    db      = Σ_t Σ_batch da_t       BP6, summed over time
    dx_t    = da_t @ W               BP3, every step at once

**The initial state** is part of the input: ``forward(params, x)`` with ``x``
``(batch, T, n_in)`` starts from zeros; ``forward(params, (x, state))`` starts from
``state`` (``h0`` ``(batch, H)`` for :class:`RNN` and :class:`GRU`, ``LSTMState(h0, c0)``
or a pair for :class:`LSTM`), and then ``backward`` returns ``dx`` as ``(dx, dstate)``,
with ``dstate = dL/dstate`` in the same structure: ``dx`` has the structure of ``x``, as
the layer protocol asks. :meth:`final_state` reads the state after the last step from
the residuals, to start the next window of a long sequence (truncated BPTT, where no
gradient crosses the window's edge).

**The gradient's path through time.** ``backward_with_norms`` is the backward that
also returns ``‖dL/dh_t‖`` for each step (over the batch and the hidden units): the
carry of the reverse scan, so the norms cost one reduction per step.
:func:`gradient_through_time` gives them for every recurrent layer of a network, with
the loss and the gradient of the same pass.

**Per-example gradient norms** (for per-example clipping and DP-SGD):
``per_example_sq_norms``, each example's BP5 and BP6 summed over its own steps.

Each cell's step and its backward, derived, are in its class's docstring.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jbp import _validate
from jbp.layers import args
from jbp.layers.conv import conv_bias_grad_sq_norms, conv_weight_grad_sq_norms
from jbp.layers.dense import bias_grad, dense, input_grad, weight_grad
from jbp.model.activations import get_activation
from jbp.model.initializers import INITIALIZERS, init_array

Array = jax.Array

SIGMOID = get_activation("sigmoid")
TANH = get_activation("tanh")


class RecurrentParams(NamedTuple):
    """An :class:`RNN`'s or :class:`LSTM`'s parameters (or their gradients).

    Attributes:
      W: ``(G·H, n_in)``, from the input; the ``G`` gate blocks stacked in rows.
      U: ``(G·H, H)``, from the previous state.
      b: ``(G·H,)``.
    """

    W: Array
    U: Array
    b: Array

    #: K-FAC's weight blocks (:mod:`jbp.layers.protocol`): ``W`` with the bias ``b``, ``U`` alone.
    kronecker_blocks = ((("W",), ("b",)), (("U",), None))


class GRUParams(NamedTuple):
    """A :class:`GRU`'s parameters (or their gradients): :class:`RecurrentParams`'s
    ``W``, ``U``, ``b`` (blocks: reset, update, candidate) and ``b_h`` ``(H,)``, the
    candidate's bias inside the reset gate."""

    W: Array
    U: Array
    b: Array
    b_h: Array

    #: K-FAC's weight blocks: as :class:`RecurrentParams`'; ``b_h`` (the candidate rows' bias
    #: of ``U`` alone) is in none.
    kronecker_blocks = ((("W",), ("b",)), (("U",), None))


class LSTMState(NamedTuple):
    """An LSTM's state (or its gradient): ``h`` and ``c``, ``(batch, H)`` each."""

    h: Array
    c: Array


class RecurrentResiduals(NamedTuple):
    """What a recurrent layer's forward keeps for its backward.

    Attributes:
      x: the input as given: ``x`` ``(batch, T, n_in)``, or ``(x, state)``.
      states: the state after each step, time first: ``(h_1..h_T,)`` ``(T, batch, H)``,
        and for the LSTM ``(h_1..h_T, c_1..c_T)``.
      steps: what else each step's backward reads, time first (the LSTM's gates, ...).
    """

    x: Any
    states: tuple
    steps: Any


def _orthogonal_blocks(key: Array, gates: int, hidden: int, dtype) -> Array:
    """``U`` ``(G·H, H)``: one random orthogonal ``(H, H)`` block per gate (Saxe et al.
    2014), so that ``h @ U.T`` neither shrinks nor grows ``h`` at the start: the ``Q`` of
    the QR decomposition of a Gaussian matrix, its columns' signs fixed by ``R``'s
    diagonal so that it is uniformly distributed (Mezzadri 2007); all blocks in one QR."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (gates, hidden, hidden), dtype))
    q = q * jnp.sign(jnp.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q.reshape(gates * hidden, hidden)


@dataclasses.dataclass(frozen=True, init=False)
class _Recurrent:
    """The scan over time and the reverse scan shared by the cells (see the module
    docstring). A cell defines ``GATES``, ``STATE`` (the names of its state's parts),
    ``step`` and ``step_backward``."""

    hidden: int
    return_sequences: bool
    init_name: str

    GATES = 1
    STATE = ("h",)

    def __init__(self, hidden: int, *, return_sequences: bool = True, init: str = "glorot_uniform"):
        name = type(self).__name__
        object.__setattr__(self, "hidden", _validate.positive_int(f"{name}'s hidden", hidden))
        object.__setattr__(self, "return_sequences", _validate.flag(f"{name}'s return_sequences", return_sequences))
        object.__setattr__(self, "init_name", _validate.name(f"{name}'s init", init, tuple(INITIALIZERS)))

    # --- init -------------------------------------------------------------------------

    def init(self, key: Array, input_shape: tuple, dtype=None) -> tuple[Any, tuple]:
        """``(params, output_shape)`` for inputs ``(batch, T, n_in)``; ``input_shape =
        (T, n_in)``. ``W``: the init scheme per gate block (fans ``n_in`` and ``H``);
        ``U``: an orthogonal block per gate; biases zero (see each cell for exceptions).
        The output shape is ``(T, hidden)``, or ``(hidden,)`` without ``return_sequences``."""
        key, (T, n_in), dtype = args.init_args(self, key, input_shape, dtype, 2, "(T, n_in), time steps and features")
        G, H = self.GATES, self.hidden
        k_W, k_U = jax.random.split(key)
        W = jnp.concatenate([init_array(self.init_name, k, (H, n_in), n_in, H, dtype)
                             for k in jax.random.split(k_W, G)])
        params = self._params(W, _orthogonal_blocks(k_U, G, H, dtype), jnp.zeros((G * H,), dtype))
        return params, ((T, H) if self.return_sequences else (H,))

    def _params(self, W, U, b):
        return RecurrentParams(W=W, U=U, b=b)

    # --- forward ----------------------------------------------------------------------

    def forward(self, params, x, *, key=None, train: bool = False) -> tuple[Array, RecurrentResiduals]:
        """``(y, residuals)``: ``y`` the states ``h_1..h_T`` ``(batch, T, H)``, or ``h_T``
        ``(batch, H)`` without ``return_sequences``. ``x`` is ``(batch, T, n_in)`` (the
        state starts at zero) or ``(x, state)``."""
        xs, state0 = self._split_input(x, params)
        a = dense(params, jnp.swapaxes(xs, 0, 1))  # BP1 for every step at once, time first
        _, (states, steps) = lax.scan(lambda s, a_t: self.step(params, s, a_t), state0, a)
        h = states[0]
        y = jnp.swapaxes(h, 0, 1) if self.return_sequences else h[-1]
        return y, RecurrentResiduals(x, states, steps)

    def init_state(self, batch: int, dtype=None):
        """The zero state of ``batch`` sequences, in the form an initial state is given
        (``h_0`` ``(batch, H)``, or ``LSTMState(h_0, c_0)``): where a stream starts."""
        batch = _validate.positive_int("batch", batch)
        dtype = _validate.float_dtype("dtype", dtype)
        return self._user_state(tuple(jnp.zeros((batch, self.hidden), dtype) for _ in self.STATE))

    def final_state(self, residuals: RecurrentResiduals):
        """The state after the last step, in the form an initial state is given
        (``h_T``, or ``LSTMState(h_T, c_T)``): what the next window starts from."""
        return self._user_state(tuple(s[-1] for s in residuals.states))

    # --- backward ---------------------------------------------------------------------

    def backward(self, params, residuals: RecurrentResiduals, dy: Array) -> tuple[Any, Any]:
        """``(dparams, dx)``: the reverse scan, then BP5, BP6 and BP3 summed over time."""
        dparams, dx, _ = self._backward(params, residuals, dy, False)
        return dparams, dx

    def backward_with_norms(self, params, residuals: RecurrentResiduals, dy: Array) -> tuple[Any, Any, Array]:
        """``(dparams, dx, dh_norms)``: :meth:`backward` and, from the same reverse scan,
        ``dh_norms[t - 1] = ‖dL/dh_t‖`` ``(T,)`` for ``t = 1..T``, the norm over the
        batch and the hidden units of the whole gradient reaching the state ``h_t`` (from
        the output at ``t`` and from the later steps)."""
        return self._backward(params, residuals, dy, True)

    def _backward(self, params, residuals, dy, norms: bool):
        da, dm, dstate0, dh_norms, xs, h_prev = self._reverse_scan(params, residuals, dy, norms)
        dparams = self._param_grads(_rows(da), _rows(dm), _rows(jnp.swapaxes(xs, 0, 1)), _rows(h_prev))
        dxs = jnp.swapaxes(input_grad(da, params.W), 0, 1)  # BP3, every step at once
        if not isinstance(residuals.x, (tuple, list)):
            return dparams, dxs, dh_norms
        # dL/dstate in the structure the state was given in (an array, a pair, an LSTMState)
        dstate0 = jax.tree.unflatten(jax.tree.structure(residuals.x[1]), list(dstate0))
        return dparams, (dxs, dstate0), dh_norms

    def _reverse_scan(self, params, residuals, dy, norms: bool):
        """``(da, dm, dstate_0, dh_norms, x, h_prev)``: every step's deltas, time first
        ``(T, batch, G·H)``, from the reverse scan; the gradient of the initial state;
        the norms (or ``None``); the input and the states ``h_0..h_{T-1}``."""
        xs, state0 = self._split_input(residuals.x, params)
        # the state each step starts from: s_0, s_1 .. s_{T-1}
        prev = tuple(jnp.concatenate([s0[None], s[:-1]]) for s0, s in zip(state0, residuals.states))
        zeros = tuple(jnp.zeros_like(s0) for s0 in state0)
        if self.return_sequences:
            dstate, dys = zeros, jnp.swapaxes(dy, 0, 1)
        else:  # only h_T is an output: its gradient enters at the last step
            dstate, dys = (dy, *zeros[1:]), None

        def step(dstate, inputs):
            dy_t, state_t, step_t, prev_t = inputs
            dh = dstate[0] if dy_t is None else dstate[0] + dy_t  # from the output and from step t + 1
            dstate, (da, dm) = self.step_backward(params, (dh, *dstate[1:]), state_t, step_t, prev_t)
            return dstate, (da, dm, jnp.sqrt(jnp.sum(dh * dh)) if norms else None)

        dstate0, (da, dm, dh_norms) = lax.scan(step, dstate, (dys, residuals.states, residuals.steps, prev),
                                               reverse=True)
        return da, (da if dm is None else dm), dstate0, dh_norms, xs, prev[0]

    def _param_grads(self, da: Array, dm: Array, x: Array, h_prev: Array):
        """BP5 and BP6 summed over time: the rows of every step and example at once."""
        return RecurrentParams(W=weight_grad(da, x), U=weight_grad(dm, h_prev), b=bias_grad(da))

    def kronecker_operands(self, params, residuals: RecurrentResiduals, dy: Array) -> tuple:
        """BP5's operands of ``W`` and of ``U``, batch first (:mod:`jbp.layers.protocol`):
        ``((x, da), (h_prev, dm))``, each ``(B, T, ·)``, with ``dW = Σ_{b,t} da_btᵀ x_bt``
        and ``dU = Σ_{b,t} dm_btᵀ h_{b,t-1}``: the weights are shared by the ``T`` steps.
        One more reverse scan."""
        da, dm, _, _, xs, h_prev = self._reverse_scan(params, residuals, dy, False)
        return (xs, jnp.swapaxes(da, 0, 1)), (jnp.swapaxes(h_prev, 0, 1), jnp.swapaxes(dm, 0, 1))

    def per_example_sq_norms(self, params, residuals: RecurrentResiduals, dy: Array) -> Array:
        """``‖dparams_i‖²`` per example, ``(B,)``, for per-example clipping: example
        ``i``'s BP5 summed over time, ``dW_i = Σ_t da_{i,t}ᵀ x_{i,t}``, is a 1-D
        convolution's with a kernel of one step, so its squared norm is
        :func:`jbp.layers.conv.conv_weight_grad_sq_norms`'s (the ghost norm over the
        steps, or the direct product, the cheaper); likewise ``dU_i`` with ``dm`` and
        ``h_{t-1}``, and the biases' ``‖Σ_t da_{i,t}‖²``. One more reverse scan."""
        da, dm, _, _, xs, h_prev = self._reverse_scan(params, residuals, dy, False)
        return self._param_sq_norms(jnp.swapaxes(da, 0, 1), jnp.swapaxes(dm, 0, 1), xs, jnp.swapaxes(h_prev, 0, 1))

    def _param_sq_norms(self, da: Array, dm: Array, x: Array, h_prev: Array) -> Array:
        """``(B,)`` from batch-first ``da``, ``dm`` ``(B, T, G·H)``, ``x`` and ``h_prev``."""
        return _steps_sq_norms(da, x) + _steps_sq_norms(dm, h_prev) + conv_bias_grad_sq_norms(da)

    # --- the state, as given and as carried -------------------------------------------

    def _split_input(self, x, params) -> tuple[Array, tuple]:
        """``(x, state as a tuple of (batch, H))`` from ``x`` or ``(x, state)``; checked."""
        name = type(self).__name__
        if isinstance(x, (tuple, list)):
            if len(x) != 2:
                raise ValueError(f"{name}'s input must be x (batch, T, n_in) or a pair (x, state), got a "
                                 f"{type(x).__name__} of {len(x)} entries")
            xs, state = x
        else:
            xs, state = x, None
        if getattr(xs, "ndim", None) != 3 or xs.shape[1] == 0:
            raise ValueError(f"{name}'s x must be (batch, T, n_in) with T >= 1, got {_validate.describe(xs)}")
        if xs.shape[2] != params.W.shape[1]:
            raise ValueError(f"{name}'s x has {xs.shape[2]} features but its W expects {params.W.shape[1]}")
        want = (xs.shape[0], self.hidden)
        if state is None:
            return xs, tuple(jnp.zeros(want, xs.dtype) for _ in self.STATE)
        parts = (state,) if len(self.STATE) == 1 else state
        if (len(self.STATE) > 1 and (not isinstance(state, (tuple, list)) or len(state) != len(self.STATE))) or any(
                getattr(p, "shape", None) != want for p in parts):
            what = want if len(self.STATE) == 1 else f"a pair (h, c) of {want} each"
            raise ValueError(f"{name}'s initial state must be {what} (batch, hidden), got "
                             f"{jax.tree.map(_validate.describe, state)}")
        return xs, tuple(jnp.asarray(p, xs.dtype) for p in parts)

    def _user_state(self, state: tuple):
        return state[0] if len(self.STATE) == 1 else LSTMState(*state)


def _steps_sq_norms(delta: Array, x: Array) -> Array:
    """``‖Σ_t delta_{i,t}ᵀ x_{i,t}‖²`` per example: BP5 over the steps, a kernel of one step."""
    return conv_weight_grad_sq_norms(delta, x, (1,), (1,), ((0, 0),))


def _rows(a: Array) -> Array:
    """``(T, batch, n)`` as ``(T·batch, n)``: every step's rows, for one product."""
    return a.reshape(-1, a.shape[-1])


@dataclasses.dataclass(frozen=True, init=False)
class RNN(_Recurrent):
    """The Elman network: ``h_t = tanh(x_t W^T + h_{t-1} U^T + b)``.

    Step ``t`` (row vectors, ``(batch, ·)``)::

        z_t = x_t @ W.T + h_{t-1} @ U.T + b          BP1
        h_t = tanh(z_t)                              BP2

    Backward. ``h_t`` reaches the loss through the output ``y_t`` (``dy_t``, zero but at
    ``t = T`` without ``return_sequences``) and through ``z_{t+1}``, so the chain rule
    adds the two::

        dh_t = dy_t + dz_{t+1} @ U                   BP3 through U (dz_{T+1} = 0)
        dz_t = dh_t * (1 - h_t²)                     BP4, tanh' from h_t

    and then, summed over time: ``dW = Σ_t dz_tᵀ x_t``, ``dU = Σ_t dz_tᵀ h_{t-1}``,
    ``db = Σ_t Σ_batch dz_t`` (BP5, BP6), ``dx_t = dz_t @ W`` (BP3) and ``dh_0 = dz_1 @
    U``. Residuals: the states ``h_1..h_T``.

    Args:
      hidden: ``H``, the state's size.
      return_sequences: output every ``h_t``, ``(batch, T, H)`` (default), or ``h_T`` only.
      init: the init scheme of ``W`` (see :mod:`jbp.model.initializers`); ``U`` is
        orthogonal, ``b`` zero.
    """

    def step(self, params: RecurrentParams, state: tuple, a_t: Array):
        """``(state_t, (state_t, None))`` from ``state_{t-1} = (h_{t-1},)`` and ``a_t = x_t @ W.T + b``."""
        (h,) = state
        h = TANH.f(a_t + h @ params.U.T)  # BP1 through U, BP2
        return (h,), ((h,), None)

    def step_backward(self, params: RecurrentParams, dstate: tuple, state_t: tuple, step_t, prev_t: tuple):
        """``((dh_{t-1},), (dz_t, None))`` from ``dstate = (dh_t,)``."""
        (dh,), (h,) = dstate, state_t
        dz = TANH.delta(None, h, dh)  # BP4: dz_t = dh_t * (1 - h_t²)
        return (input_grad(dz, params.U),), (dz, None)  # BP3 through U


@dataclasses.dataclass(frozen=True, init=False)
class LSTM(_Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of
    Gers et al. 2000): gates ``i, f, g, o`` in this order in ``W``, ``U`` and ``b``
    (PyTorch's order).

    Step ``t`` (row vectors; ``σ`` the sigmoid, ``*`` elementwise)::

        z_t = x_t @ W.T + h_{t-1} @ U.T + b          BP1, split [z_i, z_f, z_g, z_o]
        i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)               BP2
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)

    Backward. The state is ``(h, c)``; both reach step ``t + 1``, so the reverse scan
    carries ``dh_t`` and ``dc_t``'s part from later steps, ``dc_t^+ = dc_{t+1} * f_{t+1}``.
    Through ``h_t = o tanh(c_t)`` and ``c_t = f c_{t-1} + i g`` the chain rule gives::

        dh_t   = dy_t + dz_{t+1} @ U                              BP3 through U
        dz_o   = dh_t * tanh(c_t) * o (1 - o)                     BP4
        dc_t   = dc_t^+ + dh_t * o * (1 - tanh²(c_t))             two paths into c_t
        dz_i   = dc_t * g * i (1 - i)                             BP4
        dz_f   = dc_t * c_{t-1} * f (1 - f)                       BP4, the forget gate
        dz_g   = dc_t * i * (1 - g²)                              BP4
        dc_{t-1}^+ = dc_t * f                                     carried down

    and then, summed over time with ``dz_t = [dz_i, dz_f, dz_g, dz_o]``: ``dW = Σ_t
    dz_tᵀ x_t``, ``dU = Σ_t dz_tᵀ h_{t-1}``, ``db = Σ_t Σ_batch dz_t`` (BP5, BP6),
    ``dx_t = dz_t @ W`` (BP3); ``dh_0 = dz_1 @ U``, ``dc_0 = dc_1 * f_1``. Residuals:
    ``h_t``, ``c_t`` and the gates ``[i, f, g, o]`` of every step.

    Args:
      hidden: ``H``, the size of ``h`` and ``c``.
      return_sequences: output every ``h_t``, ``(batch, T, H)`` (default), or ``h_T`` only.
      forget_bias: the forget gate's initial bias (default 1: the gate starts mostly
        open, so that the cell keeps its memory at the start of training; Gers et al.
        2000, Jozefowicz et al. 2015). The other biases start at zero.
      init: the init scheme of ``W``; ``U`` is orthogonal per gate.
    """

    forget_bias: float

    GATES = 4
    STATE = ("h", "c")

    def __init__(self, hidden: int, *, return_sequences: bool = True, forget_bias: float = 1.0,
                 init: str = "glorot_uniform"):
        super().__init__(hidden, return_sequences=return_sequences, init=init)
        object.__setattr__(self, "forget_bias", float(_validate.real("LSTM's forget_bias", forget_bias, finite=True)))

    def _params(self, W, U, b):
        H = self.hidden
        return RecurrentParams(W=W, U=U, b=b.at[H:2 * H].set(self.forget_bias))

    def step(self, params: RecurrentParams, state: tuple, a_t: Array):
        """``(state_t, (state_t, gates_t))`` from ``state_{t-1} = (h_{t-1}, c_{t-1})``."""
        h, c = state
        H = self.hidden
        z = a_t + h @ params.U.T  # BP1 through U
        i, f, o = (SIGMOID.f(z[:, k * H:(k + 1) * H]) for k in (0, 1, 3))  # BP2
        g = TANH.f(z[:, 2 * H:3 * H])
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), ((h, c), jnp.concatenate([i, f, g, o], axis=1))

    def step_backward(self, params: RecurrentParams, dstate: tuple, state_t: tuple, gates: Array, prev_t: tuple):
        """``((dh_{t-1}, dc_{t-1}^+), (dz_t, None))`` from ``dstate = (dh_t, dc_t^+)``."""
        (dh, dc), (_, c), (_, c_prev) = dstate, state_t, prev_t
        i, f, g, o = jnp.split(gates, 4, axis=1)
        tanh_c = jnp.tanh(c)
        dz_o = SIGMOID.delta(None, o, dh * tanh_c)  # BP4 through h = o tanh(c)
        dc = dc + TANH.delta(None, tanh_c, dh * o)  # c's two paths: to h_t, and to c_{t+1}
        dz_i = SIGMOID.delta(None, i, dc * g)  # BP4 through c = f c_prev + i g
        dz_f = SIGMOID.delta(None, f, dc * c_prev)  # BP4, the forget gate
        dz_g = TANH.delta(None, g, dc * i)  # BP4
        dz = jnp.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)
        return (input_grad(dz, params.U), dc * f), (dz, None)  # BP3 through U; dc carried down


@dataclasses.dataclass(frozen=True, init=False)
class GRU(_Recurrent):
    """The gated recurrent unit (Cho et al. 2014), with the reset gate applied after the
    recurrent product (PyTorch's and cuDNN's form): blocks ``r, u, n`` (reset, update,
    candidate) in ``W``, ``U`` and ``b``.

    Step ``t`` (row vectors; ``a = x_t @ W.T + b`` and ``m = h_{t-1} @ U.T``, split
    ``[·_r, ·_u, ·_n]``)::

        r = σ(a_r + m_r)    u = σ(a_u + m_u)                              BP1, BP2
        n = tanh(a_n + r * (m_n + b_h))
        h_t = (1 - u) * n + u * h_{t-1}

    Backward. ``h_{t-1}`` reaches ``h_t`` directly (``u * h_{t-1}``) and through ``m``, so
    ``dh_{t-1}`` adds both::

        dh_t  = dy_t + (the carry from step t + 1)
        da_n  = dh_t * (1 - u) * (1 - n²)                         BP4
        da_u  = dh_t * (h_{t-1} - n) * u (1 - u)                  BP4
        da_r  = da_n * (m_n + b_h) * r (1 - r)                    BP4
        dm    = [da_r, da_u, da_n * r]                            the reset gate scales m_n
        dh_{t-1} = dh_t * u + dm @ U                              BP3 through U, and directly

    and then, summed over time: ``dW = Σ_t da_tᵀ x_t``, ``db = Σ_t Σ_batch da_t``,
    ``dU = Σ_t dm_tᵀ h_{t-1}``, ``db_h = Σ_t Σ_batch dm_n`` (BP5, BP6) and ``dx_t = da_t @
    W`` (BP3). Residuals: ``h_t``, the gates ``[r, u, n]`` and ``m_n + b_h`` of every step.

    Args:
      hidden: ``H``, the state's size.
      return_sequences: output every ``h_t``, ``(batch, T, H)`` (default), or ``h_T`` only.
      init: the init scheme of ``W``; ``U`` is orthogonal per gate; ``b`` and ``b_h`` zero.
    """

    GATES = 3

    def _params(self, W, U, b):
        return GRUParams(W=W, U=U, b=b, b_h=jnp.zeros((self.hidden,), b.dtype))

    def step(self, params: GRUParams, state: tuple, a_t: Array):
        """``(state_t, (state_t, (gates_t, m_n + b_h)))`` from ``state_{t-1} = (h_{t-1},)``."""
        (h_prev,) = state
        H = self.hidden
        m = h_prev @ params.U.T  # BP1 through U
        r = SIGMOID.f(a_t[:, :H] + m[:, :H])  # BP2
        u = SIGMOID.f(a_t[:, H:2 * H] + m[:, H:2 * H])
        hn = m[:, 2 * H:] + params.b_h
        n = TANH.f(a_t[:, 2 * H:] + r * hn)
        h = (1 - u) * n + u * h_prev
        return (h,), ((h,), (jnp.concatenate([r, u, n], axis=1), hn))

    def step_backward(self, params: GRUParams, dstate: tuple, state_t: tuple, step_t, prev_t: tuple):
        """``((dh_{t-1},), (da_t, dm_t))`` from ``dstate = (dh_t,)``."""
        (dh,), (gates, hn), (h_prev,) = dstate, step_t, prev_t
        r, u, n = jnp.split(gates, 3, axis=1)
        da_n = TANH.delta(None, n, dh * (1 - u))  # BP4 through h = (1 - u) n + u h_prev
        da_u = SIGMOID.delta(None, u, dh * (h_prev - n))  # BP4
        da_r = SIGMOID.delta(None, r, da_n * hn)  # BP4 through n = tanh(a_n + r (m_n + b_h))
        da = jnp.concatenate([da_r, da_u, da_n], axis=1)
        dm = jnp.concatenate([da_r, da_u, da_n * r], axis=1)
        return (dh * u + input_grad(dm, params.U),), (da, dm)  # directly, and BP3 through U

    def _param_grads(self, da, dm, x, h_prev):
        H = self.hidden
        return GRUParams(W=weight_grad(da, x), U=weight_grad(dm, h_prev), b=bias_grad(da),
                         b_h=bias_grad(dm[:, 2 * H:]))  # BP6 of b_h: m_n + b_h

    def _param_sq_norms(self, da, dm, x, h_prev):
        return super()._param_sq_norms(da, dm, x, h_prev) + conv_bias_grad_sq_norms(dm[..., 2 * self.hidden:])


def gradient_through_time(net, params, x: Array, y: Array, *, key: Optional[Array] = None,
                          train: bool = False) -> tuple[Array, tuple, tuple]:
    """The loss, its hand-derived gradient, and ``‖dL/dh_t‖`` per step of every
    recurrent layer of ``net``, from one forward and one backward pass.

    Example::

      net = jbp.Sequential((50, 2), [LSTM(32, return_sequences=False), Dense(1)])
      loss, grads, norms = gradient_through_time(net, params, x, y)
      norms[0]        # (50,): ‖dL/dh_t‖ of the LSTM, t = 1..50; None for other layers

    Args:
      net: a :class:`jbp.Sequential` (any network with ``layers``, ``forward``,
        ``output_delta`` and ``loss``'s cache).
      params, x, y, key, train: as for ``net.loss_and_grad``.

    Returns:
      ``(loss, grads, norms)``: ``loss`` and ``grads`` as ``net.loss_and_grad`` gives
      them; ``norms`` one entry per layer, ``(T,)`` for a recurrent layer (its
      ``backward_with_norms``), ``None`` for the others.
    """
    _, cache = net.forward(params, x, key=key, train=train)
    grads, norms, dy = [], [], net.output_delta(cache, y)
    for layer, p, r in reversed(tuple(zip(net.layers, params, cache.residuals, strict=True))):
        if callable(getattr(layer, "backward_with_norms", None)):
            dp, dy, n = layer.backward_with_norms(p, r, dy)
        else:
            (dp, dy), n = layer.backward(p, r, dy), None
        grads.append(dp)
        norms.append(n)
    return net.loss_value(cache, y), tuple(reversed(grads)), tuple(reversed(norms))
