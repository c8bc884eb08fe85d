"""DP-SGD (jbp/training/privacy.py, jbp/cli/privacy.py): Poisson sampling, the noise's scale,
fit's private loop and its exact resume, the accounting against dp-accounting's own, the
command line, and clear errors."""

import json
import types

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dp_accounting import pld, rdp
from scipy import stats

import jbp
import jbp.datasets
from helpers import assert_grads_close, problem
from jbp.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
from user_layers import MyScale
from jbp.cli import main
from jbp.cli import privacy as cli_privacy

# ----------------------------------------------------------------------------- accounting


def _reference_epsilon(accountant, event, delta):
    acc = (pld.PLDAccountant(value_discretization_interval=jbp.privacy.PLD_DISCRETIZATION)
           if accountant == "pld" else rdp.RdpAccountant())
    acc.compose(event)
    return acc.get_epsilon(delta)


def test_epsilon_is_dp_accountings_for_the_same_mechanism():
    poisson = dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(1.1))
    truncated = dp_accounting.TruncatedSubsampledGaussianDpEvent(1000, 0.02, 30, 1.1)
    for accountant, kw, one in [
        ("rdp", {}, poisson),
        ("pld", {}, poisson),
        ("pld", {"dataset_size": 1000, "max_batch_size": 30}, truncated),
    ]:
        got = jbp.privacy.epsilon(noise_multiplier=1.1, sample_rate=0.02, steps=500, delta=1e-5,
                                  accountant=accountant, **kw)
        want = _reference_epsilon(accountant, dp_accounting.SelfComposedDpEvent(one, 500), 1e-5)
        assert 0.5 < got < 5
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{accountant} {kw}")
    assert jbp.privacy.epsilon(noise_multiplier=0.0, sample_rate=0.02, steps=10, delta=1e-5) == np.inf
    assert jbp.privacy.epsilon(noise_multiplier=1.0, sample_rate=0.02, steps=0, delta=1e-5) == 0.0


def test_noise_multiplier_is_the_smallest_that_meets_the_budget():
    common = dict(sample_rate=0.02, steps=500, delta=1e-5, accountant="rdp")
    sigma = jbp.privacy.noise_multiplier(epsilon=2.0, **common)
    # Brent's answer within 1e-4, rounded up to a multiple of 1e-4: 3e-4 less noise overspends.
    assert jbp.privacy.epsilon(noise_multiplier=sigma, **common) <= 2.0
    assert jbp.privacy.epsilon(noise_multiplier=sigma - 3e-4, **common) > 2.0


