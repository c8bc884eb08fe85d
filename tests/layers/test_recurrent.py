"""RNN, LSTM and GRU: backpropagation through time by hand, against jax.vjp in float64
and check_layer in float32, over several lengths including T = 1; the initial and the
carried state; the per-step gradient norms; a planted forget-gate mistake found."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp.layers import GRU, LSTM, RNN, Dense, LSTMState, gradient_through_time
from jbp.layers.dense import input_grad
from jbp.layers.recurrent import SIGMOID, TANH
from helpers import rel_errors
from layer_cases import RTOL64, assert_backwards_match_vjp

KEY = jax.random.key(0)
CELLS = (RNN, LSTM, GRU)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.__name__)
def test_backward_matches_vjp_over_lengths(cell):
    assert_backwards_match_vjp([
        (cell(3, return_sequences=sequences), (T, 2), batch)
        for T, batch in ((1, 2), (2, 1), (7, 3)) for sequences in (True, False)
    ])


def _state(cell, rng, batch, hidden, dtype=np.float64):
    draw = lambda: np.asarray(rng.normal(size=(batch, hidden)), dtype)
    return LSTMState(draw(), draw()) if cell is LSTM else draw()


@jax.jit
def _vjp_pair(params, x, dy):
    """Per layer: the hand-derived (dparams, dx) and jax.vjp's, x = (inputs, state)."""
    return {name: (layer.backward(params[name], layer.forward(params[name], x[name])[1], dy[name]),
                   jax.vjp(lambda p, x: layer.forward(p, x)[0], params[name], x[name])[1](dy[name]))
            for name, (layer, _) in _STATEFUL.items()}


#: name -> (layer, T): every cell, one step returning the sequence, four returning the last state.
_STATEFUL = {f"{c.__name__}, T={T}, sequences={s}": (c(3, return_sequences=s), T)
             for c in CELLS for T, s in ((1, True), (4, False))}


def test_the_initial_state_is_an_input_and_gets_its_gradient():
    rng = np.random.default_rng(1)
    params, x, dy = {}, {}, {}
    for name, (layer, T) in _STATEFUL.items():
        p, out_shape = layer.init(KEY, (T, 2), np.float64)
        params[name] = jax.tree.map(lambda a: a + rng.normal(size=a.shape), p)
        x[name] = (rng.normal(size=(2, T, 2)), _state(type(layer), rng, 2, 3))
        dy[name] = rng.normal(size=(2, *out_shape))
    for name, (manual, want) in _vjp_pair(params, x, dy).items():
        chex.assert_trees_all_equal_structs(manual, want)
        errors = rel_errors(manual, want)
        assert max(errors) <= RTOL64, (name, errors)
        dstate = manual[1][1]
        assert isinstance(dstate, LSTMState) == name.startswith("LSTM")


@pytest.mark.parametrize("layer, T, leaves", [
    (RNN(4), 1, ("params.W", "params.U", "params.b", "x")),
    (LSTM(4, return_sequences=False), 5, ("params.W", "params.U", "params.b", "x")),
    (GRU(4), 5, ("params.W", "params.U", "params.b", "params.b_h", "x")),
])
def test_check_layer_passes_in_float32(layer, T, leaves):
    report = jbp.check_layer(layer, (T, 3), key=KEY, batch=3)
    assert report.ok is True and report.failed == () and report.dtype == "float32", str(report)
    assert tuple(leaf.name for leaf in report.leaves) == leaves
    assert report.per_example is not None and report.per_example.ok, str(report)  # for per-example clipping


def test_check_layer_with_an_initial_state():
    rng = np.random.default_rng(2)
    x = (np.asarray(rng.normal(size=(3, 2, 3)), np.float32), _state(LSTM, rng, 3, 4, np.float32))
    report = jbp.check_layer(LSTM(4), (2, 3), key=KEY, x=x)
    assert report.ok is True, str(report)
    assert tuple(leaf.name for leaf in report.leaves)[-3:] == ("x[0]", "x[1].h", "x[1].c")


