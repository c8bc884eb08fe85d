"""``python -m jbp``: a short demonstration of the library (a fuller CLI comes later)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jbp


def _spirals(n_per_class: int, seed: int):
    """Two interleaved spirals in 2-D, generated (no download)."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(size=n_per_class)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + 0.02 * rng.normal(size=(2 * n_per_class, 2))
    y = np.repeat([0, 1], n_per_class)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y)


def main() -> None:
    print(f"jbp {jbp.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})\n")

    net = jbp.MLP(sizes=(2, 8, 1), activation="tanh", output_activation="sigmoid", loss="mse")
    x = jnp.asarray([[0, 0], [0, 1], [1, 0], [1, 1]], jnp.float32)
    y = jnp.asarray([[0], [1], [1], [0]], jnp.float32)
    params = net.init(jax.random.key(0))
    print("XOR,", net)
    print(jbp.check_grads(net, params, x, y), "\n")
    start = time.perf_counter()
    params, history = jbp.fit(
        net, params, x, y, optimizer=optax.sgd(0.5), epochs=5000, batch_size=4,
        key=jax.random.key(1), tol=1e-3,
    )
    seconds = time.perf_counter() - start
    print(f"fit: {history.reason} after {int(history.epoch)} epochs ({seconds:.2f} s with compilation)")
    print("predictions:", np.round(np.asarray(net.predict(params, x)).ravel(), 3), "targets: 0 1 1 0\n")

    net = jbp.MLP(sizes=(2, 32, 32, 2), activation="relu", loss="cross_entropy", init="he_normal")
    x, y = _spirals(500, seed=0)
    params = net.init(jax.random.key(2))
    print("Two spirals (1000 points),", net)
    print(jbp.check_grads(net, params, x[:64], y[:64]), "\n")
    start = time.perf_counter()
    params, history = jbp.fit(
        net, params, x, y, optimizer=optax.adam(1e-2), epochs=300, batch_size=50, key=jax.random.key(3)
    )
    seconds = time.perf_counter() - start
    print(f"fit: {int(history.epoch)} epochs in {seconds:.2f} s, final loss {float(history.loss[-1]):.4f}, "
          f"training accuracy {float(net.accuracy(params, x, y)):.3f}")


if __name__ == "__main__":
    main()
