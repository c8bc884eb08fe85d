"""fit(..., monitor=True): each per-layer statistic against a direct computation, one
compilation, and training unchanged by watching it."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp import rules
from jbp.layers import Dense, LayerNorm
from jbp.training.monitor import LAYER_STATS, angle
from helpers import layers_problem, problem

NET = jbp.MLP((3, 4, 3, 2), activation="relu", loss="cross_entropy")
SGD = optax.sgd(0.1)


def _norm(a):
    return np.linalg.norm(np.asarray(a, np.float64))


def _dead_unit_problem():
    """float64 params where hidden unit 0 of layer 1 is dead (its bias is far below any z)."""
    params, x, y = problem(NET, 6, np.float64)
    first = params[0]._replace(b=params[0].b.at[0].set(-100.0))
    return (first, *params[1:]), x, y


def test_full_batch_stats_are_the_direct_computation():
    """Two full-batch SGD epochs: one step each, so every statistic is that step's."""
    params, x, y = _dead_unit_problem()
    _, h = jbp.fit(NET, params, x, y, optimizer=SGD, epochs=2, monitor=True)
    assert set(h.layer_stats) == set(LAYER_STATS)
    p = params
    for epoch in range(2):
        _, g = NET.loss_and_grad(p, x, y)
        new = jbp.gradient_descent(p, g, 0.1)
        want = {
            "delta_norm": [_norm(gl.b) for gl in g],
            "grad_norm": [_norm(gl.W) for gl in g],
            "weight_norm": [_norm(l.W) for l in new],
            "update_ratio": [0.1 * _norm(gl.W) / _norm(l.W) for gl, l in zip(g, p)],
            "alignment": [0.0, 0.0, 0.0],
            "dead_fraction": [np.mean(np.all(np.asarray(a) == 0, axis=0)) for a in NET.forward(p, x)[1].xs[1:3]],
        }
        for name, values in want.items():
            got = h.layer_stats[name][epoch, : len(values)]
            np.testing.assert_allclose(got, values, rtol=1e-10, atol=0, err_msg=name)
        p = new
    # layer 1's unit 0 never fires; the softmax layer is not measured
    assert np.all(h.layer_stats["dead_fraction"][:, 0] >= 0.25)
    assert np.all(np.isnan(h.layer_stats["dead_fraction"][:, 2]))


def test_minibatch_norms_are_the_last_steps_and_dead_units_are_counted_over_every_step():
    """lr 0 keeps the parameters. The norms are those of the epoch's last batch; a unit
    that fires on one example only (in the first batch) is alive, one that never fires is not."""
    params, x, y = problem(NET, 6, np.float64)
    key = jax.random.key(3)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), 6)).reshape(2, 3)
    x = x.at[order[0][0], 0].set(10.0)  # unit 0 fires on this example alone (z = x_0 - 5), unit 1 never (z = -1)
    W = params[0].W.at[:2].set(jnp.asarray([[1.0, 0, 0], [0, 0, 0]]))
    b = params[0].b.at[:2].set(jnp.asarray([-5.0, -1]))
    params = (jbp.Layer(W, b), *params[1:])
    _, h = jbp.fit(NET, params, x, y, optimizer=optax.sgd(0.0), epochs=1, batch_size=3, key=key, monitor=True)
    last = NET.loss_and_grad(params, x[order[1]], y[order[1]])[1]
    np.testing.assert_allclose(h.layer_stats["delta_norm"][0], [_norm(l.b) for l in last], rtol=1e-10)
    np.testing.assert_allclose(h.layer_stats["grad_norm"][0], [_norm(l.W) for l in last], rtol=1e-10)
    np.testing.assert_allclose(h.layer_stats["update_ratio"][0], [0.0, 0.0, 0.0], rtol=0, atol=0)
    fired = np.asarray(NET.forward(params, x)[1].xs[1]) != 0
    assert fired[:, 0].sum() == 1 and not fired[order[1], 0].any() and not fired[:, 1].any()
    np.testing.assert_allclose(h.layer_stats["dead_fraction"][0, 0], np.mean(~fired.any(0)), rtol=1e-12)