def test_forward_is_the_cell_equations_step_by_step():
    rng = np.random.default_rng(3)
    layer = LSTM(3, forget_bias=0.5)
    params, _ = layer.init(KEY, (4, 2), np.float64)
    assert np.all(params.b[3:6] == 0.5) and np.all(params.b[:3] == 0) and np.all(params.b[6:] == 0)
    x = rng.normal(size=(2, 4, 2))
    y, _ = layer.forward(params, x)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    h, c = np.zeros((2, 3)), np.zeros((2, 3))
    for t in range(4):
        i, f, g, o = np.split(x[:, t] @ params.W.T + h @ params.U.T + params.b, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        np.testing.assert_allclose(y[:, t], h, rtol=1e-12)


def test_init_shapes_and_orthogonal_recurrent_blocks():
    params, shape = GRU(5, return_sequences=False).init(KEY, (7, 2), np.float64)
    assert shape == (5,) and params.W.shape == (15, 2) and params.U.shape == (15, 5) and params.b_h.shape == (5,)
    for block in np.split(np.asarray(params.U), 3):
        np.testing.assert_allclose(block @ block.T, np.eye(5), atol=1e-12)
    assert RNN(4).init(KEY, (3, 2), np.float32)[1] == (3, 4)


def test_two_windows_with_the_carried_state_are_the_whole_sequence():
    rng = np.random.default_rng(4)
    for layer in (RNN(3), LSTM(3), GRU(3)):
        params, _ = layer.init(KEY, (6, 2), np.float64)
        x = rng.normal(size=(2, 6, 2))
        whole, _ = layer.forward(params, x)
        first, residuals = layer.forward(params, x[:, :4])
        second, _ = layer.forward(params, (x[:, 4:], layer.final_state(residuals)))
        np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12)


def test_one_compilation_for_new_values():
    layer = LSTM(3, return_sequences=False)
    step = jax.jit(chex.assert_max_traces(n=1)(lambda p, x, dy: layer.backward(p, layer.forward(p, x)[1], dy)))
    rng = np.random.default_rng(10)
    params, _ = layer.init(KEY, (4, 2), np.float32)
    for _ in range(3):
        x = np.asarray(rng.normal(size=(2, 4, 2)), np.float32)
        step(jax.tree.map(lambda a: a + 0.1, params), x, np.asarray(rng.normal(size=(2, 3)), np.float32))


def test_a_checkpoint_rebuilds_the_recurrent_layers(tmp_path):
    net = jbp.Sequential((6, 3), [GRU(4), LSTM(5, return_sequences=False, forget_bias=2.0, init="he_normal"),
                                  Dense(2)], loss="cross_entropy")
    params = net.init(KEY, np.float32)
    jbp.save_checkpoint(tmp_path / "lstm.npz", net=net, params=params, epoch=3)
    saved = jbp.load_checkpoint(tmp_path / "lstm.npz")
    assert saved.net == net and saved.epoch == 3
    chex.assert_trees_all_equal(saved.params, params)


# --- The gradient's path through time. ------------------------------------------------


def _reference_dh_norms(layer, params, x, dy):
    """‖dL/dh_t‖ by autodiff: L = <dy, y>, with a zero offset e_t added to each h_t."""

    def loss(e):
        a = jnp.swapaxes(x @ params.W.T + params.b, 0, 1)

        def step(state, inputs):
            a_t, e_t = inputs
            (h, *rest), (_, extra) = layer.step(params, state, a_t)
            h = h + e_t
            return (h, *rest), h

        state0 = tuple(jnp.zeros((x.shape[0], layer.hidden)) for _ in layer.STATE)
        _, hs = jax.lax.scan(step, state0, (a, e))
        y = jnp.swapaxes(hs, 0, 1) if layer.return_sequences else hs[-1]
        return jnp.sum(y * dy)

    T = x.shape[1]
    g = jax.grad(loss)(jnp.zeros((T, x.shape[0], layer.hidden)))
    return np.sqrt(np.sum(np.asarray(g) ** 2, axis=(1, 2)))


@pytest.mark.parametrize("layer", [RNN(3, return_sequences=False), LSTM(3), GRU(3, return_sequences=False)],
                         ids=lambda l: type(l).__name__)
def test_backward_with_norms_gives_each_steps_dh_norm(layer):
    rng = np.random.default_rng(5)
    params, out_shape = layer.init(KEY, (6, 2), np.float64)
    x = rng.normal(size=(2, 6, 2))
    y, residuals = layer.forward(params, x)
    dy = rng.normal(size=y.shape)
    dparams, dx, norms = layer.backward_with_norms(params, residuals, dy)
    chex.assert_trees_all_close((dparams, dx), layer.backward(params, residuals, dy), rtol=1e-14)
    assert norms.shape == (6,)
    np.testing.assert_allclose(norms, _reference_dh_norms(layer, params, x, dy), rtol=1e-10)
    if not layer.return_sequences:  # only h_T is an output: dL/dh_T = dy
        np.testing.assert_allclose(norms[-1], np.linalg.norm(dy), rtol=1e-12)


