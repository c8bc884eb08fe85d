"""Learning rules beyond backprop: ``jbp.rules.feedback_alignment(key)`` and the others.

The public face of :mod:`jbp.model.rules` (read its docstring for the math and the
protocol a rule of your own follows: ``init(net, params)`` and ``input_grad(layer,
params, residuals, dy, feedback, delta_out)``; :func:`weighted` and :func:`through` help
write one). Pass a rule to :func:`jbp.fit`, :func:`jbp.train_step`, :func:`jbp.make_train_step` or
:func:`jbp.sweep` as ``rule=``; its fixed feedback weights, ``rule.init(net, params)``,
travel with the training state.
"""

from jbp.model.rules import (
    RULES,
    Pass,
    Rule,
    backprop,
    by_name,
    direct_feedback_alignment,
    feedback_alignment,
    forward_backward,
    loss_and_update,
    project,
    sign_symmetry,
    through,
    weighted,
)

__all__ = [
    "RULES",
    "Pass",
    "Rule",
    "backprop",
    "by_name",
    "direct_feedback_alignment",
    "feedback_alignment",
    "forward_backward",
    "loss_and_update",
    "project",
    "sign_symmetry",
    "through",
    "weighted",
]
