"""Learning rules: where each equals backprop exactly, where it differs, and how it trains
(train_step, make_train_step, fit, sweep, jit, vmap)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jbp
from jbp import rules
from jbp.layers import Dense, Dropout, Flatten
from helpers import RTOL, assert_grads_close, layers_problem, problem

# Two hidden layers, so that a rule's transport runs twice (and DFA skips a layer).
NET = jbp.MLP((3, 5, 4, 2), activation="tanh", loss="cross_entropy")
SHALLOW = jbp.MLP((3, 5, 2), activation="tanh", loss="cross_entropy")
DTYPES = [np.float64, np.float32]
KEY = jax.random.key(7)
ALL_RULES = {
    "bp": rules.backprop(),
    "fa": rules.feedback_alignment(KEY),
    "ss": rules.sign_symmetry(),
    "dfa": rules.direct_feedback_alignment(KEY),
}


def _close(got, want, dtype):
    """Every leaf within the dtype's tolerance, relative to the leaf's largest entry (the
    suite's gradient metric): an entry that cancels to 1e-8 of its leaf's scale differs
    in its last digits between two compiled programs that round in another order."""
    assert_grads_close(got, want, RTOL[np.dtype(dtype)])


def _rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_feedback_alignment_with_B_equal_W_is_backprop(dtype):
    params, x, y = problem(NET, 6, dtype)
    feedback = tuple(layer.W for layer in params[1:])
    loss, update = rules.loss_and_update(NET, ALL_RULES["fa"], params, feedback, x, y)
    want_loss, grads = NET.loss_and_grad(params, x, y)
    _close((loss, update), (want_loss, grads), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sign_symmetry_on_weights_of_plus_minus_one_is_backprop(dtype):
    params, x, y = problem(NET, 6, dtype)
    params = tuple(jbp.Layer(W=jnp.where(l.W >= 0, 1.0, -1.0).astype(dtype), b=l.b) for l in params)
    _, update = rules.loss_and_update(NET, ALL_RULES["ss"], params, (), x, y)
    _close(update, NET.loss_and_grad(params, x, y)[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_feedback_alignment_on_one_hidden_layer_with_B_equal_W_out_is_backprop(dtype):
    params, x, y = problem(SHALLOW, 6, dtype)
    rule = ALL_RULES["dfa"]
    _, update = rules.loss_and_update(SHALLOW, rule, params, (params[1].W,), x, y)
    _close(update, SHALLOW.loss_and_grad(params, x, y)[1], dtype)


def test_direct_feedback_alignment_reaches_only_the_last_hidden_layer_as_backprop():
    """With B_l = W_out for the last hidden layer, DFA gives it backprop's update, but the
    first hidden layer receives the output delta, not the delta of the layer above."""
    params, x, y = problem(NET, 6, np.float64)
    rng = np.random.default_rng(1)
    feedback = (jnp.asarray(rng.normal(size=(2, 5))), params[2].W)
    _, update = rules.loss_and_update(NET, ALL_RULES["dfa"], params, feedback, x, y)
    grads = NET.loss_and_grad(params, x, y)[1]
    _close(update[1:], grads[1:], np.float64)
    assert _rel_diff(update[0].W, grads[0].W) > 0.1


@pytest.mark.parametrize("name", list(ALL_RULES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_rules_output_layer_update_is_backprops_and_hidden_ones_differ(name, dtype):
    rule = ALL_RULES[name]
    params, x, y = problem(NET, 6, dtype)
    _, update = rules.loss_and_update(NET, rule, params, rule.init(NET, params), x, y)
    grads = NET.loss_and_grad(params, x, y)[1]
    _close(update[-1], grads[-1], dtype)
    for l in range(NET.n_layers - 1):
        if name == "bp":
            _close(update[l], grads[l], dtype)
        else:
            assert _rel_diff(update[l].W, grads[l].W) > 0.1, f"rule {name}: layer {l + 1} is backprop's"


def test_init_draws_feedback_of_the_needed_shapes_from_the_key():
    params = NET.init(jax.random.key(0), dtype=jnp.float32)
    fa = ALL_RULES["fa"].init(NET, params)
    assert [B.shape for B in fa] == [(4, 5), (2, 4)] and all(B.dtype == jnp.float32 for B in fa)
    assert [B.shape for B in ALL_RULES["dfa"].init(NET, params)] == [(2, 5), (2, 4)]
    assert ALL_RULES["bp"].init(NET, params) == () == ALL_RULES["ss"].init(NET, params)
    chex.assert_trees_all_equal(rules.feedback_alignment(KEY).init(NET, params), fa)
    other = rules.feedback_alignment(jax.random.key(8)).init(NET, params)
    assert all(_rel_diff(a, b) > 0.5 for a, b in zip(other, fa))
    doubled = rules.feedback_alignment(KEY, scale=2.0).init(NET, params)
    chex.assert_trees_all_close(doubled, jax.tree.map(lambda B: 2 * B, fa), rtol=1e-6)
    # rules differing only in their key are equal descriptions: one compilation serves both
    assert rules.feedback_alignment(KEY) == rules.feedback_alignment(jax.random.key(8))
    assert hash(rules.feedback_alignment(KEY)) == hash(rules.feedback_alignment(jax.random.key(8)))


def test_backward_takes_the_transport_as_a_parameter():
    """jbp.backward with a rule's transport is the rule's update (BP3 is one function)."""
    params, x, y = problem(NET, 6, np.float64)
    rule = ALL_RULES["dfa"]
    feedback = rule.init(NET, params)
    _, cache = NET.forward(params, x)
    B, direct = rule.transport(params, feedback)
    got = jbp.backward(params, cache, NET.output_delta(cache, y), NET.activations, feedback=B, direct=direct)
    _close(got, rules.loss_and_update(NET, rule, params, feedback, x, y)[1], np.float64)


def test_rules_under_jit_and_vmap():
    params, x, y = problem(NET, 6, np.float32)
    rule = ALL_RULES["fa"]
    feedbacks = [rules.feedback_alignment(k).init(NET, params) for k in jax.random.split(KEY, 3)]
    eager = [rules.loss_and_update(NET, rule, params, fb, x, y) for fb in feedbacks]
    jitted = jax.jit(rules.loss_and_update, static_argnums=(0, 1))
    _close(jitted(NET, rule, params, feedbacks[0], x, y), eager[0], np.float32)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *feedbacks)
    batched = jax.vmap(lambda fb: rules.loss_and_update(NET, rule, params, fb, x, y))(stacked)
    for k, want in enumerate(eager):
        _close(jax.tree.map(lambda a: a[k], batched), want, np.float32)


def test_train_step_and_make_train_step_take_the_rules_update():
    params, x, y = problem(NET, 6, np.float64)
    rule = ALL_RULES["dfa"]
    feedback = rule.init(NET, params)
    opt = optax.sgd(0.1)
    got, _, loss = jbp.train_step(NET, opt, params, opt.init(params), x, y, rule=rule, feedback=feedback)
    want_loss, update = rules.loss_and_update(NET, rule, params, feedback, x, y)
    _close((got, loss), (jbp.gradient_descent(params, update, 0.1), want_loss), np.float64)
    step = jbp.make_train_step(NET, opt, rule=rule, donate=False)
    stepped, _, _ = step(params, opt.init(params), x, y, feedback)
    _close(stepped, got, np.float64)


def test_fit_with_a_rule_is_the_python_loop_of_its_updates():
    params, x, y = problem(NET, 6, np.float64)
    rule = ALL_RULES["ss"]
    got, h = jbp.fit(NET, params, x, y, optimizer=optax.sgd(0.2), epochs=4, rule=rule)
    want = params
    for _ in range(4):
        want = jbp.gradient_descent(want, rules.loss_and_update(NET, rule, want, (), x, y)[1], 0.2)
    _close(got, want, np.float64)


def test_fit_draws_feedback_from_the_rule_or_takes_it_given():
    params, x, y = problem(NET, 8, np.float32)
    rule = ALL_RULES["fa"]
    kwargs = dict(optimizer=optax.adam(1e-2), epochs=3, batch_size=4, key=jax.random.key(1), rule=rule)
    drawn, _ = jbp.fit(NET, params, x, y, **kwargs)
    given, _ = jbp.fit(NET, params, x, y, feedback=rule.init(NET, params), **kwargs)
    chex.assert_trees_all_equal(drawn, given)
    as_backprop, _ = jbp.fit(NET, params, x, y, feedback=tuple(l.W for l in params[1:]), **kwargs)
    assert _rel_diff(as_backprop[0].W, drawn[0].W) > 1e-3  # B = W is another run: backprop's first step


def test_sweep_and_vmapped_fit_with_a_rule():
    params, x, y = problem(NET, 8, np.float64)
    opt = optax.sgd(0.2)
    got, h = jbp.sweep(NET, params, x, y, optimizer=optax.sgd, hyperparams={"learning_rate": jnp.asarray([0.05, 0.2])},
                       epochs=3, rule=ALL_RULES["dfa"])
    single, single_h = jbp.fit(NET, params, x, y, optimizer=opt, epochs=3, rule=ALL_RULES["dfa"])
    _close(jax.tree.map(lambda a: a[1], (got, h.loss)), (single, single_h.loss), np.float64)
    assert _rel_diff(got[0].W[0], single[0].W) > 1e-3  # member 0 has its own learning rate
    # vmap over the rule's key: one feedback draw per member
    keys = jax.random.split(KEY, 2)
    ensemble = jax.vmap(lambda k: jbp.fit(NET, params, x, y, optimizer=opt, epochs=3,
                                          rule=rules.feedback_alignment(k))[0])(keys)
    for k, key in enumerate(keys):
        single, _ = jbp.fit(NET, params, x, y, optimizer=opt, epochs=3, rule=rules.feedback_alignment(key))
        _close(jax.tree.map(lambda a: a[k], ensemble), single, np.float64)


def test_bad_rules_and_feedback_are_refused_at_the_boundary():
    params, x, y = problem(NET, 4, np.float64)
    opt = optax.sgd(0.1)
    with pytest.raises(TypeError, match="rule must be a jbp.rules.Rule .* got str 'fa'"):
        jbp.fit(NET, params, x, y, optimizer=opt, epochs=1, rule="fa")
    with pytest.raises(ValueError, match=r"feedback\[0\] has shape \(5, 4\) but rule.init\(net, params\) of rule 'fa'.*\(4, 5\)"):
        jbp.fit(NET, params, x, y, optimizer=opt, epochs=1, rule=ALL_RULES["fa"],
                feedback=(jnp.zeros((5, 4)), jnp.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"feedback has structure PyTreeDef\(\(\)\) but rule.init\(net, params\) of rule 'dfa'"):
        rules.loss_and_update(SEQ, ALL_RULES["dfa"], _as_layers(params), (), x, y)
    with pytest.raises(ValueError, match="rule 'ss' replaces the backward pass.*loss_and_grad"):
        jbp.fit(NET, params, x, y, optimizer=opt, epochs=1, rule=ALL_RULES["ss"], loss_and_grad=NET.loss_and_grad)
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        rules.feedback_alignment(3)
    with pytest.raises(ValueError, match="scale must be > 0, got -1.0"):
        rules.direct_feedback_alignment(KEY, scale=-1.0)
    with pytest.raises(ValueError, match="unknown rule 'xx'; expected one of bp, fa, ss, dfa"):
        rules.by_name("xx")
    with pytest.raises(ValueError, match="rule 'fa' draws random feedback weights and needs a key"):
        rules.by_name("fa")
    _, cache = NET.forward(params, x)
    with pytest.raises(ValueError, match=r"feedback has 1 matrices but the network has 2 hidden layers"):
        jbp.backward(params, cache, NET.output_delta(cache, y), NET.activations, feedback=(params[1].W,))
    with pytest.raises(ValueError, match=r"feedback\[1\] must have shape \(2, 4\) \(n_L, n_l\), got"):
        jbp.deltas(params, cache, NET.output_delta(cache, y), NET.activations,
                   feedback=(jnp.zeros((2, 5)), jnp.zeros((4, 2))), direct=True)


# NET written as a network of layers: the same weights in one entry per layer.
SEQ = jbp.Sequential((3,), [Dense(5), "tanh", Dense(4), "tanh", Dense(2)], loss="cross_entropy")


def _as_layers(params):
    return (params[0], (), params[1], (), params[2])


@pytest.mark.parametrize("name", list(ALL_RULES))
def test_a_sequential_of_dense_and_activation_layers_is_the_same_network_as_the_mlp(name):
    params, x, y = problem(NET, 6, np.float64)
    rule = ALL_RULES[name]
    feedback = rule.init(NET, params)
    chex.assert_trees_all_equal(rule.init(SEQ, _as_layers(params)), feedback)  # same shapes, schemes, keys
    loss, update = rules.loss_and_update(SEQ, rule, _as_layers(params), feedback, x, y)
    want_loss, want = rules.loss_and_update(NET, rule, params, feedback, x, y)
    _close((loss, update), (want_loss, _as_layers(want)), np.float64)


def test_dropout_flatten_and_dense_after_dense_carry_the_rules_delta():
    """Feedback alignment with B = W is backprop, also through dropout's mask (the same
    key), a Flatten at the input and two dense layers in a row; make_train_step passes
    the key."""
    net = jbp.Sequential((1, 3), [Flatten(), Dense(5), "relu", Dropout(0.4), Dense(4), Dense(2)],
                         loss="cross_entropy")
    params = net.init(jax.random.key(0), jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 1, 3)))
    y = jnp.asarray([0, 1, 1, 0, 1, 0])
    key = jax.random.key(5)
    rule = ALL_RULES["fa"]
    assert [B.shape for B in rule.init(net, params)] == [(4, 5), (2, 4)]
    feedback = (params[4].W, params[5].W)
    got = rules.loss_and_update(net, rule, params, feedback, x, y, key=key, train=True)
    _close(got, net.loss_and_grad(params, x, y, key=key, train=True), np.float64)
    other_key = rules.loss_and_update(net, rule, params, feedback, x, y, key=jax.random.key(6), train=True)[1]
    assert _rel_diff(other_key[1].W, got[1][1].W) > 1e-3  # the mask is the key's
    opt = optax.sgd(0.1)
    step = jbp.make_train_step(net, opt, rule=rule, donate=False)
    stepped, _, loss = step(params, opt.init(params), x, y, feedback, key)
    _close((stepped, loss), (jbp.gradient_descent(params, got[1], 0.1), got[0]), np.float64)


def test_a_network_of_other_layers_is_refused_naming_the_layer():
    with_norm = jbp.Sequential((3,), [Dense(5), "tanh", jbp.layers.LayerNorm(), Dense(2)], loss="cross_entropy")
    params = with_norm.init(jax.random.key(0))
    with pytest.raises(TypeError, match=r"rule 'ss' needs every layer with parameters to have weights \(a weights "
                                        r"attribute, as Dense, Perceptron, Conv1D and Conv2D have\), but its "
                                        r"layers\[2\] is a LayerNorm"):
        rules.sign_symmetry().init(with_norm, params)
    with pytest.raises(TypeError, match=r"rule 'fa' needs .* but its layers\[2\] is a LayerNorm"):
        jbp.make_train_step(with_norm, optax.sgd(0.1), rule=ALL_RULES["fa"])
    x, y = jnp.zeros((4, 3)), jnp.asarray([0, 1, 0, 1])
    with pytest.raises(TypeError, match=r"rule 'dfa' needs .* but its layers\[2\] is a LayerNorm"):
        jbp.fit(with_norm, params, x, y, optimizer=optax.sgd(0.1), epochs=1, rule=ALL_RULES["dfa"])
    jbp.rules.backprop().init(with_norm, params)  # backprop trains any network
    activations_only = jbp.Sequential((3,), ["tanh"])
    with pytest.raises(TypeError, match="rule 'fa' needs .* but it has no layer with weights"):
        ALL_RULES["fa"].init(activations_only, ())


# --- Rules on convolutions, and a rule written outside jbp. -------------------------------

CNN = jbp.Sequential((6, 6, 1), [jbp.layers.Conv2D(3, (3, 3)), "relu", jbp.layers.MaxPool2D((2, 2)),
                                 jbp.layers.Conv2D(4, (3, 3)), "tanh", Flatten(), Dense(2)], loss="cross_entropy")


def test_fa_and_ss_on_convolutions_are_backprop_where_their_feedback_is_the_kernel():
    """BP3 of a convolution under FA is the transposed convolution with B: B = W is backprop;
    sign symmetry on a kernel of ±1 is backprop."""
    params, x, y = layers_problem(CNN, 5, np.float64)
    want = CNN.loss_and_grad(params, x, y)
    fa = rules.feedback_alignment(KEY)
    assert [B.shape for B in fa.init(CNN, params)] == [params[3].W.shape, params[6].W.shape]
    _close(rules.loss_and_update(CNN, fa, params, (params[3].W, params[6].W), x, y), want, np.float64)
    signs = tuple(p._replace(W=jnp.where(p.W >= 0, 1.0, -1.0)) if p else p for p in params)
    _close(rules.loss_and_update(CNN, ALL_RULES["ss"], signs, (), x, y), CNN.loss_and_grad(signs, x, y), np.float64)
    for name in ("fa", "ss", "dfa"):
        update = rules.loss_and_update(CNN, ALL_RULES[name], params, ALL_RULES[name].init(CNN, params), x, y)[1]
        _close(update[6], want[1][6], np.float64)  # the last layer's update is backprop's
        assert _rel_diff(update[0].W, want[1][0].W) > 0.1, name


def test_dfa_projects_the_output_delta_to_each_layers_input_shape():
    params, x, y = layers_problem(CNN, 5, np.float64)
    dfa = ALL_RULES["dfa"]
    feedback = dfa.init(CNN, params)
    assert CNN.output_shapes[2] == (3, 3, 3) and CNN.output_shapes[5] == (36,)
    assert [B.shape for B in feedback] == [(2, 3 * 3 * 3), (2, 36)]  # (n_L, size of the layer's input)
    p = rules.forward_backward(CNN, dfa, params, feedback, x, y)
    # the second convolution's delta: the output delta projected to its input, then through
    # the max pool and the ReLU by their own backward
    dy_pool = (p.delta_out @ feedback[0]).reshape(5, 3, 3, 3)
    _, dx = CNN.layers[2].backward(params[2], p.cache.residuals[2], dy_pool)
    _, delta = CNN.layers[1].backward(params[1], p.cache.residuals[1], dx)
    _close(p.update[0], CNN.layers[0].backward(params[0], p.cache.residuals[0], delta)[0], np.float64)


@dataclasses.dataclass(frozen=True)
class RandomSigns:
    """Fixed random ±1 feedback, written as a user would, outside jbp: BP3 of every layer
    with weights above the first goes through fixed random signs, scaled like W."""

    seed: int = 0
    name = "random signs"

    def init(self, net, params):
        key = jax.random.key(self.seed)
        draws = []
        for l, i in enumerate(jbp.rules.weighted(net, "random signs")[1:]):
            W = params[i].W
            signs = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, l), shape=W.shape), 1.0, -1.0)
            draws.append((signs * jnp.std(W)).astype(W.dtype))
        return tuple(draws)

    def input_grad(self, layer, params, residuals, dy, B, delta_out):
        return jbp.rules.through(layer, params, B, residuals, dy)


def _bars(n, seed=0):
    """6x6 images: class 1 has a bright vertical bar, class 0 a horizontal one, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = 0.3 * rng.normal(size=(n, 6, 6, 1))
    where = rng.integers(0, 6, size=n)
    for k in range(n):
        if y[k]:
            x[k, :, where[k], 0] += 2.0
        else:
            x[k, where[k], :, 0] += 2.0
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)


def test_a_rule_written_outside_jbp_trains_an_mlp_and_a_cnn():
    rule = RandomSigns()
    mlp_params, x, y = problem(NET, 6, np.float64)
    # its BP3 is exactly the feedback given: B = W is backprop
    _close(rules.loss_and_update(NET, rule, mlp_params, tuple(l.W for l in mlp_params[1:]), x, y),
           NET.loss_and_grad(mlp_params, x, y), np.float64)
    x, y = _bars(64)
    flat = jbp.MLP((36, 16, 2), activation="tanh", loss="cross_entropy")
    for net, data in ((flat, (x.reshape(64, 36), y)), (CNN, (x, y))):
        params = net.init(jax.random.key(1), jnp.float32)
        trained, history = jbp.fit(net, params, *data, optimizer=optax.adam(3e-2), epochs=40, rule=rule)
        assert float(net.accuracy(trained, *data)) >= 0.9, type(net).__name__
        assert history.reason == "ran all epochs"