def test_alignment_is_the_angle_between_the_rules_update_and_the_gradient():
    params, x, y = problem(NET, 6, np.float64)
    rule = rules.feedback_alignment(jax.random.key(0))
    feedback = rule.init(NET, params)
    _, h = jbp.fit(NET, params, x, y, optimizer=SGD, epochs=1, rule=rule, feedback=feedback, monitor=True)
    _, update = rules.loss_and_update(NET, rule, params, feedback, x, y)
    _, grads = NET.loss_and_grad(params, x, y)
    cos = [np.vdot(u.W, g.W) / (_norm(u.W) * _norm(g.W)) for u, g in zip(update, grads)]
    want = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    want[-1] = 0.0  # the output layer's update is the gradient
    np.testing.assert_allclose(h.layer_stats["alignment"][0], want, rtol=1e-8)
    assert np.all(want[:-1] > 1)
    # the speed of learning under a rule is that of the rule's update
    np.testing.assert_allclose(h.layer_stats["delta_norm"][0], [_norm(u.b) for u in update], rtol=1e-10)


def test_angle_is_exact_at_0_and_180_and_90_for_a_zero_vector():
    a = jnp.asarray([[1e-3, 2.0], [3.0, -4.0]], jnp.float32)
    assert float(angle(a, a)) == 0.0
    np.testing.assert_allclose(float(angle(a, 7 * a)), 0.0, atol=1e-4)  # degrees; float32 rounding
    np.testing.assert_allclose(float(angle(a, -a)), 180.0, rtol=1e-6)
    np.testing.assert_allclose(float(angle(jnp.asarray([1.0, 0]), jnp.asarray([0, 2.0]))), 90.0, rtol=1e-6)
    np.testing.assert_allclose(float(angle(a, jnp.zeros_like(a))), 90.0, rtol=1e-6)


def test_one_compilation_and_training_unchanged(compiles):
    params, x, y = problem(NET, 8, np.float32)
    kwargs = dict(optimizer=optax.adam(1e-2), epochs=3, batch_size=4, key=jax.random.key(1))
    watched, h = jbp.fit(NET, params, x, y, monitor=True, **kwargs)
    other = jax.tree.map(lambda a: 2 * a, params)
    _, h2 = jbp.fit(NET, other, x + 1, y, monitor=True, **kwargs)  # new values, same shapes
    assert compiles["jit(_fit)"] == 1, dict(compiles)
    assert all(v.shape == (3, 3) and v.dtype == jnp.float32 for v in h.layer_stats.values())
    assert not np.allclose(h.layer_stats["grad_norm"], h2.layer_stats["grad_norm"])
    plain, h_plain = jbp.fit(NET, params, x, y, **kwargs)
    assert h_plain.layer_stats is None
    chex.assert_trees_all_close((watched, h.loss), (plain, h_plain.loss), rtol=1e-5)


def test_epochs_not_run_are_nan_and_vmap_adds_an_axis():
    net = jbp.MLP((3, 4, 2), activation="tanh", loss="cross_entropy")
    params, x, y = problem(net, 6, np.float64)
    _, h = jbp.fit(net, params, x, y, optimizer=optax.sgd(1.0), epochs=50, tol=0.5, monitor=True)
    stop = int(h.epoch)
    assert 0 < stop < 50
    assert np.all(np.isfinite(h.layer_stats["grad_norm"][:stop]))
    assert np.all(np.isnan(h.layer_stats["grad_norm"][stop:]))
    assert np.all(np.isnan(h.layer_stats["dead_fraction"]))  # tanh and softmax have no dead units
    keys = jax.random.split(jax.random.key(0), 2)
    _, hv = jax.vmap(lambda k: jbp.fit(net, net.init(k, jnp.float64), x, y, optimizer=optax.sgd(1.0), epochs=4,
                                       monitor=True))(keys)
    assert hv.layer_stats["weight_norm"].shape == (2, 4, 2)


