"""One process of a multi-process fit, started by tests/test_distributed.py with the
environment of `jbp launch` (the file name keeps pytest from collecting it).

    python distributed_cases.py CASE OUT_DIR

``fit``: trains NET on a mesh over every device of every process, in two calls (the
second continuing from the first's ``history.epoch`` and ``opt_state``), then in one call
under feedback alignment (RULE), and saves the results and the examples of each batch
this process fed into OUT_DIR/process-I.npz.
``mismatch``: process 1 passes other data and another network; fit must refuse.
"""

import os
import sys

import jax

from jbp.cli.launch import join_from_env

join_from_env()
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402

import jbp  # noqa: E402
from jbp.training import distributed  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import problem  # noqa: E402

NET = jbp.MLP((3, 6, 2), activation="tanh", loss="cross_entropy")
N_EXAMPLES, BATCH, EPOCHS = 32, 8, 8
# momentum gives the optimizer a state; tol stops the run at epoch 6, in the second call
KWARGS = dict(optimizer=optax.sgd(0.1, momentum=0.9), batch_size=BATCH, key=jax.random.key(1), tol=0.665)
RULE = jbp.rules.feedback_alignment(jax.random.key(7))


def _host(a):
    return np.asarray(a.addressable_data(0) if isinstance(a, jax.Array) else a)


def fit_case(out):
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    params, x, y = problem(NET, N_EXAMPLES, np.float64)
    # EPOCHS in two calls: the second continues from history.epoch and opt_state
    p1, h1 = jbp.fit(NET, params, x, y, mesh=mesh, epochs=EPOCHS // 2, **KWARGS)
    # from this process's own copies, as jbp train continues (arrays on one local device)
    p1, opt_state = jax.tree.map(lambda a: a.addressable_data(0), (p1, h1.opt_state))
    p2, h2 = jbp.fit(NET, p1, x, y, mesh=mesh, epochs=EPOCHS // 2, opt_state=opt_state,
                     start_epoch=int(h1.epoch), **KWARGS)
    p_fa, _ = jbp.fit(NET, params, x, y, mesh=mesh, epochs=EPOCHS, rule=RULE, **KWARGS)
    rows = distributed.local_rows(mesh, BATCH)
    arrays = {
        "params": [_host(a) for a in jax.tree.leaves(p2)],
        "fa_params": [_host(a) for a in jax.tree.leaves(p_fa)],
        "opt_state": [_host(a) for a in jax.tree.leaves(h2.opt_state)],
        "loss": np.concatenate([_host(h1.loss), _host(h2.loss)]),
        "epoch_reason": [int(h1.epoch), int(h2.epoch), int(h2.stop_reason)],
        "indices": [distributed.batch_indices(KWARGS["key"], e, N_EXAMPLES, BATCH, rows) for e in range(EPOCHS)],
        "devices": [jax.process_count(), jax.device_count()],
    }
    flat = {k: v for k, v in arrays.items() if not isinstance(v, list) or k in ("epoch_reason", "devices")}
    flat.update({f"{k}/{i}": a for k, v in arrays.items() if k not in flat for i, a in enumerate(v)})
    np.savez(os.path.join(out, f"process-{jax.process_index()}.npz"), **flat)


def mismatch_case(out):
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    me = jax.process_index()
    net = NET if me == 0 else jbp.MLP((3, 5, 2), activation="tanh", loss="cross_entropy")
    params, x, y = problem(net, N_EXAMPLES - 8 * me, np.float64)
    jbp.fit(net, params, x, y, mesh=mesh, epochs=EPOCHS, **KWARGS)


if __name__ == "__main__":
    {"fit": fit_case, "mismatch": mismatch_case}[sys.argv[1]](sys.argv[2])
