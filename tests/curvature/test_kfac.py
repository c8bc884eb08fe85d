"""K-FAC (jbp.curvature): the factors against autodiff's Fisher, the optimizer in the
training step, its state, statistics and errors.

Which equalities are exact and which are approximations:

- exact (float64, rel. err. <= 1e-10): with ONE example, a layer's ``A ⊗ G`` equals its
  Fisher block built from autodiff's gradient (an outer product of a rank-one gradient
  has nothing to approximate): the empirical block ``g gᵀ`` for the data's target, and the
  true Fisher ``Σ_y p(y) g_y g_yᵀ`` summed over every target;
  also a convolution whose kernel covers its input (one position);
- exact: each factor alone equals its definition over a batch (``A = mean x̄ x̄ᵀ``,
  ``G = mean δ δᵀ``, ``δ`` example ``i``'s own loss's autodiff gradient w.r.t. ``z``);
  BP5's operands reproduce the layer's gradient; ``G⁻¹ dW̄ A⁻¹ = (A ⊗ G)⁻¹ vec(dW̄)``;
- approximation: over a batch, ``A ⊗ G`` differs from ``mean_i g_i g_iᵀ`` (K-FAC's
  independence assumption), and the sampled Fisher's ``G`` is a Monte Carlo estimate of
  the true one (its mean over many draws converges).
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp.curvature import Backward, KFACState, kronecker
from jbp.layers import GRU, LSTM, RNN, CausalSelfAttention, Conv1D, Conv2D, Dense, Embedding, Flatten, LayerNorm
from jbp.layers import chain
from jbp.layers.params import Layer
from jbp.layers.protocol import weight_blocks
from jbp.layers.transformer import transformer_block

RTOL = 1e-10


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def vec(g: Layer) -> np.ndarray:
    """``vec([dW, db])``, columns stacked: ``vec(δ x̄ᵀ) = x̄ ⊗ δ``, so ``g gᵀ`` pairs with ``kron(A, G)``."""
    n_out = g.W.shape[0]
    return np.asarray(jnp.concatenate([g.W.reshape(n_out, -1), g.b[:, None]], axis=1)).reshape(-1, order="F")


def layer_factors(b: Backward, i: int, dys=None):
    """``(A, G)`` of layer ``i`` from ``b``'s residuals and ``dys`` (default the data's)."""
    dys = b.dys if dys is None else dys
    layer = b.layers[i]
    return kronecker.factors(*layer.weight_grad_operands(b.params[i], b.residuals[i], dys[i]), b.scale)


def one_dense(loss, n_in=4, n_out=3, key=0):
    net = jbp.Sequential((n_in,), [Dense(n_out)], loss=loss)
    params = net.init(jax.random.key(key), jnp.float64)
    params = (Layer(params[0].W, 0.1 * jnp.arange(n_out, dtype=jnp.float64)),)
    return net, params


def targets(loss, key, batch, n_out):
    if loss == "cross_entropy":
        return jax.random.randint(key, (batch,), 0, n_out)
    if loss == "binary_cross_entropy":
        return jax.random.bernoulli(key, 0.5, (batch, n_out)).astype(jnp.float64)
    return jax.random.normal(key, (batch, n_out), jnp.float64)


# --- Exact: one example, one layer. --------------------------------------------------


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse"])
def test_one_example_kron_equals_autodiff_empirical_fisher_block(loss):
    net, params = one_dense(loss)
    x = jax.random.normal(jax.random.key(1), (1, 4), jnp.float64)
    y = targets(loss, jax.random.key(2), 1, 3)
    A, G = layer_factors(Backward.of(net, params, x, y), 0)
    g = vec(jax.grad(net.loss)(params, x, y)[0])  # autodiff: the reference
    c = 1 / 3 if loss == "binary_cross_entropy" else 1.0  # the loss is c times the NLL
    # ℓ = c·NLL, so g gᵀ = c² F_nll while G is c F_nll: A ⊗ G = g gᵀ / c
    assert rel_err(np.kron(A, G), np.outer(g, g) / c) <= RTOL


def test_one_example_kron_equals_autodiff_true_fisher_block():
    """The true Fisher, ``Σ_y p(y|x) g_y g_yᵀ`` over every label: K-FAC's ``G`` is linear
    in ``δ δᵀ``, so ``A ⊗ Σ_y p(y) G_y`` is that sum exactly with one example."""
    net, params = one_dense("cross_entropy", n_in=5, n_out=4)
    x = jax.random.normal(jax.random.key(3), (1, 5), jnp.float64)
    b = Backward.of(net, params, x, jnp.array([0]))
    p = b.cache.out[0]
    fisher, G = 0.0, 0.0
    for label in range(4):
        g = vec(jax.grad(net.loss)(params, x, jnp.array([label]))[0])
        fisher = fisher + p[label] * np.outer(g, g)
        onehot = jax.nn.one_hot(jnp.array([label]), 4, dtype=jnp.float64)
        A, G_y = layer_factors(b, 0, b.rerun(net.output_delta_unchecked(b.cache, onehot)))
        G = G + p[label] * G_y
    assert rel_err(np.kron(A, G), fisher) <= RTOL


def test_one_example_conv_covering_its_input_is_exact():
    """A convolution whose kernel covers its input has one position: a dense layer."""
    net = jbp.Sequential((3, 3, 2), [Conv2D(4, (3, 3), padding="VALID"), Flatten()], loss="cross_entropy")
    params = net.init(jax.random.key(4), jnp.float64)
    x = jax.random.normal(jax.random.key(5), (1, 3, 3, 2), jnp.float64)
    y = jnp.array([2])
    A, G = layer_factors(Backward.of(net, params, x, y), 0)
    g = vec(jax.grad(net.loss)(params, x, y)[0])
    assert rel_err(np.kron(A, G), np.outer(g, g)) <= RTOL


# --- Exact: each factor over a batch; the operands; the Kronecker solve. -------------


def test_batch_factors_exact_but_their_product_approximates_the_fisher():
    net, params = one_dense("cross_entropy", n_in=4, n_out=3)
    x = jax.random.normal(jax.random.key(6), (6, 4), jnp.float64)
    y = jnp.array([0, 1, 2, 0, 1, 2])
    A, G = layer_factors(Backward.of(net, params, x, y), 0)
    x_bar = np.concatenate([np.asarray(x), np.ones((6, 1))], axis=1)
    assert rel_err(A, x_bar.T @ x_bar / 6) <= RTOL  # exact: A = mean x̄ x̄ᵀ

    def example_loss(z, label):  # ℓ_i as a function of the example's own z
        return jax.nn.logsumexp(z) - z[label]

    z = x @ params[0].W.T + params[0].b
    deltas = jax.vmap(jax.grad(example_loss))(z, y)  # autodiff δ_i = dℓ_i/dz_i
    assert rel_err(G, deltas.T @ deltas / 6) <= RTOL  # exact: G = mean δ δᵀ
    per_example = [vec(jax.grad(net.loss)(params, x[i:i + 1], y[i:i + 1])[0]) for i in range(6)]
    fisher = sum(np.outer(g, g) for g in per_example) / 6
    # approximation: E[x̄x̄ᵀ ⊗ δδᵀ] ≠ E[x̄x̄ᵀ] ⊗ E[δδᵀ] when x̄ and δ vary together
    assert rel_err(np.kron(A, G), fisher) > 1e-3


@pytest.mark.parametrize("layer, shape", [
    (Dense(3), (5,)),
    (jbp.layers.Perceptron(3, "tanh"), (5,)),
    (Conv1D(3, 3, stride=2, padding="SAME"), (7, 2)),
    (Conv2D(3, (2, 3), strides=(2, 1), padding="VALID"), (5, 6, 2)),
    (Conv2D(2, 3, padding="SAME"), (4, 4, 3)),
])
def test_weight_grad_operands_reproduce_the_layers_gradient(layer, shape):
    params, out_shape = layer.init(jax.random.key(7), shape, jnp.float64)
    x = jax.random.normal(jax.random.key(8), (3, *shape), jnp.float64)
    dy = jax.random.normal(jax.random.key(9), (3, *out_shape), jnp.float64)
    _, r = layer.forward(params, x)
    grads, _ = layer.backward(params, r, dy)
    a, delta = layer.weight_grad_operands(params, r, dy)
    n_out = grads.W.shape[0]
    assert rel_err(jnp.einsum("btf,btj->fj", delta, a), grads.W.reshape(n_out, -1)) <= RTOL
    assert rel_err(delta.sum(axis=(0, 1)), grads.b) <= RTOL


def test_preconditioned_update_is_the_kronecker_solve():
    """``(A_d ⊗ G_d)⁻¹ vec(dW̄) = vec(G_d⁻¹ dW̄ A_d⁻¹)``, with π-damping's ``A_d``, ``G_d``."""
    k = jax.random.split(jax.random.key(10), 4)
    a, d = jax.random.normal(k[0], (20, 1, 3), jnp.float64), jax.random.normal(k[1], (20, 1, 2), jnp.float64)
    A, G = kronecker.factors(a, d, 20.0)
    dA, dG = kronecker.pi_damping(A, G, 0.1)
    assert abs(dA * dG - 0.1) <= RTOL  # π √λ · √λ / π = λ
    A_inv, _ = kronecker.damped_inverse(A, dA)
    G_inv, _ = kronecker.damped_inverse(G, dG)
    g = Layer(jax.random.normal(k[2], (2, 3), jnp.float64), jax.random.normal(k[3], (2,), jnp.float64))
    u = vec(kronecker.precondition(g, A_inv, G_inv))
    K = np.kron(A + dA * np.eye(4), G + dG * np.eye(2))
    assert rel_err(u, np.linalg.solve(K, vec(g))) <= RTOL