def test_a_sequential_records_the_mlps_statistics():
    """NET written as layers, the same weights, under a rule: the same training and statistics."""
    seq = jbp.Sequential((3,), [Dense(4), "relu", Dense(3), "relu", Dense(2)], loss="cross_entropy")
    params, x, y = problem(NET, 8, np.float64)
    as_layers = lambda p: (p[0], (), p[1], (), p[2])
    rule = rules.direct_feedback_alignment(jax.random.key(0))
    kwargs = dict(optimizer=optax.adam(1e-2), epochs=2, rule=rule, monitor=True)  # mini-batches: tests/test_diagnostics.py
    got, h = jbp.fit(seq, as_layers(params), x, y, **kwargs)
    want, h_mlp = jbp.fit(NET, params, x, y, **kwargs)
    chex.assert_trees_all_close((got, h.loss), (as_layers(want), h_mlp.loss), rtol=1e-10)
    for name in LAYER_STATS:
        np.testing.assert_allclose(h.layer_stats[name], h_mlp.layer_stats[name], rtol=1e-10, err_msg=name)
    assert np.all(h.layer_stats["alignment"][:, :2] > 1)


def test_bad_monitor_arguments_are_refused():
    params, x, y = problem(NET, 4, np.float64)
    with pytest.raises(TypeError, match="monitor must be True or False, got int 1"):
        jbp.fit(NET, params, x, y, optimizer=SGD, epochs=1, monitor=1)
    with pytest.raises(ValueError, match="monitor=True reads the hand-derived backward.*loss_and_grad"):
        jbp.fit(NET, params, x, y, optimizer=SGD, epochs=1, monitor=True, loss_and_grad=NET.loss_and_grad)
    normed = jbp.Sequential((3,), [Dense(4), LayerNorm(), Dense(2)], loss="cross_entropy")
    with pytest.raises(TypeError, match=r"monitor=True needs every layer with parameters to have weights .* but its "
                                        r"layers\[1\] is a LayerNorm"):
        jbp.fit(normed, normed.init(jax.random.key(0), jnp.float64), x, y, optimizer=SGD, epochs=1, monitor=True)


def test_a_cnn_records_every_layer_with_weights():
    """Two full-batch SGD epochs of a CNN: one column per layer with weights, each the
    direct computation; the units of the ReLU after the first convolution are counted."""
    cnn = jbp.Sequential((5, 5, 1), [jbp.layers.Conv2D(2, (3, 3)), "relu", jbp.layers.Flatten(), Dense(2)],
                         loss="cross_entropy")
    params, x, y = layers_problem(cnn, 6, np.float64)
    _, h = jbp.fit(cnn, params, x, y, optimizer=SGD, epochs=2, monitor=True)
    assert all(h.layer_stats[name].shape == (2, 2) for name in LAYER_STATS)
    _, g = cnn.loss_and_grad(params, x, y)
    new = jbp.gradient_descent(params, g, 0.1)
    for column, i in enumerate((0, 3)):
        np.testing.assert_allclose(h.layer_stats["grad_norm"][0, column], _norm(g[i].W), rtol=1e-10)
        np.testing.assert_allclose(h.layer_stats["delta_norm"][0, column], _norm(g[i].b), rtol=1e-10)
        np.testing.assert_allclose(h.layer_stats["weight_norm"][0, column], _norm(new[i].W), rtol=1e-10)
    relu_out = np.asarray(cnn.forward(params, x)[1].outputs[1]).reshape(6, -1)
    np.testing.assert_allclose(h.layer_stats["dead_fraction"][0, 0], np.mean(np.all(relu_out == 0, axis=0)))
    assert np.isnan(h.layer_stats["dead_fraction"][0, 1])
