"""Every bad input jbp refuses, in one table, then a fuzzer over the public API.

Each row of the table is a call, the error it must raise, and a regex over the message
that names the argument, what was expected and what was got. The fuzzer throws random
malformed calls (shapes, ranks, dtypes, label values, sizes, hyperparameters): each one
either works (finite outputs of the right shapes) or raises such an error from jbp's own
code, never an error from inside JAX, XLA, NumPy or optax, and never a silent NaN.
"""

import functools
import json
import math
import os
import pathlib
import re
import tempfile
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jbp
from jbp import cli, datasets
from helpers import problem

JBP_DIR = pathlib.Path(jbp.__file__).parent

CE = jbp.MLP((3, 4, 2), activation="tanh", loss="cross_entropy")
BCE = jbp.MLP((3, 4, 1), activation="relu", loss="binary_cross_entropy")
MSE = jbp.MLP((3, 4, 2), activation="tanh", loss="mse")
P, X, Y = problem(CE, 4, np.float64)  # float64 params, x (4, 3), integer labels (4,)
P_BCE, X_BCE, Y_BCE = problem(BCE, 4, np.float64)
P_MSE, X_MSE, Y_MSE = problem(MSE, 4, np.float64)
_, CACHE = jbp.forward(P, X, CE.activations)
DELTA = CE.output_delta(CACHE, Y)
SGD = optax.sgd(0.1)
ADAM = optax.adam(0.1)
KEY = jax.random.key(0)
KEYS = jax.random.split(KEY, 3)
F32 = lambda tree: jax.tree.map(lambda a: a.astype(np.float32), tree)
Layer = jbp.Layer
ACTIVATION_NAMES = "identity, sigmoid, tanh, relu, leaky_relu, elu, softplus, gelu"


def fit(**kwargs):
    """A call of jbp.fit on CE's problem, with some arguments replaced."""
    args = dict(net=CE, params=P, x=X, y=Y, optimizer=SGD, epochs=1)
    args.update(kwargs)
    return lambda: jbp.fit(args.pop("net"), args.pop("params"), args.pop("x"), args.pop("y"), **args)


def check(**kwargs):
    """A call of jbp.check_grads on CE's problem, with some arguments replaced."""
    args = dict(net=CE, params=P, x=X, y=Y)
    args.update(kwargs)
    return lambda: jbp.check_grads(args.pop("net"), args.pop("params"), args.pop("x"), args.pop("y"), **args)


def save(**kwargs):
    """A call of jbp.save_checkpoint into a fresh folder, with some arguments replaced."""
    args = dict(net=CE, params=P)
    args.update(kwargs)
    folder = tempfile.mkdtemp(prefix="jbp-test-")
    return lambda: jbp.save_checkpoint(args.pop("path", os.path.join(folder, "c.npz")), **args)


def _saved_checkpoint(folder):
    path = os.path.join(folder, "c.npz")
    jbp.save_checkpoint(path, net=CE, params=P, opt_state=ADAM.init(P), epoch=3, key=KEY)
    return path