# --- Approximation: the sampled Fisher. ------------------------------------------------


def test_sampled_fisher_converges_to_the_true_fisher():
    net, params = one_dense("cross_entropy", n_in=3, n_out=3)
    x = jax.random.normal(jax.random.key(11), (1, 3), jnp.float64)
    b = Backward.of(net, params, x, jnp.array([0]))
    p = b.cache.out[0]
    G_true = sum(p[c] * layer_factors(b, 0, b.rerun(net.output_delta_unchecked(
        b.cache, jax.nn.one_hot(jnp.array([c]), 3, dtype=jnp.float64))))[1] for c in range(3))
    draws = jax.vmap(lambda k: layer_factors(b, 0, b.sampled_dys(k))[1])(jax.random.split(jax.random.key(12), 4000))
    assert rel_err(draws.mean(axis=0), G_true) < 0.05  # Monte Carlo: ~1/sqrt(4000) per entry


# --- The optimizer in the training step. ---------------------------------------------


def mlp_and_batch(dtype=jnp.float64):
    net = jbp.MLP((4, 5, 3), activation="tanh", loss="cross_entropy")
    params = net.init(jax.random.key(13), dtype)
    x = jax.random.normal(jax.random.key(14), (8, 4), dtype)
    y = jnp.arange(8) % 3
    return net, params, x, y