def test_gradient_through_time_on_a_network():
    net = jbp.Sequential((5, 2), [LSTM(4), LSTM(3, return_sequences=False), Dense(2)], loss="cross_entropy")
    params = net.init(KEY, np.float64)
    x = np.random.default_rng(6).normal(size=(3, 5, 2))
    y = np.array([0, 1, 1])
    loss, grads, norms = jax.jit(gradient_through_time, static_argnums=0)(net, params, x, y)
    want_loss, want_grads = jax.jit(net.loss_and_grad)(params, x, y)
    chex.assert_trees_all_close((loss, grads), (want_loss, want_grads), rtol=1e-12)
    assert norms[0].shape == (5,) and norms[1].shape == (5,) and norms[2] is None
    assert np.all(np.asarray(norms[0]) > 0)


def test_per_example_norms_through_a_network_are_each_examples_own():
    net = jbp.Sequential((5, 2), [GRU(3, return_sequences=False), Dense(2)], loss="cross_entropy")
    params = net.init(KEY, np.float64)
    x = np.random.default_rng(9).normal(size=(3, 5, 2))
    y = np.array([0, 1, 1])
    got = jbp.per_example_norms(net, params, x, y)
    grad = jax.jit(net.loss_and_grad)
    want = [optax.tree.norm(grad(params, x[i:i + 1], y[i:i + 1])[1]) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-10)


# --- A mistake planted in the forget gate's derivative. -------------------------------


class LSTMWithForgetGateBug(LSTM):
    """The LSTM's step backward with one classic mistake: the forget gate's σ' left
    out, ``dz_f = dc_t * c_{t-1}`` instead of ``dc_t * c_{t-1} * f (1 - f)``."""

    def step_backward(self, params, dstate, state_t, gates, prev_t):
        (dh, dc), (_, c), (_, c_prev) = dstate, state_t, prev_t
        i, f, g, o = jnp.split(gates, 4, axis=1)
        tanh_c = jnp.tanh(c)
        dz_o = SIGMOID.delta(None, o, dh * tanh_c)
        dc = dc + TANH.delta(None, tanh_c, dh * o)
        dz_i = SIGMOID.delta(None, i, dc * g)
        dz_f = dc * c_prev  # the mistake: σ'(z_f) = f (1 - f) left out
        dz_g = TANH.delta(None, g, dc * i)
        dz = jnp.concatenate([dz_i, dz_f, dz_g, dz_o], axis=1)
        return (input_grad(dz, params.U), dc * f), (dz, None)


def test_check_grads_names_the_lstm_with_a_wrong_forget_gate_derivative():
    bad = jbp.Sequential((5, 2), [LSTMWithForgetGateBug(4, return_sequences=False), Dense(3)],
                         loss="cross_entropy")
    params = bad.init(KEY, np.float32)
    x = jax.random.normal(jax.random.key(1), (4, 5, 2), np.float32)
    y = jnp.arange(4) % 3
    report = jbp.check_grads(bad, params, x, y, worst_examples=0)
    assert report.ok is False
    assert set(report.failed) == {"params[0].W", "params[0].U", "params[0].b"}, str(report)
    first = report.first_failure
    assert (first.layer, first.layer_type) == (0, "LSTMWithForgetGateBug"), str(report)
    assert all(c.verdict == "ok" for c in report.equations if c.layer in (None, 1)), str(report)


def test_one_step_localises_the_mistake_to_the_forget_gate_rows():
    """At T = 1 from a given state, the mistake reaches only the forget gate's rows of
    dW, dU, db, and dx and dh_0 through them (and so the per-example norms); dc_0 = dc_1 *
    f stays right."""
    rng = np.random.default_rng(7)
    H = 3
    x = (np.asarray(rng.normal(size=(4, 1, 2)), np.float32), _state(LSTM, rng, 4, H, np.float32))
    report = jbp.check_layer(LSTMWithForgetGateBug(H), (1, 2), key=KEY, x=x)
    assert set(report.failed) == {"params.W", "params.U", "params.b", "x[0]", "x[1].h",
                                  "per_example_sq_norms"}, str(report)
    params, _ = LSTM(H).init(KEY, (1, 2), np.float64)
    x64 = jax.tree.map(lambda a: np.asarray(a, np.float64), x)
    layer = LSTMWithForgetGateBug(H)
    y, residuals = layer.forward(params, x64)
    dy = rng.normal(size=y.shape)
    got = layer.backward(params, residuals, dy)[0]
    want = jax.vjp(lambda p: layer.forward(p, x64)[0], params)[1](dy)[0]
    for leaf in ("W", "U", "b"):
        wrong = np.abs(np.asarray(getattr(got, leaf)) - np.asarray(getattr(want, leaf))) > 1e-12
        rows = np.flatnonzero(wrong.reshape(4 * H, -1).any(axis=1))
        assert set(rows) <= set(range(H, 2 * H)) and rows.size, (leaf, rows)


