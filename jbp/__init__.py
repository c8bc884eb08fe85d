"""jbp: the backpropagation algorithm in JAX, with hand-derived gradients.

The seed's equations, each in one function (see README, "The equations"):

- BP1 ``z = W x + b``                         :func:`jbp.layers.dense.dense`
- BP2 ``x = f(z)``                            :attr:`jbp.layers.activations.Activation.f`
- BP3 ``dL/dx = Σ_k dL/dz_k w_k``             :func:`jbp.layers.dense.input_grad`
- BP4 ``dL/dz = dL/dx · f'(z)``               :meth:`jbp.layers.activations.Activation.delta`
- BP5 ``dL/dW = dL/dz · x_prev``              :func:`jbp.layers.dense.weight_grad`
- BP6 ``dL/db = dL/dz``                       :func:`jbp.layers.dense.bias_grad`
- BP7 ``w ← w − α dL/dw``                     :func:`jbp.training.update.gradient_descent`
"""

from jbp import layers
from jbp.layers.activations import ACTIVATIONS, Activation
from jbp.model.backward_pass import backward, deltas
from jbp.model.bridge import custom_vjp_loss
from jbp.verify.grads import Equations, GradCheckReport, check_grads
from jbp.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from jbp.model.forward_pass import Cache, forward
from jbp.layers.initializers import INITIALIZERS
from jbp.model.losses import LOSSES, Loss
from jbp.verify.mutations import MUTATIONS, MutationReport, mutation_test
from jbp.model.network import MLP
from jbp.layers.params import Layer
from jbp.model.per_example import clipped_grad, per_example_grads, per_example_norms
from jbp.model.sequential import Sequential
from jbp.training import privacy
from jbp.training.privacy import DPSGD
from jbp.training.sweep import sweep
from jbp.training.distributed import ProcessLost
from jbp.training.fit import History, fit
from jbp.training.early_stopping import Best
from jbp.training.stream import fit_stream
from jbp.training.update import gradient_descent, make_train_step, train_step
from jbp.verify.vjp import GradCheckFailure, VJPCheckReport, check_vjp, check_vjp_many
from jbp.verify.layer import LayerCheckReport, check_layer
from jbp import rules
from jbp import curvature
from jbp.curvature import kfac

__version__ = "0.1.0"

#: Subpackages imported on first use (``jbp.datasets.load("xor")`` without importing
#: ``jbp.datasets`` first), so that ``import jbp`` stays as fast as the model needs.
_LAZY_SUBMODULES = ("datasets", "cli", "models")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"jbp.{name}")
    raise AttributeError(f"module 'jbp' has no attribute {name!r}")

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Best",
    "Cache",
    "Checkpoint",
    "DPSGD",
    "Equations",
    "GradCheckFailure",
    "GradCheckReport",
    "History",
    "INITIALIZERS",
    "LOSSES",
    "Layer",
    "LayerCheckReport",
    "Loss",
    "MLP",
    "MUTATIONS",
    "MutationReport",
    "ProcessLost",
    "Sequential",
    "VJPCheckReport",
    "backward",
    "check_grads",
    "check_layer",
    "check_vjp",
    "check_vjp_many",
    "clipped_grad",
    "curvature",
    "custom_vjp_loss",
    "deltas",
    "fit",
    "fit_stream",
    "forward",
    "gradient_descent",
    "kfac",
    "layers",
    "load_checkpoint",
    "make_train_step",
    "mutation_test",
    "per_example_grads",
    "per_example_norms",
    "privacy",
    "rules",
    "save_checkpoint",
    "sweep",
    "train_step",
]