def load_bad(kind):
    """A call of jbp.load_checkpoint on a file spoiled in the way ``kind`` says."""

    def call():
        folder = tempfile.mkdtemp(prefix="jbp-test-")
        path = _saved_checkpoint(folder)
        data = pathlib.Path(path).read_bytes()
        if kind == "truncated":
            pathlib.Path(path).write_bytes(data[: len(data) // 2])
        elif kind == "corrupted":
            start = data.index(b"params/0/W.npy") + 200
            spoiled = bytes(255 - b for b in data[start : start + 8])
            pathlib.Path(path).write_bytes(data[:start] + spoiled + data[start + 8 :])
        elif kind == "text":
            pathlib.Path(path).write_text("hello")
        elif kind == "foreign":
            np.savez(path, a=np.arange(3))
        elif kind == "pickled meta":
            np.savez(path, meta=np.array([{"format": "jbp-checkpoint"}], dtype=object))
        else:  # rewrite the meta entry or an array of a valid checkpoint
            with np.load(path) as z:
                arrays = {name: z[name] for name in z.files}
            meta = json.loads(str(arrays["meta"]))
            if kind == "version":
                meta["version"] = 99
            elif kind == "wrong shapes":
                arrays["params/1/W"] = np.zeros((2, 5))
            elif kind == "missing array":
                del arrays["params/1/b"]
            elif kind == "bad net":
                meta["net"]["sizes"] = [3, 0, 2]
            arrays["meta"] = np.array(json.dumps(meta))
            np.savez(path, **arrays)
        return jbp.load_checkpoint(path, optimizer=ADAM)

    return call


def cli_train(*argv):
    """The CLI's train command up to its first check (UsageError is its one-line error)."""
    return lambda: cli.run(cli.parser().parse_args(["train", "--dataset", "xor", *argv]))


CASES = [
    # -- the network description: MLP(...)
    (lambda: jbp.MLP((3,)), ValueError, r"sizes must have at least 2 entries \(inputs and outputs\), got \(3,\)"),
    (lambda: jbp.MLP((3, 0, 1)), ValueError, r"sizes\[1\] must be >= 1, got 0"),
    (lambda: jbp.MLP((3, -2)), ValueError, r"sizes\[1\] must be >= 1, got -2"),
    (lambda: jbp.MLP((3, 2.5)), TypeError, r"sizes\[1\] must be an int, got float 2.5"),
    (lambda: jbp.MLP((3, True)), TypeError, r"sizes\[1\] must be an int, got bool True"),
    (lambda: jbp.MLP(5), TypeError, r"sizes must be a sequence of layer widths like \(2, 8, 1\), got 5"),
    (lambda: jbp.MLP((2, 1), activation="swish"), ValueError, f"unknown activation 'swish'; expected one of {ACTIVATION_NAMES}"),
    (lambda: jbp.MLP((2, 3, 1), activation=3), TypeError, r"activation must be a name or a sequence of names \(one per hidden layer\), got int 3"),
    (lambda: jbp.MLP((2, 3, 3, 1), activation=("relu", 3)), TypeError, r"activation must be a name \(str\), got int 3"),
    (lambda: jbp.MLP((2, 3, 1), activation="softmax"), ValueError, "activation='softmax' is not allowed: softmax is only for the output layer"),
    (lambda: jbp.MLP((2, 3, 3, 1), activation=("relu",)), ValueError, r"activation has 1 names but sizes=\(2, 3, 3, 1\) has 2 hidden layers"),
    (lambda: jbp.MLP((2, 1), loss="hinge"), ValueError, "unknown loss 'hinge'; expected one of mse, cross_entropy, binary_cross_entropy"),
    (lambda: jbp.MLP((2, 1), loss=None), TypeError, r"loss must be a name \(str\), got NoneType None"),
    (lambda: jbp.MLP((2, 1), output_activation="swish"), ValueError, "unknown output_activation 'swish'; expected one of identity, sigmoid"),
    (lambda: jbp.MLP((2, 2), loss="cross_entropy", output_activation="sigmoid"), ValueError, r"loss='cross_entropy' needs output_activation='softmax' .*, got 'sigmoid'"),
    (lambda: jbp.MLP((2, 1), loss="binary_cross_entropy", output_activation="identity"), ValueError, "loss='binary_cross_entropy' needs output_activation='sigmoid'"),
    (lambda: jbp.MLP((2, 1), loss="cross_entropy"), ValueError, r"softmax needs at least 2 outputs, got sizes\[-1\]=1"),
    (lambda: jbp.MLP((2, 1), init="zeros"), ValueError, "unknown init 'zeros'; expected one of glorot_uniform, glorot_normal, he_uniform"),
    # -- net.init
    (lambda: CE.init(0), TypeError, r"key must be a PRNG key, jax.random.key\(seed\), got int 0"),
    (lambda: CE.init(jnp.ones(2)), TypeError, r"key must be a PRNG key, jax.random.key\(seed\), got float64 array of shape \(2,\)"),
    (lambda: CE.init(KEYS), ValueError, r"key must be one PRNG key, got an array of keys of shape \(3,\)"),
    (lambda: CE.init(KEY, dtype=jnp.int32), TypeError, "dtype must be a floating dtype, got int32"),
    (lambda: CE.init(KEY, dtype="banana"), TypeError, "dtype must be a floating dtype, got 'banana'"),
    # -- params given to the network's methods (which layer, what shape)
    (lambda: CE.predict({"W": 1}, X), TypeError, r"params must be a tuple of jbp.Layer \(from net.init\), got dict"),
    (lambda: CE.predict(list(P), X), TypeError, r"params must be a tuple of jbp.Layer \(from net.init\), got list"),
    (lambda: CE.predict(P[:1], X), ValueError, r"params has 1 layers but the network has 2 \(sizes=\(3, 4, 2\)\)"),
    (lambda: CE.predict((P[0], Layer(P[1].W.T, P[1].b)), X), ValueError, r"params\[1\].W has shape \(4, 2\) but the network expects \(2, 4\) \(sizes\[2\], sizes\[1\]\) for layer 2"),
    (lambda: CE.predict((Layer(P[0].W, P[0].b[:3]), P[1]), X), ValueError, r"params\[0\].b has shape \(3,\) but the network expects \(4,\) \(sizes\[1\],\) for layer 1"),
    (lambda: CE.predict(((P[0].W, P[0].b), P[1]), X), TypeError, r"params\[0\] must be a jbp.Layer with arrays W and b, got tuple"),
    (lambda: CE.predict((Layer(P[0].W.astype(int), P[0].b), P[1]), X), TypeError, r"params\[0\].W must be floating, got dtype int64"),
    (lambda: CE.predict((P[0], F32(P[1])), X), TypeError, r"params mixes dtypes \['float32', 'float64'\]; use one floating dtype"),
    # -- inputs x
    (lambda: CE.predict(P, X[0]), ValueError, r"x must be 2-D \(batch, features\) with 3 features, got shape \(3,\)"),
    (lambda: CE.predict(P, X[None]), ValueError, r"x must be 2-D \(batch, features\) with 3 features, got shape \(1, 4, 3\)"),
    (lambda: CE.predict(P, jnp.ones((4, 5))), ValueError, r"x has 5 features but the network expects 3 \(sizes\[0\]\)"),
    (lambda: CE.predict(P, jnp.ones((0, 3))), ValueError, "x is empty: it has 0 rows"),
    (lambda: CE.predict(P, X.astype(jnp.complex128)), TypeError, r"x must hold real numbers \(floating, integer or bool\), got dtype complex128"),
    (lambda: CE.predict(P, None), TypeError, "x must be an array of numbers, got NoneType None"),
    (lambda: CE.predict(P, [[1.0, 2.0, 3.0], [1.0]]), TypeError, "x must be an array, got list"),
    (lambda: CE.predict(P, X.astype(np.float32)), TypeError, r"x has dtype float32 but params are float64; cast x with .astype\(float64\)"),
    # -- targets y
    (lambda: CE.loss(P, X, Y[:3]), ValueError, r"y has shape \(3,\) but x has 4 rows; y needs one row per example"),
    (lambda: CE.loss(P, X, 1), ValueError, r"y has shape \(\) but x has 4 rows"),
    (lambda: MSE.loss(P_MSE, X_MSE, jnp.ones((4, 3))), ValueError, r"y has shape \(4, 3\) but the network's output is \(4, 2\) \(batch, sizes\[-1\]\)"),
    (lambda: BCE.loss(P_BCE, X_BCE, Y_BCE[:, 0]), ValueError, r"y has shape \(4,\) but the network's output is \(4, 1\) .*\(use y.reshape\(-1, 1\)\)"),
    (lambda: CE.loss(P, X, Y + 7), ValueError, r"y holds labels in \[\d, \d\] but the network has 2 classes \(sizes\[-1\]\); labels must lie in \[0, 1\]"),
    (lambda: CE.loss(P, X, Y - 2), ValueError, r"y holds labels in \[-\d, -?\d\] but the network has 2 classes .* labels must lie in \[0, 1\]"),
    (lambda: CE.loss(P, X, Y.astype(np.float64)), TypeError, r"y for cross_entropy must be integer labels \(batch,\) or one-hot rows \(batch, 2\), got dtype float64 with shape \(4,\)"),
    (lambda: CE.loss(P, X, jnp.ones((4, 2, 1))), ValueError, r"y for cross_entropy must be integer labels \(batch,\) or one-hot rows \(batch, 2\), got shape \(4, 2, 1\)"),
    (lambda: CE.loss(P, X, -jnp.ones((4, 2))), ValueError, r"y for cross_entropy \(rows of class probabilities\) must lie in \[0, 1\], got values in \[-1.0, -1.0\]"),
    (lambda: BCE.loss(P_BCE, X_BCE, Y_BCE - 0.5), ValueError, r"y for binary_cross_entropy must lie in \[0, 1\], got values in \[-0.\d+, 0.\d+\]"),
    (lambda: BCE.loss(P_BCE, X_BCE, Y_BCE.at[0, 0].set(jnp.nan)), ValueError, "y must be finite, but 1 of its values are NaN or inf"),
    (lambda: MSE.loss(P_MSE, X_MSE, Y_MSE.astype(np.float32)), TypeError, "y has dtype float32 but params are float64"),
    (lambda: MSE.accuracy(P_MSE, X_MSE, Y_MSE), ValueError, "accuracy needs a classification loss, but this network's loss is 'mse'"),
    # -- net.output_delta(cache, y)
    (lambda: CE.output_delta(None, Y), TypeError, "cache must be the jbp.Cache of arrays that jbp.forward returns, got NoneType"),
    (lambda: CE.output_delta(jbp.Cache(CACHE.zs[:1], CACHE.xs[:2]), Y), ValueError, "cache holds 1 zs and 2 xs but the network has 2 layers"),
    (lambda: CE.output_delta(CACHE, Y[:2]), ValueError, r"y has shape \(2,\) but the cache \(cache.zs\[-1\]\) has 4 rows; y needs one row per example"),
    (lambda: MSE.output_delta(CACHE, Y_MSE.astype(np.float32)), TypeError, r"y has dtype float32 but the cache's arrays are float64"),
    (lambda: CE.output_delta(CACHE, Y + 5), ValueError, r"y holds labels in \[\d, \d\] but the network has 2 classes"),
    # -- the pure functions: jbp.forward, jbp.deltas, jbp.backward
    (lambda: jbp.forward(P, X, ("tanh",)), ValueError, r"activations has 1 entries but params has 2 layers; give one activation per layer \(net.activations\)"),
    (lambda: jbp.forward(P, X, "tanh"), TypeError, "activations must be a sequence with one activation per layer .*, got str 'tanh'"),
    (lambda: jbp.forward(P, X, ("tanh", "swish")), ValueError, r"unknown activations\[1\] 'swish'; expected one of"),
    (lambda: jbp.forward((), X, ()), ValueError, "params has no layers"),
    (lambda: jbp.forward((P[0], Layer(jnp.ones((2, 5)), P[1].b)), X, CE.activations), ValueError, r"params\[1\].W has 5 columns but layer 1 has 4 outputs \(params\[0\].W has shape \(4, 3\)\)"),
    (lambda: jbp.forward((Layer(P[0].W, P[0].b[:3]), P[1]), X, CE.activations), ValueError, r"params\[0\].b has shape \(3,\) but params\[0\].W has 4 rows; expected \(4,\)"),
    (lambda: jbp.forward((Layer(P[0].W[None], P[0].b), P[1]), X, CE.activations), ValueError, r"params\[0\].W must be 2-D \(n_out, n_in\), got shape \(1, 4, 3\)"),
    (lambda: jbp.forward(P, jnp.ones((4, 5)), CE.activations), ValueError, r"x has 5 features but params\[0\].W expects 3 \(its shape is \(4, 3\)\)"),
    (lambda: jbp.forward(P, X[0], CE.activations), ValueError, r"x must be 2-D \(batch, features\) with 3 features \(params\[0\].W.shape\[1\]\), got shape \(3,\)"),
    (lambda: jbp.backward(P, CACHE, DELTA, ("tanh",)), ValueError, "activations has 1 entries but params has 2 layers"),
    (lambda: jbp.deltas(P, jbp.Cache(CACHE.zs[:1], CACHE.xs), DELTA, CE.activations), ValueError, "cache holds 1 zs and 3 xs but params has 2 layers; expected 2 and 3"),
    (lambda: jbp.backward(P, None, DELTA, CE.activations), TypeError, "cache must be the jbp.Cache of arrays that jbp.forward returns, got NoneType"),
    (lambda: jbp.backward(P, jbp.forward(P, X[:3], CE.activations)[1], DELTA, CE.activations), ValueError, r"delta_out has shape \(4, 2\) but the output layer's z has \(3, 2\) \(cache.zs\[-1\]\)"),
    (lambda: jbp.backward(P, CACHE, DELTA[:, :1], CE.activations), ValueError, r"delta_out has shape \(4, 1\) but the output layer's z has \(4, 2\)"),
    (lambda: jbp.backward(P_BCE, CACHE, DELTA, CE.activations), ValueError, r"cache.zs\[1\] has shape \(4, 2\) but params give \(4, 1\) \(batch, width\)"),
    (lambda: jbp.backward(P, jax.tree.map(lambda a: a.astype(np.float32), CACHE), DELTA, CE.activations), TypeError, r"cache.xs\[0\] has dtype float32 but params are float64"),
    # -- BP7 and one training step
    (lambda: jbp.gradient_descent(P, P[:1], 0.1), ValueError, "grads has structure .* but params has .*; they must match"),
    (lambda: jbp.gradient_descent(P, (P[0], Layer(P[1].W.T, P[1].b)), 0.1), ValueError, r"grads\[1\].W has shape \(4, 2\) but params\[1\].W has \(2, 4\)"),
    (lambda: jbp.gradient_descent(P, F32(P), 0.1), TypeError, r"grads\[0\].W has dtype float32 but params\[0\].W has float64"),
    (lambda: jbp.gradient_descent(P, P, "0.1"), TypeError, "lr must be a real number, got str '0.1'"),
    (lambda: jbp.gradient_descent(P, P, math.inf), ValueError, "lr must be a finite real number, got inf"),
    (lambda: jbp.train_step(CE, SGD, P, ADAM.init(P), X, Y), ValueError, r"opt_state has structure .* but optimizer.init\(params\) has .* \(was opt_state made by another optimizer"),
    (lambda: jbp.train_step(CE, "sgd", P, (), X, Y), TypeError, r"optimizer must be an optax.GradientTransformation \(e.g. optax.sgd\(0.1\)\), got str"),
    # -- fit: data
    (fit(x=X.at[0, 0].set(jnp.nan)), ValueError, "x must be finite, but 1 of its values are NaN or inf"),
    (fit(net=MSE, params=P_MSE, x=X_MSE, y=Y_MSE.at[1].set(jnp.inf)), ValueError, "y must be finite, but 2 of its values are NaN or inf"),
    (fit(params=(Layer(P[0].W.at[0, 0].set(jnp.nan), P[0].b), P[1])), ValueError, r"params\[0\].W must be finite, but 1 of its values are NaN or inf"),
    (fit(x=jnp.ones((0, 3)), y=jnp.zeros((0,), int)), ValueError, "x is empty: it has 0 rows"),
    (fit(y=Y + 2), ValueError, r"y holds labels in \[\d, \d\] but the network has 2 classes"),
    # -- fit: hyperparameters
    (fit(epochs=0), ValueError, "epochs must be >= 1, got 0"),
    (fit(epochs=2.5), TypeError, "epochs must be an int, got float 2.5"),
    (fit(epochs=2**40), ValueError, r"epochs must be <= 2147483647, got 1099511627776"),
    (fit(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    (fit(batch_size=5), ValueError, r"batch_size=5 is larger than the data \(x has 4 rows\)"),
    (fit(batch_size="2"), TypeError, "batch_size must be an int, got str '2'"),
    (fit(batch_size=2), ValueError, r"key is required to shuffle mini-batches \(batch_size < number of examples\); pass key=jax.random.key\(seed\)"),
    (fit(batch_size=2, key=0), TypeError, r"key must be a PRNG key, jax.random.key\(seed\), got int 0"),
    (fit(start_epoch=-1), ValueError, "start_epoch must be >= 0, got -1"),
    (fit(start_epoch=2.0), TypeError, "start_epoch must be an int, got float 2.0"),
    (fit(epochs=5, start_epoch=2**31 - 2), ValueError, r"start_epoch must be <= 2147483642 so that start_epoch \+ epochs \(5\) fits the int32 epoch counter, got 2147483646"),
    (fit(tol="small"), TypeError, "tol must be a real number, got str 'small'"),
    (fit(tol=math.nan), ValueError, "tol must be a real number, got nan"),
    (fit(tol=jnp.ones(3)), TypeError, r"tol must be a real number, got float64 array of shape \(3,\)"),
    (fit(optimizer="sgd"), TypeError, r"optimizer must be an optax.GradientTransformation \(e.g. optax.sgd\(0.1\)\), got str"),
    (fit(opt_state=ADAM.init(P)), ValueError, r"opt_state has structure .* but optimizer.init\(params\) has .* \(was opt_state made by another optimizer, or for other params\?\)"),
    (fit(optimizer=ADAM, opt_state=ADAM.init(F32(P))), TypeError, r"opt_state\[0\].mu\[0\].W has dtype float32 but optimizer.init\(params\)\[0\].mu\[0\].W has float64"),
    (fit(net="CE"), TypeError, "net must be a jbp network \\(jbp.MLP or jbp.Sequential\\), got str"),
    (fit(loss_and_grad=3), TypeError, r"loss_and_grad must be a function \(params, x, y\) -> \(loss, grads\), got int 3"),
    # -- check_grads
    (check(rtol="tight"), TypeError, "rtol must be a real number, got str 'tight'"),
    (check(rtol=0.0), ValueError, "rtol must be > 0, got 0.0"),
    (check(key=3), TypeError, r"key must be a PRNG key, jax.random.key\(seed\), got int 3"),
    (check(finite_differences="yes"), TypeError, "finite_differences must be True or False, got str 'yes'"),
    (check(raise_on_failure=1), TypeError, "raise_on_failure must be True or False, got int 1"),
    (check(x=X.at[1, 2].set(jnp.inf)), ValueError, "x must be finite, but 1 of its values are NaN or inf"),
    (check(params=jax.tree.map(lambda a: a * jnp.nan, P)), ValueError, r"params\[0\].W must be finite, but 12 of its values are NaN or inf"),
    (check(net=None), TypeError, "net must be a jbp network \\(jbp.MLP or jbp.Sequential\\), got NoneType"),
    # -- checkpoints: saving
    (save(net=None), TypeError, "net must be a jbp network \\(jbp.MLP or jbp.Sequential\\), got NoneType"),
    (save(params=P[:1]), ValueError, r"params has 1 layers but the network has 2"),
    (save(params=(P[0], Layer(P[1].W.T, P[1].b))), ValueError, r"params\[1\].W has shape \(4, 2\) but the network expects \(2, 4\)"),
    (save(epoch=-1), ValueError, "epoch must be >= 0, got -1"),
    (save(epoch="3"), TypeError, "epoch must be an int, got str '3'"),
    (save(key=3), TypeError, r"key must be a PRNG key, jax.random.key\(seed\), got int 3"),
    (save(extra=[1]), TypeError, r"extra must be a dict \(JSON-serialisable\), got list \[1\]"),
    (save(extra={"f": object()}), TypeError, "extra must be JSON-serialisable: Object of type object is not JSON serializable"),
    (save(opt_state=[np.array([object()])]), TypeError, r"opt_state/0 must be an array of numbers, got object array of shape \(1,\)"),
    (save(path="/nonexistent-jbp-folder/c.npz"), FileNotFoundError, "path '/nonexistent-jbp-folder/c.npz': its folder /nonexistent-jbp-folder does not exist"),
    # -- checkpoints: loading never unpickles; a bad file says what is wrong with it
    (load_bad("truncated"), ValueError, r"c.npz is not a readable jbp checkpoint: truncated or corrupted"),
    (load_bad("corrupted"), ValueError, r"c.npz is not a readable jbp checkpoint: truncated or corrupted"),
    (load_bad("text"), ValueError, r"c.npz is not a readable jbp checkpoint: truncated or corrupted"),
    (load_bad("foreign"), ValueError, r"c.npz is not a readable jbp checkpoint: it has no 'meta' entry \(a foreign .npz file\?\)"),
    (load_bad("pickled meta"), ValueError, r"c.npz is not a readable jbp checkpoint: truncated or corrupted \(.*allow_pickle=False"),
    (load_bad("version"), ValueError, "c.npz is not a readable jbp checkpoint: version 99, this jbp reads version 1"),
    (load_bad("wrong shapes"), ValueError, r"c.npz is not a readable jbp checkpoint: inconsistent contents \(ValueError: params\[1\].W has shape \(2, 5\) but the network expects \(2, 4\)"),
    (load_bad("missing array"), ValueError, r"c.npz is not a readable jbp checkpoint: inconsistent contents \(KeyError: 'params/1/b'\)"),
    (load_bad("bad net"), ValueError, r"c.npz is not a readable jbp checkpoint: inconsistent contents \(ValueError: sizes\[1\] must be >= 1, got 0\)"),
    (lambda: jbp.load_checkpoint("c.npz", optimizer="adam"), TypeError, "optimizer must be an optax.GradientTransformation"),
    # -- datasets and the command line's names
    (lambda: datasets.load("mnist"), ValueError, "unknown dataset 'mnist'; expected one of xor, sine, moons, spirals, digits"),
    (lambda: datasets.load("moons", seed=-1), ValueError, "seed must be >= 0, got -1"),
    (lambda: datasets.load("moons", seed=1.5), TypeError, "seed must be an int, got float 1.5"),
    (cli_train("--optimizer", "rmsprop"), cli.UsageError, "unknown --optimizer 'rmsprop'; expected one of sgd, momentum, adam"),
    (cli_train("--hidden", "64,0"), cli.UsageError, "--hidden must be comma-separated positive widths like 128 or 256,128, got '64,0'"),
]


def _raised_in_jbp(excinfo) -> bool:
    """True if the innermost frame of the traceback is jbp's own code."""
    return pathlib.Path(excinfo.traceback[-1].path).is_relative_to(JBP_DIR)


def _case_id(case):
    return re.sub(r"[^\w.=\[\]-]+", "_", case[2])[:70]


@pytest.mark.parametrize("call, error, message", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message) as excinfo:
        call()
    assert _raised_in_jbp(excinfo), f"raised outside jbp, at {excinfo.traceback[-1]}"


# -- The fuzzer. Valid arguments for three networks; one argument at a time is replaced
# by junk: wrong types, ranks, shapes, dtypes and values, and near misses of the valid one.


@functools.cache
def _valid(net_name):
    net, params, x, y = {"ce": (CE, P, X, Y), "bce": (BCE, P_BCE, X_BCE, Y_BCE), "mse": (MSE, P_MSE, X_MSE, Y_MSE)}[net_name]
    _, cache = jbp.forward(params, x, net.activations)
    _, grads = net.loss_and_grad(params, x, y)
    return dict(
        net=net, params=params, x=x, y=y, cache=cache, delta_out=net.output_delta(cache, y),
        activations=net.activations, grads=grads, key=KEY, dtype=None, sizes=net.sizes,
        activation="tanh", loss=net.loss_name, optimizer=SGD, opt_state=SGD.init(params),
        epochs=1, batch_size=None, tol=None, start_epoch=0, lr=0.1, rtol=None,
    )


def _shapes(tree):
    return [tuple(np.shape(a)) for a in jax.tree.leaves(tree)]


def _finite(tree) -> bool:
    return all(
        np.all(np.isfinite(np.asarray(a, np.float64)))
        for a in jax.tree.leaves(tree)
        if isinstance(a, (np.ndarray, np.generic, jax.Array)) and jnp.issubdtype(a.dtype, jnp.inexact)
    )


def _fit_ok(result, a):
    params, h = result
    assert _shapes(params) == _shapes(a["params"]) and _finite(params)  # even on divergence
    return h.diverged or _finite(h.loss[: int(h.epoch)])


# name: (call, the arguments it takes, check of a result, needs classification)
CALLS = {
    "MLP": (lambda a: jbp.MLP(a["sizes"], activation=a["activation"], loss=a["loss"]),
            ("sizes", "activation", "loss"), lambda r, a: isinstance(r, jbp.MLP)),
    "init": (lambda a: a["net"].init(a["key"], dtype=a["dtype"]), ("key", "dtype"),
             lambda r, a: _shapes(r) == _shapes(a["params"])),
    "predict": (lambda a: a["net"].predict(a["params"], a["x"]), ("params", "x"),
                lambda r, a: r.shape == (len(a["x"]), a["net"].sizes[-1])),
    "loss": (lambda a: a["net"].loss(a["params"], a["x"], a["y"]), ("params", "x", "y"),
             lambda r, a: r.shape == ()),
    "loss_and_grad": (lambda a: a["net"].loss_and_grad(a["params"], a["x"], a["y"]), ("params", "x", "y"),
                      lambda r, a: r[0].shape == () and _shapes(r[1]) == _shapes(a["params"])),
    "accuracy": (lambda a: a["net"].accuracy(a["params"], a["x"], a["y"]), ("params", "x", "y"),
                 lambda r, a: 0 <= float(r) <= 1),
    "output_delta": (lambda a: a["net"].output_delta(a["cache"], a["y"]), ("cache", "y"),
                     lambda r, a: r.shape == a["cache"].zs[-1].shape),
    "forward": (lambda a: jbp.forward(a["params"], a["x"], a["activations"]), ("params", "x", "activations"),
                lambda r, a: r[0].shape == (len(a["x"]), a["params"][-1].W.shape[0])),
    "deltas": (lambda a: jbp.deltas(a["params"], a["cache"], a["delta_out"], a["activations"]),
               ("params", "cache", "delta_out", "activations"), lambda r, a: _shapes(r) == _shapes(a["cache"].zs)),
    "backward": (lambda a: jbp.backward(a["params"], a["cache"], a["delta_out"], a["activations"]),
                 ("params", "cache", "delta_out", "activations"), lambda r, a: _shapes(r) == _shapes(a["params"])),
    "gradient_descent": (lambda a: jbp.gradient_descent(a["params"], a["grads"], a["lr"]), ("params", "grads", "lr"),
                         lambda r, a: _shapes(r) == _shapes(a["params"])),
    "train_step": (lambda a: jbp.train_step(a["net"], a["optimizer"], a["params"], a["opt_state"], a["x"], a["y"]),
                   ("optimizer", "params", "opt_state", "x", "y"), lambda r, a: _shapes(r[0]) == _shapes(a["params"])),
    "fit": (lambda a: jbp.fit(a["net"], a["params"], a["x"], a["y"], optimizer=a["optimizer"], epochs=a["epochs"],
                              batch_size=a["batch_size"], key=a["key"], tol=a["tol"], opt_state=a["opt_state"],
                              start_epoch=a["start_epoch"]),
            ("net", "params", "x", "y", "optimizer", "epochs", "batch_size", "key", "tol", "opt_state", "start_epoch"),
            _fit_ok),
    "check_grads": (lambda a: jbp.check_grads(a["net"], a["params"], a["x"], a["y"], rtol=a["rtol"], key=a["key"],
                                                  finite_differences=False),
                    ("net", "params", "x", "y", "rtol", "key"), lambda r, a: r.ok and math.isfinite(r.loss)),
}
#: Calls that refuse non-finite values; the others pass NaN through, as any JAX function.
CHECKS_VALUES = {"fit", "check_grads"}

SCALARS = [None, "a", True, 0, -1, 1, 2**40, 2.5, math.nan, math.inf, -math.inf, 1j, [1, 2],
           [[1, 2], [3]], {"W": 1}, (), np.int64(1), np.float32(0.5), jnp.int32(2), jnp.float32(-1.0)]
DTYPES = [np.bool_, np.int8, np.int32, np.uint8, np.float16, jnp.bfloat16, np.float32, np.float64, np.complex64]
FILLS = ["normal", "labels", "unit", "big", "nan", "inf", "zeros"]


@st.composite
def arrays(draw):
    """Random arrays: ranks 0-3, small dimensions (0 included), any dtype, extreme values."""
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 3, 4]), max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 3)))
    values = {
        "normal": lambda: rng.normal(size=shape), "labels": lambda: rng.integers(0, 3, size=shape),
        "unit": lambda: rng.uniform(size=shape), "big": lambda: 1e3 * rng.normal(size=shape),
        "nan": lambda: np.full(shape, np.nan), "inf": lambda: np.full(shape, -np.inf),
        "zeros": lambda: np.zeros(shape),
    }[draw(st.sampled_from(FILLS))]()
    with np.errstate(invalid="ignore"):
        a = np.asarray(values).astype(draw(st.sampled_from(DTYPES)))
    return jnp.asarray(a) if draw(st.booleans()) else a


