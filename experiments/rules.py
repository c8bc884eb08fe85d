"""Learning rules on digits: backprop, feedback alignment, sign symmetry and direct feedback
alignment, same network, data, shuffles and optimizer.

64-128-128-10 tanh/softmax, cross-entropy, adam 1e-3, batch 32, 60 epochs, 5 seeds (split,
init, shuffles and feedback weights). Trains one epoch per ``jbp.fit`` call (one
compilation per rule) to read the test accuracy after every epoch, with
``monitor=True`` for the alignment angle between each rule's update and the gradient
(at each epoch's last step).

    python experiments/rules.py
"""

import jax
import numpy as np
import optax

import jbp
from common import FIGURES, mean_std, write_table
from jbp import datasets

SEEDS, EPOCHS, BATCH, HIDDEN, TARGET = 5, 60, 32, (128, 128), 0.95
RULES = {
    "BP": lambda key: jbp.rules.backprop(),
    "FA": jbp.rules.feedback_alignment,
    "SS": lambda key: jbp.rules.sign_symmetry(),
    "DFA": jbp.rules.direct_feedback_alignment,
}
optimizer = optax.adam(1e-3)
net = jbp.MLP((64, *HIDDEN, 10), activation="tanh", loss="cross_entropy")
accuracy_fn = jax.jit(lambda params, x, y: net.accuracy(params, x, y))

results = {}
for name, make in RULES.items():
    final, to_target, angles = [], [], []
    for seed in range(SEEDS):
        data = datasets.load("digits", seed=seed)
        init_key, shuffle_key, rule_key = jax.random.split(jax.random.key(seed), 3)
        rule = make(rule_key)
        params = net.init(init_key)
        feedback = rule.init(net, params)
        opt_state, curve, angle = optimizer.init(params), [], []
        for epoch in range(EPOCHS):
            params, h = jbp.fit(net, params, data.x_train, data.y_train, optimizer=optimizer, epochs=1,
                                batch_size=BATCH, key=shuffle_key, opt_state=opt_state, start_epoch=epoch,
                                rule=rule, feedback=feedback, monitor=True)
            opt_state = h.opt_state
            curve.append(float(accuracy_fn(params, data.x_test, data.y_test)))
            angle.append(np.asarray(h.layer_stats["alignment"][0, :-1]))
        final.append(curve[-1])
        reached = [e + 1 for e, a in enumerate(curve) if a >= TARGET]
        to_target.append(reached[0] if reached else None)
        angles.append(np.stack(angle))
    results[name] = final, to_target, np.mean(angles, 0)  # angles: (epochs, hidden layers)
    print(name, final, to_target)


def epochs_cell(values):
    reached = [v for v in values if v is not None]
    text = f"{np.median(reached):.0f} (median)" if reached else "never"
    return f"{text}, {len(reached)}/{len(values)} reached"


order = sorted(results, key=lambda n: -np.mean(results[n][0]))
write_table(
    "rules",
    f"digits (1,437 train / 360 test), 64-{'-'.join(map(str, HIDDEN))}-10 tanh/softmax, adam 1e-3, batch {BATCH}, "
    f"{EPOCHS} epochs; {SEEDS} seeds (split, init, shuffles, feedback weights); ranked by mean test accuracy; float32",
    ["rule", f"test accuracy, epoch {EPOCHS}", "per seed", f"epochs to {TARGET:.0%} test accuracy",
     "angle to the gradient, layer 1 / layer 2: epoch 1", f"epoch {EPOCHS}"],
    [
        [name, mean_std(results[name][0]), " ".join(f"{a:.3f}" for a in results[name][0]),
         epochs_cell(results[name][1]),
         " / ".join(f"{a:.0f}°" for a in results[name][2][0]),
         " / ".join(f"{a:.0f}°" for a in results[name][2][-1])]
        for name in order
    ],
)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name, style in (("FA", "-"), ("SS", "--"), ("DFA", ":")):
    for l, color in ((0, "tab:blue"), (1, "tab:orange")):
        ax.plot(np.arange(1, EPOCHS + 1), results[name][2][:, l], style, color=color,
                label=f"{name}, hidden layer {l + 1}")
ax.axhline(90, color="gray", lw=0.5)
ax.set(xlabel="epoch", ylabel="degrees (mean over seeds)", title="angle between each rule's update and the gradient")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
FIGURES.mkdir(exist_ok=True)
fig.savefig(FIGURES / "rules_alignment.png", dpi=90)
print(f"wrote {FIGURES / 'rules_alignment.png'}")
