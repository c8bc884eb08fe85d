"""jbp.mutation_test on a jbp.Sequential (jbp/verify/layer_mutations.py): each classic
mistake, planted in jbp's dense and activation layers, is caught with exactly the
leaves it changes and the planted equation."""

import jax
import jax.numpy as jnp
import numpy as np

import jbp
from jbp.layers import Dense
from jbp.verify.layer_mutations import LAYER_MUTATIONS, Mutated, plant


def test_every_mistake_is_caught_exactly():
    net = jbp.Sequential((4,), [Dense(6), "tanh", Dense(6), "tanh", Dense(3)], loss="cross_entropy")
    params = net.init(jax.random.key(0), np.float32)
    x = jax.random.normal(jax.random.key(1), (8, 4), np.float32)
    y = jnp.arange(8) % 3
    report = jbp.mutation_test(net, params, x, y)
    assert report.ok, str(report)
    assert [r.mutation for r in report.results] == [m[0] for m in LAYER_MUTATIONS]
    by_name = {r.mutation: r for r in report.results}
    assert by_name["bias averaged"].named == ("params[0].b", "params[2].b", "params[4].b")
    assert by_name["bias averaged"].first_failure.startswith("layers[4] (Mutated(Dense)), params[4].b, BP6")
    assert by_name["missing f'(z)"].first_failure.startswith("layers[3] (Mutated(ActivationLayer)), dx, BP4")


def test_plant_wraps_only_the_layers_of_the_mistakes_type():
    net = jbp.Sequential((4,), [Dense(6), "relu", Dense(3)])
    mutated = plant(net, "sign flip in dx")
    assert [type(layer).__name__ for layer in mutated.layers] == ["Mutated", "ActivationLayer", "Mutated"]
    assert mutated.layers[0] == Mutated(net.layers[0], "sign flip in dx") and net.layers[0] == Dense(6)
