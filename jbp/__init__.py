"""jbp: the backpropagation algorithm in JAX, with hand-derived gradients.

The seed's equations, each in one function (see README, "The equations"):

- BP1 ``z = W x + b``                         :func:`jbp.forward_pass.dense`
- BP2 ``x = f(z)``                            :attr:`jbp.activations.Activation.f`
- BP3 ``dL/dx = Σ_k dL/dz_k w_k``             :func:`jbp.backward_pass.input_grad`
- BP4 ``dL/dz = dL/dx · f'(z)``               :meth:`jbp.activations.Activation.delta`
- BP5 ``dL/dW = dL/dz · x_prev``              :func:`jbp.backward_pass.weight_grad`
- BP6 ``dL/db = dL/dz``                       :func:`jbp.backward_pass.bias_grad`
- BP7 ``w ← w − α dL/dw``                     :func:`jbp.update.gradient_descent`
"""

from jbp.activations import ACTIVATIONS, Activation
from jbp.backward_pass import backward, deltas
from jbp.bridge import custom_vjp_loss
from jbp.check import Equations, GradCheckReport, check_grads
from jbp.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from jbp.forward_pass import Cache, forward
from jbp.initializers import INITIALIZERS
from jbp.losses import LOSSES, Loss
from jbp.mutation_check import MUTATIONS, MutationReport, mutation_test
from jbp.network import MLP
from jbp.params import Layer
from jbp.per_example import per_example_grads
from jbp.sweep import sweep
from jbp.train import History, fit
from jbp.update import gradient_descent, make_train_step, train_step
from jbp.vjp_check import GradCheckFailure, VJPCheckReport, check_vjp, check_vjp_many

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
    "Loss",
    "MLP",
    "MUTATIONS",
    "MutationReport",
    "VJPCheckReport",
    "backward",
    "check_grads",
    "check_vjp",
    "check_vjp_many",
    "custom_vjp_loss",
    "deltas",
    "fit",
    "forward",
    "gradient_descent",
    "load_checkpoint",
    "make_train_step",
    "mutation_test",
    "per_example_grads",
    "save_checkpoint",
    "sweep",
    "train_step",
]