# --- Clipping by global norm in fit. --------------------------------------------------


def test_fit_with_gradient_clipping_by_global_norm():
    """optax.clip_by_global_norm in an optax chain is clipping in jbp.fit: with a tiny
    threshold every update is the clipped gradient's, so SGD moves by lr * c exactly."""
    net = jbp.Sequential((4, 2), [RNN(3, return_sequences=False), Dense(1)])
    params = net.init(KEY, np.float32)
    rng = np.random.default_rng(8)
    x = np.asarray(rng.normal(size=(8, 4, 2)), np.float32)
    y = np.asarray(rng.normal(size=(8, 1)), np.float32)
    c, lr = 1e-2, 0.5
    new, _ = jbp.fit(net, params, x, y, optimizer=optax.chain(optax.clip_by_global_norm(c), optax.sgd(lr)),
                     epochs=1, batch_size=8, key=KEY)
    step = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), new, params)
    np.testing.assert_allclose(optax.tree.norm(step), lr * c, rtol=1e-4)
    _, grads = net.loss_and_grad(params, x, y)
    assert optax.tree.norm(grads) > 10 * c  # clipped, not the gradient itself
    np.testing.assert_allclose(jax.tree.leaves(step)[0], -lr * c * jax.tree.leaves(grads)[0] / optax.tree.norm(grads),
                               rtol=0, atol=1e-6)


# --- Bad arguments. ---------------------------------------------------------------------


@pytest.mark.parametrize("call, error, match", [
    (lambda: RNN(0), ValueError, "RNN's hidden must be >= 1, got 0"),
    (lambda: LSTM(3, return_sequences="no"), TypeError, "LSTM's return_sequences must be True or False, got str 'no'"),
    (lambda: LSTM(3, forget_bias=float("nan")), ValueError, "LSTM's forget_bias must be a finite real number"),
    (lambda: GRU(3, init="zeros"), ValueError, "unknown GRU's init 'zeros'"),
    (lambda: GRU(3).init(KEY, (4,), np.float32), ValueError, r"GRU.init's input_shape must be \(T, n_in\)"),
    (lambda: RNN(3).forward(RNN(3).init(KEY, (2, 2))[0], np.zeros((1, 2, 5))), ValueError,
     "RNN's x has 5 features but its W expects 2"),
    (lambda: RNN(3).forward(RNN(3).init(KEY, (2, 2))[0], np.zeros((2, 2))), ValueError,
     r"RNN's x must be \(batch, T, n_in\) with T >= 1, got float64 array of shape \(2, 2\)"),
    (lambda: LSTM(3).forward(LSTM(3).init(KEY, (2, 2))[0], (np.zeros((1, 2, 2)), np.zeros((1, 3)))), ValueError,
     r"LSTM's initial state must be a pair \(h, c\) of \(1, 3\) each"),
    (lambda: GRU(3).forward(GRU(3).init(KEY, (2, 2))[0], (np.zeros((1, 2, 2)), np.zeros((2, 3)))), ValueError,
     r"GRU's initial state must be \(1, 3\)"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("layer, want", [(RNN(3), jnp.zeros((2, 3))), (GRU(3), jnp.zeros((2, 3))),
                                         (LSTM(3), LSTMState(jnp.zeros((2, 3)), jnp.zeros((2, 3))))])
def test_init_state_is_zeros_in_the_form_a_state_is_given(layer, want):
    state = layer.init_state(2, jnp.float32)
    chex.assert_trees_all_equal_shapes_and_dtypes(state, jax.tree.map(lambda a: a.astype(jnp.float32), want))
    assert type(state) is type(want) and all(not jnp.any(a) for a in jax.tree.leaves(state))