@functools.cache
def near_misses(arg, net_name):
    """Values close to the valid argument ``arg``: some still valid, most not (built with
    NumPy, so that making them compiles nothing)."""
    a = _valid(net_name)
    net, n_out = a["net"], a["net"].sizes[-1]
    params, x, y, cache, delta = jax.tree.map(np.asarray, (a["params"], a["x"], a["y"], a["cache"], a["delta_out"]))
    f32 = lambda tree: jax.tree.map(lambda v: v.astype(np.float32), tree)
    first_set = lambda v, value: np.where(np.arange(v.size).reshape(v.shape) == 0, value, v)
    one_hot = np.eye(n_out)[np.arange(len(x)) % n_out]
    layers = lambda: [
        params[:-1], params + params[-1:], [*params], (params[0], Layer(params[1].W.T, params[1].b)),
        (params[0], Layer(params[1].W, params[1].b[:, None])), ((params[0].W, params[0].b), params[1]),
        f32(params), (Layer(first_set(params[0].W, np.nan), params[0].b), params[1]), P_BCE, P_MSE,
    ]
    misses = {
        "params": layers,
        "grads": layers,
        "x": lambda: [x.T, x[:, :2], x[:1], x[:0], x.astype(np.float32), np.round(x).astype(int), x > 0,
                      first_set(x, np.inf), np.concatenate([x, x]), x.tolist()],
        "y": lambda: [y[:2], y + n_out, y - 1, y.astype(np.float64), one_hot, -one_hot, y.reshape(-1), y[None],
                      y.tolist()],
        "cache": lambda: [jbp.Cache(cache.zs[:1], cache.xs[:2]), f32(cache), tuple(cache),
                          jbp.Cache(tuple(z[:2] for z in cache.zs), tuple(v[:2] for v in cache.xs)),
                          _valid("ce" if net_name == "bce" else "bce")["cache"]],
        "delta_out": lambda: [delta[:, :1], delta.T, delta[:1], delta.astype(np.float32), np.round(delta).astype(int)],
        "activations": lambda: [net.activations[:1], net.activations * 2, ("relu", "softmax"), ("tanh", "swish"),
                                [jbp.ACTIVATIONS["elu"], "sigmoid"], "tanh", [1, 2]],
        "key": lambda: [np.array([0, 1], np.uint32), np.zeros(3, np.uint32), KEYS],
        "dtype": lambda: [np.float32, "float16", jnp.bfloat16, "banana", np.int8, object],
        "sizes": lambda: [(3,), [], (3, 0, 2), (3, 2.5), "32", (2, 8, n_out), np.array([3, 5, n_out]), (3, 1)],
        "activation": lambda: ["swish", "softmax", ["relu"], ["relu", "tanh"], ("gelu",), 3],
        "loss": lambda: ["hinge", "mse", "cross_entropy", "binary_cross_entropy", 3],
        "optimizer": lambda: ["sgd", ADAM, lambda g: g, optax.sgd],
        "opt_state": lambda: [ADAM.init(params), optax.sgd(0.1, momentum=0.9).init(params), ()],
        "net": lambda: [MSE, CE, BCE, "CE", jbp.MLP((3, 4, 4, 2), loss=net.loss_name) if n_out == 2 else CE],
    }
    return misses[arg]() if arg in misses else []


