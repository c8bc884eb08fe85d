"""jbp: the backpropagation algorithm in JAX, with hand-derived gradients.

The seed's equations, each in one function (see README, "The equations"):

- BP1 ``z = W x + b``                         :func:`jbp.layers.dense.dense`
- BP2 ``x = f(z)``                            :attr:`jbp.model.activations.Activation.f`
- BP3 ``dL/dx = Σ_k dL/dz_k w_k``             :func:`jbp.layers.dense.input_grad`
- BP4 ``dL/dz = dL/dx · f'(z)``               :meth:`jbp.model.activations.Activation.delta`
- BP5 ``dL/dW = dL/dz · x_prev``              :func:`jbp.layers.dense.weight_grad`
- BP6 ``dL/db = dL/dz``                       :func:`jbp.layers.dense.bias_grad`
- BP7 ``w ← w − α dL/dw``                     :func:`jbp.training.update.gradient_descent`
"""

from jbp import layers
from jbp.model.activations import ACTIVATIONS, Activation
from jbp.model.backward_pass import backward, deltas
from jbp.model.bridge import custom_vjp_loss
from jbp.verify.grads import Equations, GradCheckReport, check_grads
from jbp.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from jbp.model.forward_pass import Cache, forward
from jbp.model.initializers import INITIALIZERS
from jbp.model.losses import LOSSES, Loss
from jbp.verify.mutations import MUTATIONS, MutationReport, mutation_test
from jbp.model.network import MLP
from jbp.model.params import Layer
from jbp.model.per_example import per_example_grads
from jbp.model.sequential import Sequential
from jbp.training.sweep import sweep
from jbp.training.fit import History, fit
from jbp.training.update import gradient_descent, make_train_step, train_step
from jbp.verify.vjp import GradCheckFailure, VJPCheckReport, check_vjp, check_vjp_many
from jbp.verify.layer import LayerCheckReport, check_layer
from jbp import rules

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Cache",
    "Checkpoint",
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
    "Sequential",
    "VJPCheckReport",
    "backward",
    "check_grads",
    "check_layer",
    "check_vjp",
    "check_vjp_many",
    "custom_vjp_loss",
    "deltas",
    "fit",
    "forward",
    "gradient_descent",
    "layers",
    "load_checkpoint",
    "make_train_step",
    "mutation_test",
    "per_example_grads",
    "rules",
    "save_checkpoint",
    "sweep",
    "train_step",
]