def test_first_step_is_lr_times_the_preconditioned_gradient():
    net, params, x, y = mlp_and_batch()
    opt = jbp.kfac(0.5, damping=0.01, momentum=None, fisher="empirical")
    new, state, _ = jax.jit(lambda p, s: jbp.train_step(net, opt, p, s, x, y))(params, opt.init(params))
    b = Backward.of(net, params, x, y)
    grads = net.loss_and_grad(params, x, y)[1]
    for i in range(2):
        A, G = layer_factors(b, i)
        dA, dG = kronecker.pi_damping(A, G, 0.01)
        u = kronecker.precondition(grads[i], kronecker.damped_inverse(A, dA)[0], kronecker.damped_inverse(G, dG)[0])
        expected = jax.tree.map(lambda p, d: p - 0.5 * d, params[i], u)
        assert rel_err(new[i].W, expected.W) <= RTOL and rel_err(new[i].b, expected.b) <= RTOL
        assert rel_err(state.A[i], A) <= RTOL and rel_err(state.G[i], G) <= RTOL
        assert float(state.stats.update_norm[i]) == pytest.approx(float(jnp.sqrt(
            jnp.sum(u.W ** 2) + jnp.sum(u.b ** 2))), rel=1e-10)
        assert float(state.stats.damping_A[i] * state.stats.damping_G[i]) == pytest.approx(0.01, rel=1e-10)


def test_factors_move_by_ema_and_inverses_wait_for_inverse_every():
    net, params, x, y = mlp_and_batch()
    opt = jbp.kfac(0.1, ema=0.9, inverse_every=3, fisher="empirical")
    state = opt.init(params)
    step = jax.jit(lambda p, s: jbp.train_step(net, opt, p, s, x, y))
    seen = []
    for _ in range(4):
        old = state
        params, state, _ = step(params, state)
        seen.append((old, state))
    (s0, s1), (_, s2), (_, s3), (_, s4) = seen
    assert not np.allclose(s1.A_inv[0], s0.A_inv[0])  # step 0 inverts
    np.testing.assert_array_equal(s2.A_inv[0], s1.A_inv[0])  # steps 1, 2 keep them
    np.testing.assert_array_equal(s3.A_inv[0], s1.A_inv[0])
    assert not np.allclose(s4.A_inv[0], s3.A_inv[0])  # step 3 inverts again
    assert int(s4.count) == 4


def test_ema_weights_old_and_new_factors():
    net, params, x, y = mlp_and_batch()
    opt = jbp.kfac(0.1, ema=0.9, fisher="empirical")
    s1 = opt.update(net.loss_and_grad(params, x, y)[1], opt.init(params), params,
                    backward=Backward.of(net, params, x, y))[1]
    x2 = x[::-1] * 2.0
    s2 = opt.update(net.loss_and_grad(params, x2, y)[1], s1, params, backward=Backward.of(net, params, x2, y))[1]
    A_new, _ = layer_factors(Backward.of(net, params, x2, y), 0)
    w = min(0.9, 1 / 2)  # step 1: w = min(ema, t / (t + 1))
    assert rel_err(s2.A[0], w * s1.A[0] + (1 - w) * A_new) <= RTOL