def junk(arg, net_name):
    return st.one_of(st.sampled_from(SCALARS), arrays(), st.sampled_from(near_misses(arg, net_name) or [None]))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_calls_work_or_raise_a_clear_error(data):
    call = data.draw(st.sampled_from(sorted(CALLS)), label="call")
    net_name = data.draw(st.sampled_from(["ce", "bce"] if call == "accuracy" else ["ce", "bce", "mse"]), label="net")
    fn, takes, works = CALLS[call]
    args = dict(_valid(net_name))
    target = data.draw(st.sampled_from([None, *takes]), label="replaced")
    if target is not None:
        args[target] = data.draw(junk(target, net_name), label=target)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy's casts of NaN to int, and the like
            result = fn(args)
    except (ValueError, TypeError) as e:
        assert target is not None, f"{call} raised on valid arguments: {e!r}"
        where = traceback.extract_tb(e.__traceback__)[-1].filename
        assert pathlib.Path(where).is_relative_to(JBP_DIR), f"{call} raised inside {where}: {e!r}"
        # a network that does not fit the data is named by what does not fit: "the network
        # has 3 layers", "sizes[-1]", "y for cross_entropy"
        named = rf"\b{target}\b" if target != "net" else r"\b(net|network|sizes|mse|cross_entropy)\b"
        assert re.search(named, str(e)), f"{call}: the error does not name {target}: {e}"
        return
    assert works(result, args), f"{call} gave a wrong result: {result}"
    if call in CHECKS_VALUES or _finite([v for k, v in args.items() if k in takes]):
        assert _finite(result if call != "fit" else result[0]), f"{call} gave non-finite results: {result}"
