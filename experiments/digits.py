"""Digits: test accuracy over several seeds, trained with the hand-derived gradients and
with jax.grad side by side (same network, data, shuffles and optimizer), plus
scikit-learn's MLPClassifier on the same splits as a reference.

    python experiments/digits.py [--epochs N]   (default 40, the CLI's default)
"""

import argparse
import time

import jax
import numpy as np
import optax
from sklearn.neural_network import MLPClassifier

import jbp
from common import mean_std, write_table
from jbp import datasets

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=40)
EPOCHS = parser.parse_args().epochs
SEEDS, BATCH, HIDDEN = 5, 32, 256
optimizer = optax.adam(1e-3)
results = {"manual": [], "autodiff": []}
seconds = {"manual": 0.0, "autodiff": 0.0}
grad_err, param_diff, sk_acc = [], [], []
net = jbp.MLP((64, HIDDEN, 10), activation="relu", loss="cross_entropy", init="he_normal")
autodiff = jax.value_and_grad(net.loss)  # one function object: fit compiles once per arm
for seed in range(SEEDS):
    data = datasets.load("digits", seed=seed)  # a different stratified split per seed
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    params0 = net.init(init_key)
    report = jbp.check_grads(net, params0, data.x_train[:256], data.y_train[:256], finite_differences=False)
    grad_err.append(max(leaf.rel_err for leaf in report.leaves))
    trained = {}
    for arm, loss_and_grad in (("manual", None), ("autodiff", autodiff)):
        start = time.perf_counter()
        params, _ = jbp.fit(net, params0, data.x_train, data.y_train, optimizer=optimizer, epochs=EPOCHS,
                            batch_size=BATCH, key=shuffle_key, loss_and_grad=loss_and_grad)
        jax.block_until_ready(params)
        seconds[arm] += time.perf_counter() - start
        trained[arm] = params
        results[arm].append(float(net.accuracy(params, data.x_test, data.y_test)))
    param_diff.append(max(float(np.max(np.abs(a - b))) for a, b in zip(*map(jax.tree.leaves, trained.values()))))
    sk = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=500, random_state=seed).fit(data.x_train, data.y_train)
    sk_acc.append(sk.score(data.x_test, data.y_test))

write_table(
    f"digits_{EPOCHS}",
    f"digits (1,437 train / 360 test, stratified split per seed), 64-{HIDDEN}-10 relu/softmax, adam 1e-3, "
    f"batch {BATCH}, {EPOCHS} epochs; mean ± std over {SEEDS} seeds (split, init and shuffles); float32",
    ["gradients", "test accuracy", "per-seed accuracy", "train time (all seeds, one compilation)"],
    [
        ["hand-derived (jbp)", mean_std(results["manual"]), " ".join(f"{a:.4f}" for a in results["manual"]), f"{seconds['manual']:.1f} s"],
        ["jax.grad (same fit)", mean_std(results["autodiff"]), " ".join(f"{a:.4f}" for a in results["autodiff"]), f"{seconds['autodiff']:.1f} s"],
        [f"sklearn MLPClassifier({HIDDEN},) adam", mean_std(sk_acc), " ".join(f"{a:.4f}" for a in sk_acc), "-"],
    ],
)
print(f"max relative gradient error at init, manual vs jax.grad (256 examples): {max(grad_err):.1e}")
print(f"max |param difference| after {EPOCHS} epochs, manual vs jax.grad training: {max(param_diff):.1e}")