def test_accounting_bad_inputs_are_clear_errors():
    ok = dict(noise_multiplier=1.0, sample_rate=0.1, steps=10, delta=1e-5)
    cases = [
        (dict(noise_multiplier=-0.5), ValueError, r"noise_multiplier must be >= 0 .*got -0.5"),
        (dict(sample_rate=1.5), ValueError, r"sample_rate must lie in \(0, 1\] .*got 1.5"),
        (dict(delta=1.0), ValueError, r"delta must lie in \(0, 1\), got 1.0"),
        (dict(steps=-1), ValueError, "steps must be >= 0, got -1"),
        (dict(accountant="moments"), ValueError, "unknown accountant 'moments'; expected one of pld, rdp"),
        (dict(dataset_size=100), ValueError, "dataset_size and max_batch_size go together"),
        (dict(dataset_size=100, max_batch_size=20, accountant="rdp"), ValueError,
         "accountant='rdp' has no truncated Poisson sampling"),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=message):
            jbp.privacy.epsilon(**{**ok, **change})
    budget = dict(sample_rate=0.1, steps=10, delta=1e-5)
    with pytest.raises(ValueError, match="epsilon must be > 0, got 0.0"):
        jbp.privacy.noise_multiplier(epsilon=0.0, **budget)
    with pytest.raises(ValueError, match=r"epsilon=0.01 cannot be met: even noise_multiplier=10000 gives"):
        jbp.privacy.noise_multiplier(epsilon=0.01, sample_rate=1.0, steps=100_000, delta=1e-5, accountant="rdp")
    for args, message in [
        ((0.0, 1.0), "clip_norm must be > 0, got 0.0"),
        ((-1.0, 1.0), "clip_norm must be > 0, got -1.0"),
        ((1.0, -0.1), "noise_multiplier must be >= 0"),
        ((1.0, 1.0, 1.0), r"delta must lie in \(0, 1\), got 1.0"),
        ((1.0, 1.0, 1e-5, 0), "max_batch_size must be >= 1, got 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            jbp.DPSGD(*args)


# ----------------------------------------------------------------------------- the mechanism

#: Draws of each statistical test; its tolerances are 5 standard errors (a fixed key, so
#: the test is deterministic; 5 SE leaves a correct implementation 1 chance in ~2 million).
DRAWS = 4000


def test_poisson_sampling_has_rate_q_and_truncates_to_a_random_subset():
    n, batch, keys = 200, 20, jax.random.split(jax.random.key(0), DRAWS)
    q = batch / n
    idx, mask = jax.vmap(lambda k: jbp.privacy.sample(k, n, batch, 60))(keys)
    counts = np.asarray(mask.sum(axis=1))
    se = np.sqrt(n * q * (1 - q) / DRAWS)
    assert abs(counts.mean() - n * q) < 5 * se
    # Binomial, not a fixed batch: the variance n q (1 - q) = 18 (SE of a variance ~ 18 sqrt(2/DRAWS)).
    assert abs(counts.var() - n * q * (1 - q)) < 5 * n * q * (1 - q) * np.sqrt(2 / DRAWS)
    joined = np.zeros((DRAWS, n))
    np.put_along_axis(joined, np.asarray(idx), np.asarray(mask, float), axis=1)
    per_example = joined.mean(axis=0)  # each example's own rate
    assert np.max(np.abs(per_example - q)) < 5 * np.sqrt(q * (1 - q) / DRAWS)
    # Truncated at 15 (below the mean + 1 sd): min(Binomial, 15) rows, a random subset.
    idx, mask = jax.vmap(lambda k: jbp.privacy.sample(k, n, batch, 15))(keys)
    counts = np.asarray(mask.sum(axis=1))
    k = np.arange(n + 1)
    expected = np.sum(np.minimum(k, 15) * stats.binom.pmf(k, n, q))
    assert counts.max() == 15 and abs(counts.mean() - expected) < 5 * np.sqrt(18 / DRAWS)
    joined = np.zeros((DRAWS, n))
    np.put_along_axis(joined, np.asarray(idx), np.asarray(mask, float), axis=1)
    rate = expected / n
    assert np.max(np.abs(joined.mean(axis=0) - rate)) < 5 * np.sqrt(rate * (1 - rate) / DRAWS)


def test_the_noise_is_gaussian_with_std_sigma_clip_over_the_expected_batch():
    """With q = 1 every example is in every step, so noisy * B - clipped sum is the noise alone."""
    net = jbp.MLP((10, 40, 20), activation="tanh", loss="cross_entropy")
    params, x, y = problem(net, 16, np.float64)
    dp = jbp.DPSGD(clip_norm=0.7, noise_multiplier=1.3)

    @jax.jit
    def noise_of(keys):
        noisy = jax.vmap(lambda k: jbp.privacy.noisy_clipped_grad(net, dp, 16, params, x, y, k)[1])(keys)
        clipped = jbp.clipped_grad(net, params, x, y, 0.7)[1]
        return jnp.concatenate([(g * 16 - c * 16).reshape(10, -1) for g, c in
                                zip(jax.tree.leaves(noisy), jax.tree.leaves(clipped))], axis=1)

    noise = np.asarray(noise_of(jax.random.split(jax.random.key(1), 10))).ravel()
    std, m = 1.3 * 0.7, noise.size  # 12,600 draws
    assert m == 10 * (40 * 10 + 40 + 20 * 40 + 20)
    assert abs(noise.std() / std - 1) < 5 / np.sqrt(2 * m)  # SE of a sample std: std / sqrt(2m)
    assert abs(noise.mean()) < 5 * std / np.sqrt(m)
    # Gaussian: its fourth moment is 3 std^4 (SE sqrt(96/m) std^4)
    assert abs(np.mean(noise**4) / std**4 - 3) < 5 * np.sqrt(96 / m)


# ----------------------------------------------------------------------------- fit


def _data():
    net = jbp.MLP((4, 8, 3), activation="relu", loss="cross_entropy")
    params, x, y = problem(net, 60, np.float64)
    return net, params, x, y


def test_without_noise_clipping_or_sampling_it_is_plain_full_batch_training():
    net, params, x, y = _data()
    opt = optax.sgd(0.1)
    dp = jbp.DPSGD(clip_norm=1e6, noise_multiplier=0.0)
    private, h = jbp.fit(net, params, x, y, optimizer=opt, epochs=3, key=jax.random.key(0), privacy=dp)
    plain, _ = jbp.fit(net, params, x, y, optimizer=opt, epochs=3)
    assert_grads_close(private, plain, 1e-12)
    assert int(h.privacy.steps) == 3 and h.epsilon() == np.inf


def test_a_private_run_resumes_exactly_and_reports_its_epsilon():
    net, params, x, y = _data()
    opt, key = optax.adam(1e-2), jax.random.key(3)
    dp = jbp.DPSGD(clip_norm=0.5, noise_multiplier=1.2, delta=1e-4)
    whole, hw = jbp.fit(net, params, x, y, optimizer=opt, epochs=2, batch_size=10, key=key, privacy=dp)
    half, h1 = jbp.fit(net, params, x, y, optimizer=opt, epochs=1, batch_size=10, key=key, privacy=dp)
    split, h2 = jbp.fit(net, half, x, y, optimizer=opt, epochs=1, batch_size=10, key=key, privacy=dp,
                        opt_state=h1.opt_state, start_epoch=1)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split)):
        np.testing.assert_array_equal(a, b)
    assert int(hw.privacy.steps) == int(h2.privacy.steps) == 12 and int(h1.privacy.steps) == 6
    b_max = dp.max_batch(60, 10)
    # the smallest batch that more are drawn for with probability <= OVERFLOW_PROBABILITY
    assert stats.binom.sf(b_max, 60, 1 / 6) <= jbp.privacy.OVERFLOW_PROBABILITY < stats.binom.sf(b_max - 1, 60, 1 / 6)
    want = jbp.privacy.epsilon(noise_multiplier=1.2, sample_rate=1 / 6, steps=12, delta=1e-4,
                               dataset_size=60, max_batch_size=b_max)
    assert hw.epsilon() == want and hw.privacy.delta == 1e-4
    assert hw.epsilon(delta=1e-6) > want