def test_fit_trains_a_cnn_with_a_norm_layer_and_says_which_block_each_layer_gets():
    net = jbp.Sequential((6, 6, 1), [Conv2D(3, 3), "tanh", Flatten(), LayerNorm(), Dense(2)], loss="cross_entropy")
    params = net.init(jax.random.key(15), jnp.float32)
    x = jax.random.normal(jax.random.key(16), (32, 6, 6, 1), jnp.float32)
    y = (x.sum(axis=(1, 2, 3)) > 0).astype(jnp.int32)
    opt = jbp.kfac(0.05, damping=0.1, inverse_every=2)
    lines = opt.describe(net)
    assert "Kronecker factors A 10x10" in lines[0] and "G 3x3" in lines[0]
    assert lines[1].endswith("no parameters")
    assert "diagonal Fisher" in lines[3]
    assert "Kronecker factors A 109x109" in lines[4]
    start = net.loss(params, x, y)
    trained, h = jbp.fit(net, params, x, y, optimizer=opt, epochs=6, batch_size=16, key=jax.random.key(17))
    assert not h.diverged and float(net.loss(trained, x, y)) < 0.7 * float(start)
    stats = jax.tree.map(np.asarray, h.opt_state.stats)
    assert np.all(np.isfinite(stats.cond_A[[0, 4]])) and np.all(stats.cond_A[[0, 4]] >= 1)
    assert np.all(np.isnan(stats.cond_A[[1, 2, 3]]))
    assert float(stats.update_norm[3]) > 0 and float(stats.update_norm[1]) == 0