def test_fit_refuses_what_privacy_cannot_honour():
    net, params, x, y = _data()
    dp, opt = jbp.DPSGD(1.0, 1.0), optax.sgd(0.1)
    with pytest.raises(ValueError, match="tol cannot be used with privacy"):
        jbp.fit(net, params, x, y, optimizer=opt, epochs=1, batch_size=10, key=jax.random.key(0), tol=0.1, privacy=dp)
    with pytest.raises(ValueError, match="privacy needs key"):
        jbp.fit(net, params, x, y, optimizer=opt, epochs=1, privacy=dp)
    with pytest.raises(TypeError, match="privacy must be a jbp.DPSGD or None, got float 1.0"):
        jbp.fit(net, params, x, y, optimizer=opt, epochs=1, key=jax.random.key(0), privacy=1.0)
    with pytest.raises(ValueError, match="this run was not private"):
        jbp.fit(net, params, x, y, optimizer=opt, epochs=1)[1].epsilon()


def _bars(n=48, seed=0):
    """4x4 images of a bright row (class 0) or a bright column (class 1), plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    images = 0.3 * rng.normal(size=(n, 4, 4, 1))
    where = rng.integers(0, 4, size=n)
    for i in range(n):
        if y[i] == 0:
            images[i, where[i], :, 0] += 1
        else:
            images[i, :, where[i], 0] += 1
    return jnp.asarray(images, jnp.float32), jnp.asarray(y)


CNN = jbp.Sequential((4, 4, 1), [Conv2D(4, (3, 3)), "relu", MaxPool2D(2), Flatten(), Dropout(0.2), Dense(2)],
                     loss="cross_entropy")


def test_a_private_cnn_with_dropout_trains_and_reports_its_epsilon():
    """DP-SGD of a network of layers, dropout on (one compilation: the clipping itself is
    checked against autodiff in test_per_example.py, the resumed run on an MLP above)."""
    x, y = _bars()
    params = CNN.init(jax.random.key(0), np.float32)
    dp = jbp.DPSGD(clip_norm=1.0, noise_multiplier=1.0)
    # validation on the training data itself: its accuracy after each epoch, inside the compiled loop
    _, h = jbp.fit(CNN, params, x, y, optimizer=optax.sgd(1.0), epochs=20, batch_size=16, key=jax.random.key(1),
                   privacy=dp, validation=(x, y))
    assert float(h.val_accuracy[0]) < 0.7 and float(h.val_accuracy[-1]) >= 0.9  # chance is 1/2
    # the accounting of the MLP's runs above (where epsilon() is checked against dp-accounting's)
    assert jax.tree.map(float, h.privacy) == jbp.privacy.PrivacySpent(
        60.0, 1.0, 1.0, 1 / 3, 48, dp.max_batch(48, 16), 1e-5)
    assert h.reason == "ran all epochs" and 1 < h.epsilon() < 100


def test_fit_refuses_a_layer_it_cannot_clip_before_compiling():
    net = jbp.Sequential((4,), [Dense(4), MyScale(), Dense(2)], loss="cross_entropy")
    params = net.init(jax.random.key(0), np.float32)
    x, y = jnp.ones((8, 4), jnp.float32), jnp.zeros(8, jnp.int32)
    with pytest.raises(ValueError, match=r"layers\[1\] \(MyScale\) has parameters but no per_example_sq_norms"):
        jbp.fit(net, params, x, y, optimizer=optax.sgd(0.1), epochs=1, batch_size=4, key=jax.random.key(0),
                privacy=jbp.DPSGD(1.0, 1.0))


# ----------------------------------------------------------------------------- command line

CLI = ["train", "--dataset", "moons", "--hidden", "8", "--epochs", "2", "--batch-size", "40", "--dp-clip", "1"]


def test_cli_trains_privately_and_reports_epsilon(tmp_path, capsys):
    """--dp-epsilon finds the noise for the budget over the planned epochs; ε is printed
    and written to metrics.json."""
    assert main(CLI + ["--dp-epsilon", "4", "--dp-delta", "1e-6", "--no-check", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    p = json.loads((tmp_path / "metrics.json").read_text())["privacy"]
    want = jbp.privacy.epsilon(noise_multiplier=p["noise_multiplier"], sample_rate=40 / 800, steps=40,
                               delta=1e-6, dataset_size=800, max_batch_size=p["max_batch_size"])
    assert p["epsilon"] == want and 3.9 < want <= 4 and p["steps"] == 40
    assert f"privacy: ε = {want:.3f} at δ = 1e-06" in out


def test_the_cli_checks_gradients_on_random_data_under_dp():
    data = jbp.datasets.load("moons")
    net = jbp.MLP((2, 8, 2), loss="cross_entropy")
    x, y = cli_privacy.random_batch(net, data, 64, seed=0)
    assert x.shape == (64, 2) and x.dtype == data.x_train.dtype and y.dtype == data.y_train.dtype
    assert set(np.unique(y)) <= {0, 1} and not np.isin(x, data.x_train).any()
    images = types.SimpleNamespace(x_train=np.zeros((3, 4, 4, 1), np.float32), y_train=np.zeros(3, np.int32))
    x, y = cli_privacy.random_batch(CNN, images, 5, seed=0)  # a network of layers: its input shape
    assert x.shape == (5, 4, 4, 1) and set(np.unique(y)) <= {0, 1}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dp-noise", "1", "--dp-epsilon", "1"], "give --dp-noise or --dp-epsilon, not both"),
        (["--dp-delta", "1"], "DP-SGD needs --dp-noise σ or --dp-epsilon ε"),
        (["--dp-noise", "1", "--dp-delta", "1"], r"delta must lie in (0, 1), got 1.0"),
        (["--dp-noise", "-1"], "noise_multiplier must be >= 0"),
        (["--dp-noise", "1", "--tol", "0.1"], "--tol cannot be used with DP-SGD"),
        (["--dp-epsilon", "1e-9"], "epsilon=1e-09 cannot be met"),
    ],
)
def test_cli_privacy_mistakes_are_one_line_and_exit_2(extra, message, capsys):
    assert main(CLI + extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jbp: error: ") and message in err


def test_cli_needs_a_clip_norm(capsys):
    assert main(["train", "--dataset", "xor", "--dp-noise", "1"]) == 2
    assert "DP-SGD needs --dp-clip C" in capsys.readouterr().err