def test_diagonal_fallback_is_the_mean_squared_per_example_gradient():
    net = jbp.Sequential((3,), [LayerNorm(), Dense(2)], loss="cross_entropy")
    params = net.init(jax.random.key(18), jnp.float64)
    x = jax.random.normal(jax.random.key(19), (5, 3), jnp.float64)
    y = jnp.array([0, 1, 1, 0, 1])
    opt = jbp.kfac(0.1, fisher="empirical")
    state = opt.update(net.loss_and_grad(params, x, y)[1], opt.init(params), params,
                       backward=Backward.of(net, params, x, y))[1]
    per_example = [jax.grad(net.loss)(params, x[i:i + 1], y[i:i + 1])[0] for i in range(5)]
    expected = jax.tree.map(lambda *g: sum(gi ** 2 for gi in g) / 5, *per_example)
    for got, want in zip(jax.tree.leaves(state.diagonal[0]), jax.tree.leaves(expected)):
        assert rel_err(got, want) <= RTOL


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    net, params, x, y = mlp_and_batch(jnp.float32)
    opt = jbp.kfac(0.1, inverse_every=2)
    p1, h1 = jbp.fit(net, params, x, y, optimizer=opt, epochs=3)
    jbp.save_checkpoint(tmp_path / "c.npz", net=net, params=p1, opt_state=h1.opt_state, epoch=int(h1.epoch))
    c = jbp.load_checkpoint(tmp_path / "c.npz", optimizer=opt)
    assert isinstance(c.opt_state, KFACState)
    p2, h2 = jbp.fit(net, c.params, x, y, optimizer=opt, epochs=2, opt_state=c.opt_state, start_epoch=c.epoch)
    p_all, _ = jbp.fit(net, params, x, y, optimizer=opt, epochs=5)
    for a, b in zip(jax.tree.leaves(p2), jax.tree.leaves(p_all)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_make_train_step_donates_the_state_and_fit_stream_takes_kfac():
    net, params, x, y = mlp_and_batch(jnp.float32)
    opt = jbp.kfac(0.1)
    step = jbp.make_train_step(net, opt)  # donates params and state: no two leaves may share a buffer
    p, s, _ = step(jax.tree.map(jnp.copy, params), opt.init(params), x, y)
    p, s, _ = step(p, s, x, y)
    assert int(s.count) == 2
    _, h = jbp.fit_stream(net, params, (x, y), optimizer=opt, epochs=2, batch_size=4, key=jax.random.key(1))
    assert isinstance(h.opt_state, KFACState) and int(h.opt_state.count) == 4


def test_then_takes_any_optax_chain():
    net, params, x, y = mlp_and_batch()
    opt = jbp.kfac(damping=0.01, fisher="empirical", then=optax.scale(-0.25))
    plain = jbp.kfac(0.25, damping=0.01, fisher="empirical", momentum=None)
    a, _, _ = jbp.train_step(net, opt, params, opt.init(params), x, y)
    b, _, _ = jbp.train_step(net, plain, params, plain.init(params), x, y)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert rel_err(u, v) <= RTOL


# --- Errors. ---------------------------------------------------------------------------


def test_refuses_a_step_without_its_backward_pass():
    net, params, x, y = mlp_and_batch()
    opt = jbp.kfac()
    with pytest.raises(ValueError, match="jbp.kfac reads the training step's backward pass.*without loss_and_grad"):
        jbp.train_step(net, opt, params, opt.init(params), x, y, loss_and_grad=jax.value_and_grad(net.loss))
    with pytest.raises(ValueError, match="called without it"):
        opt.update(params, opt.init(params), params)


@pytest.mark.parametrize("kwargs, message", [
    ({"ema": 1.0}, r"ema must be in \[0, 1\), got 1.0"),
    ({"fisher": "exact"}, "fisher"),
    ({"damping": 0.0}, "damping must be > 0, got 0.0"),
    ({"inverse_every": 0}, "inverse_every"),
    ({"momentum": 1.5}, r"momentum must be in \[0, 1\) or None, got 1.5"),
    ({"fallback": "zero"}, "fallback"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0, got -1.0"),
    ({"adaptive": True, "weight_decay": 0.1}, "adaptive=True chooses the step itself.*weight_decay=0.1"),
    ({"adaptive": True, "then": optax.sgd(0.1)}, "it takes no then= or weight_decay="),
    ({"adaptive": 1}, "adaptive must be True or False, got 1"),
    ({"damping_decay": 1.0}, r"damping_decay must be in \(0, 1\), got 1.0"),
    ({"damping": 10.0, "damping_bounds": (1e-3, 1.0)},
     r"damping must lie within damping_bounds \(0.001, 1.0\), got 10.0"),
    ({"damping_bounds": 1.0}, r"damping_bounds must be a pair \(low, high\), got 1.0"),
    ({"damping_every": 0}, "damping_every"),
    ({"statistics_batch": 0}, "statistics_batch"),
])
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        jbp.kfac(0.1, **kwargs)


def test_a_layer_with_dense_params_but_no_operands_is_named():
    class Bare:  # a user's dense layer without weight_grad_operands
        __hash__ = object.__hash__
        init = Dense(2).init
        forward = Dense(2).forward
        backward = Dense(2).backward

    net = jbp.Sequential((3,), [Bare()], loss="cross_entropy")
    params = net.init(jax.random.key(20), jnp.float64)
    x, y = jnp.ones((2, 3)), jnp.array([0, 1])
    opt = jbp.kfac()
    with pytest.raises(TypeError, match=r"layers\[0\] \(Bare\) has jbp.Layer\(W, b\) parameters but no "
                                        "weight_grad_operands"):
        jbp.train_step(net, opt, params, opt.init(params), x, y)


def test_chain_backward_dys_are_what_the_step_hands_over():
    net, params, x, y = mlp_and_batch()
    b = Backward.of(net, params, x, y)
    _, cache = net.forward_unchecked(params, x)
    dys = chain.backward(net.layers, params, cache.residuals, net.output_delta_unchecked(cache, y))[2]
    for u, v in zip(b.dys, dys):
        np.testing.assert_array_equal(u, v)
    assert b.scale == 8.0


# --- The command line. -----------------------------------------------------------------


def test_cli_trains_and_resumes_with_kfac(tmp_path, capsys):
    from jbp.cli import main

    argv = ["train", "--dataset", "xor", "--hidden", "4", "--no-check", "--optimizer", "kfac", "--out", str(tmp_path)]
    assert main(argv + ["--epochs", "2"]) == 0
    assert "kfac lr 0.1, batch 4" in capsys.readouterr().out
    assert main(["train", "--resume", "--epochs", "3", "--out", str(tmp_path)]) == 0
    assert "resuming" in capsys.readouterr().out


def test_cli_trains_the_cnn_with_kfac(tmp_path, capsys):
    from jbp.cli import main

    y = np.arange(40) % 10  # the cnn has 10 outputs
    x = (np.random.default_rng(0).random((40, 8, 8, 1)) * 0.3 + y[:, None, None, None] / 10).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=x, y=y)
    argv = ["train", "--data", str(tmp_path / "images.npz"), "--model", "cnn", "--optimizer", "kfac", "--epochs", "2",
            "--batch-size", "16", "--no-check", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "kfac lr 0.1, batch 16" in out
    losses = [float(v) for v in re.findall(r"loss ([0-9.]+)", out)]
    assert losses and all(np.isfinite(losses))


def test_cli_trains_an_autoencoder_with_kfac(tmp_path, capsys):
    from jbp.cli import main

    x = np.random.default_rng(1).random((60, 8)).astype(np.float32)
    x[:, 4:] = x[:, :4] ** 2  # half the inputs a function of the other half: a code of 4 can hold them
    np.savez(tmp_path / "ae.npz", x=x, y=x)  # an autoencoder: the targets are the inputs
    argv = ["train", "--data", str(tmp_path / "ae.npz"), "--hidden", "8,4,8", "--activation", "tanh",
            "--optimizer", "kfac", "--lr", "0.03", "--epochs", "10", "--batch-size", "16", "--no-check",
            "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert "network 8-8-4-8-8 tanh -> identity (mse), kfac lr 0.03" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_loss"][-1] < 0.5 * metrics["initial_train_loss"], metrics["train_loss"]


def test_cli_refuses_kfac_with_another_rule(capsys):
    from jbp.cli import main

    assert main(["train", "--dataset", "xor", "--optimizer", "kfac", "--rule", "fa"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--optimizer kfac reads the step's own backprop pass; it cannot be combined with --rule fa" in err


# --- The protocol, used exactly as docs/kfac.md shows. ---------------------------------


import dataclasses  # noqa: E402


@dataclasses.dataclass(frozen=True)
class DeltaScaled:
    learning_rate: float
    reads_backward = True  # ask the training step for its backward pass

    def init(self, params):
        return ()

    def update(self, grads, state, params=None, *, backward):
        updates = []
        for g, dy in zip(grads, backward.dys):
            rms = jnp.sqrt(jnp.mean((backward.batch * dy) ** 2)) + 1e-8
            updates.append(jax.tree.map(lambda gi: -self.learning_rate * gi / rms, g))
        return tuple(updates), state


def test_a_users_optimizer_reads_the_backward_through_the_protocol():
    net = jbp.MLP((2, 8, 1), activation="tanh", loss="mse")
    params = net.init(jax.random.key(0), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (32, 2), jnp.float64)
    y = x[:, :1] * x[:, 1:]
    new, _ = jbp.fit(net, params, x, y, optimizer=DeltaScaled(0.05), epochs=1)
    b, grads = Backward.of(net, params, x, y), net.loss_and_grad(params, x, y)[1]
    for p, g, dy, n in zip(params, grads, b.dys, new):
        rms = jnp.sqrt(jnp.mean((32 * dy) ** 2)) + 1e-8
        assert rel_err(n.W, p.W - 0.05 * g.W / rms) <= RTOL


# --- Adaptive: learning rate and momentum from the quadratic model, damping by Levenberg-Marquardt.
# Exact (float64, <= 1e-10): the curvature's bilinear form over the whole network equals autodiff's
# per-example gradients' (empirical Fisher, where every quantity is deterministic); the step solves the
# damped quadratic model; the reduction ratio is the measured loss change over the model's.


def adaptive_net_and_batch():
    """Dense, tanh, a LayerNorm (a fallback layer) and a sigmoid output: c = 1/2."""
    net = jbp.Sequential((3,), [Dense(4), "tanh", LayerNorm(), Dense(2)], loss="binary_cross_entropy")
    params = net.init(jax.random.key(21), jnp.float64)
    x = jax.random.normal(jax.random.key(22), (6, 3), jnp.float64)
    y = jax.random.bernoulli(jax.random.key(23), 0.5, (6, 2)).astype(jnp.float64)
    return net, params, x, y


def flat(tree):
    return np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])


def per_example(net, params, x, y):
    """Each example's own loss gradient, flattened, by autodiff: ``c`` times its log-likelihood's."""
    return np.stack([flat(jax.grad(net.loss)(params, x[i:i + 1], y[i:i + 1])) for i in range(x.shape[0])])


def test_fisher_gram_is_the_whole_networks_curvature_with_cross_layer_terms():
    net, params, x, y = adaptive_net_and_batch()
    b = Backward.of(net, params, x, y)
    vs = [jax.tree.map(lambda p, k=k: jax.random.normal(jax.random.key(k), p.shape, p.dtype), params) for k in (1, 2)]
    got = kronecker.fisher_gram(b.layers, params, b.residuals, b.dys, b.scale, vs)
    g, V = per_example(net, params, x, y), np.stack([flat(v) for v in vs])
    c = 0.5
    expected = (g @ V.T).T @ (g @ V.T) / (c * x.shape[0])  # c · mean_i (ĝ_iᵀ v_a)(ĝ_iᵀ v_b), ĝ_i = g_i / c
    assert rel_err(got, expected) <= RTOL


def test_adaptive_steps_solve_the_quadratic_model_and_rho_moves_the_damping():
    net, params, x, y = adaptive_net_and_batch()
    opt = jbp.kfac(adaptive=True, damping=0.5, fisher="empirical", inverse_every=1, damping_every=1,
                   damping_decay=0.9)
    state, p, lam, c = opt.init(params), params, 0.5, 0.5
    for step in range(3):
        old = state
        new, state, loss = jbp.train_step(net, opt, p, state, x, y)
        grads = net.loss_and_grad(p, x, y)[1]
        delta = [kronecker.precondition(grads[i], state.A_inv[i], state.G_inv[i]) for i in (0, 3)]
        delta = (delta[0], (), jax.tree.map(lambda g, d: g / (d + lam), grads[2], state.diagonal[2]), delta[1])
        V = np.stack([-flat(delta), flat(old.velocity)])  # Δ = −F̃⁻¹ g, and the last step
        U = per_example(net, p, x, y) @ V.T
        C, D, b = U.T @ U / (c * x.shape[0]), V @ V.T, V @ flat(grads)
        if step == 0:  # no last step: the momentum is 0 and α minimises the model along Δ alone
            w = np.array([-b[0] / (C[0, 0] + lam * D[0, 0]), 0.0])
        else:
            w = np.linalg.solve(C + lam * D, -b)
        assert rel_err([state.quad.learning_rate, state.quad.momentum], w) <= RTOL
        assert rel_err(flat(new), flat(p) + w @ V) <= RTOL
        change = b @ w + 0.5 * w @ C @ w
        assert float(state.quad.model_change) == pytest.approx(change, rel=1e-10)
        rho = (float(net.loss(new, x, y)) - float(loss)) / change
        assert float(state.quad.rho) == pytest.approx(rho, rel=1e-8)
        lam = lam * 0.9 if rho > 0.75 else lam / 0.9 if rho < 0.25 else lam
        assert float(state.damping) == pytest.approx(lam, rel=1e-12)
        p = new


@pytest.mark.parametrize("rho, factor", [(0.9, 0.5), (0.5, 1.0), (0.1, 2.0), (-3.0, 2.0), (np.nan, 2.0),
                                         (np.inf, 2.0)])
def test_levenberg_marquardt_rule(rho, factor):
    assert float(kronecker.levenberg_marquardt(1.0, jnp.asarray(rho), 0.5)) == factor


def test_statistics_batch_takes_the_factors_from_the_first_rows_as_their_own_batch():
    net, params, x, y = mlp_and_batch()
    opt = jbp.kfac(0.1, fisher="empirical", statistics_batch=3)
    state = opt.update(net.loss_and_grad(params, x, y)[1], opt.init(params), params,
                       backward=Backward.of(net, params, x, y))[1]
    sub = Backward.of(net, params, x[:3], y[:3])
    for i in range(2):
        A, G = layer_factors(sub, i)
        assert rel_err(state.A[i], A) <= RTOL and rel_err(state.G[i], G) <= RTOL


def test_fit_trains_an_autoencoder():
    """A 6-4-2-4-6 tanh autoencoder with a sigmoid cross-entropy output reconstructing its input
    (the benchmark's task, scaled down), with the benchmark's adaptive K-FAC."""
    optimizer = jbp.kfac(adaptive=True, damping=0.01, damping_every=2)
    net = jbp.MLP((6, 4, 2, 4, 6), activation="tanh", loss="binary_cross_entropy")
    params = net.init(jax.random.key(24), jnp.float32)
    codes = jax.random.bernoulli(jax.random.key(25), 0.5, (32, 2)).astype(jnp.float32)
    x = jnp.concatenate([codes, codes, 1 - codes], axis=1)  # two bits of information per example
    start = float(net.loss(params, x, x))
    trained, h = jbp.fit(net, params, x, x, optimizer=optimizer, epochs=10, batch_size=32)
    assert not h.diverged and float(net.loss(trained, x, x)) < 0.8 * start


def test_adaptive_kfac_trains_with_sampled_statistics_from_a_subset():
    net, params, x, y = mlp_and_batch(jnp.float32)
    opt = jbp.kfac(adaptive=True, damping=0.1, statistics_batch=4, damping_every=2)
    trained, h = jbp.fit(net, params, x, y, optimizer=opt, epochs=8)
    assert not h.diverged and float(net.loss(trained, x, y)) < 0.5 * float(net.loss(params, x, y))
    quad = h.opt_state.quad
    assert float(quad.learning_rate) > 0 and np.isfinite(float(quad.rho)) and float(quad.model_change) < 0


# --- Weights shared over positions: expand and reduce (Eschenhagen et al. 2023). ------


def test_expand_on_a_sequence_equals_the_dense_over_its_rows():
    """Exact: a ``Dense`` over ``(B, T, F)`` under "expand" has the ``A ⊗ G`` of the same
    ``Dense`` over the ``B·T`` rows as examples (the cross-entropy's mean runs over every
    position; ``c = 1/T``)."""
    B, T, V = 3, 4, 6
    x = jax.random.randint(jax.random.key(0), (B, T), 0, V)
    y = jax.random.randint(jax.random.key(1), (B, T), 0, V)
    seq = jbp.Sequential((T,), [Embedding(V, 5), Dense(V)], loss="cross_entropy")
    params = seq.init(jax.random.key(2), jnp.float64)
    b = Backward.of(seq, params, x, y)
    A, G = layer_factors(b, 1)
    # the rows as B·T examples of one position: the same deltas (both losses are means over B·T), c = 1
    a_rows, d_rows = (v.reshape(B * T, 1, -1) for v in (b.residuals[1], b.dys[1]))
    A_rows, G_rows = kronecker.factors(a_rows, d_rows, B * T)
    assert rel_err(np.kron(A, G), np.kron(A_rows, G_rows)) <= RTOL


def test_reduce_is_exact_when_every_position_sees_the_same_input():
    """Exact: one example whose ``T`` positions see the same input ``x``: its gradient
    ``Σ_t δ_t x̄ᵀ = (Σ_t δ_t) x̄ᵀ`` is rank one, and "reduce"'s ``A ⊗ G`` is ``g gᵀ / c``
    from autodiff (``c = 1/T``); "expand"'s is not (its ``G`` sums ``δ_t δ_tᵀ`` over positions)."""
    T, V = 4, 5
    net = jbp.Sequential((T,), [Embedding(V, 3), Dense(V)], loss="cross_entropy")
    params = net.init(jax.random.key(0), jnp.float64)
    x, y = jnp.full((1, T), 2), jax.random.randint(jax.random.key(2), (1, T), 0, V)
    g = vec(jax.grad(lambda p: net.loss(p, x, y))(params)[1])
    b = Backward.of(net, params, x, y)
    operands = net.layers[1].weight_grad_operands(params[1], b.residuals[1], b.dys[1])
    A, G = kronecker.factors(*operands, b.scale, "reduce")
    assert rel_err(np.kron(A, G), T * np.outer(g, g)) <= RTOL
    A, G = kronecker.factors(*operands, b.scale, "expand")
    assert rel_err(np.kron(A, G), T * np.outer(g, g)) > 1e-3


def test_reduce_with_one_position_is_martens_and_grosse():
    a = jax.random.normal(jax.random.key(0), (5, 1, 3), jnp.float64)
    d = jax.random.normal(jax.random.key(1), (5, 1, 2), jnp.float64)
    for got, want in zip(kronecker.factors(a, d, 5.0, "reduce"), kronecker.factors(a, d, 5.0, "expand")):
        assert rel_err(got, want) <= RTOL


def shared_layer_cases():
    return [CausalSelfAttention(2, keep="probs"), CausalSelfAttention(2, keep="lse", block=2), RNN(3), LSTM(3),
            GRU(3), transformer_block(4, 2)[0], transformer_block(4, 2, hidden=6)[1]]


@pytest.mark.parametrize("layer", shared_layer_cases(), ids=lambda l: type(l).__name__)
def test_kronecker_operands_reproduce_each_weight_block(layer):
    """Exact: each block's ``Σ_{b,t} δᵀ a`` and ``Σ_{b,t} δ`` are the backward's ``dW`` and ``db``."""
    x = jax.random.normal(jax.random.key(0), (2, 5, 4), jnp.float64)
    params, shape = layer.init(jax.random.key(1), (5, 4), jnp.float64)
    y, residuals = layer.forward(params, x)
    dy = jax.random.normal(jax.random.key(2), y.shape, jnp.float64)
    grads, _ = layer.backward(params, residuals, dy)
    blocks, operands = weight_blocks(params), layer.kronecker_operands(params, residuals, dy)
    assert len(blocks) == len(operands) >= 2
    for (weight, bias), (a, delta) in zip(blocks, operands):
        dW = kronecker.get_path(grads, weight)
        assert rel_err(jnp.einsum("bto,bti->oi", delta, a), dW.reshape(dW.shape[0], -1)) <= RTOL
        if bias is not None:
            assert rel_err(jnp.sum(delta, axis=(0, 1)), kronecker.get_path(grads, bias)) <= RTOL


@pytest.mark.parametrize("approximation", ["expand", "reduce"])
def test_first_step_on_an_lstm_preconditions_each_block(approximation):
    """Exact: the first step's ``W`` and ``U`` updates are ``−lr G⁻¹ dW̄ A⁻¹`` with the
    state's factors, those of ``factors(..., approximation)``; ``describe`` names the blocks."""
    net = jbp.Sequential((3, 2), [LSTM(2, return_sequences=False), Dense(2)], loss="mse")
    params = net.init(jax.random.key(0), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (2, 3, 2), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (2, 2), jnp.float64)
    opt = jbp.kfac(0.5, momentum=None, fisher="empirical", approximation=approximation)
    assert f"2 Kronecker blocks, weights shared over positions ({approximation})" in opt.describe(net)[0]
    new, state = jbp.train_step(net, opt, params, opt.init(params), x, y)[:2]
    b = Backward.of(net, params, x, y)
    operands = net.layers[0].kronecker_operands(params[0], b.residuals[0], b.dys[0])
    grads = net.loss_and_grad(params, x, y)[1]
    A_inv, G_inv = [], []
    for (a, d), bias, A_state, G_state in zip(operands, (True, False), state.A[0], state.G[0]):
        A, G = kronecker.factors(a, d, b.scale, approximation, bias)
        assert rel_err(A_state, A) <= RTOL and rel_err(G_state, G) <= RTOL
        dA, dG = kronecker.pi_damping(A, G, 0.1)
        A_inv.append(kronecker.damped_inverse(A, dA)[0]), G_inv.append(kronecker.damped_inverse(G, dG)[0])
    u = kronecker.precondition_blocks(grads[0], ((("W",), ("b",)), (("U",), None)), A_inv, G_inv)
    for got, p, ui in zip(new[0], params[0], u):
        assert rel_err(got, p - 0.5 * ui) <= RTOL
