"""The pre-LayerNorm transformer block (GPT-2's), :func:`transformer_block`, made of
layers that each carry their own backward: :class:`Residual`, a norm,
:class:`CausalSelfAttention`, :class:`Dense` and the GELU activation.

Forward, on ``(batch, T, features)``::

    h = x + Attention(Norm(x))                      (a Residual)
    y = h + W_2 gelu(W_1 Norm(h) + b_1) + b_2       (a Residual, W_1: hidden x features)

Backward: each :class:`Residual` adds its skip path's ``dy`` to its block's ``dx``, and
each inner layer's backward is its own (see their docstrings); nothing new is derived.
"""

from __future__ import annotations

from jbp import _validate
from jbp.layers.attention import CausalSelfAttention
from jbp.layers.dense import Dense
from jbp.layers.dropout import Dropout
from jbp.layers.norm import LayerNorm, RMSNorm
from jbp.layers.residual import Residual

#: The norms a block can use, by name.
NORMS = {"layer": LayerNorm, "rms": RMSNorm}


def transformer_block(features: int, heads: int, *, hidden: int | None = None, dropout: float = 0.0,
                      keep: str = "lse", block: int = 128, norm: str = "layer") -> tuple[Residual, Residual]:
    """A pre-norm transformer block as two layers, the attention and the MLP residuals.

    Args:
      features: the model width (the input's last axis).
      heads: attention heads; must divide ``features``.
      hidden: the MLP's hidden width (default ``4 · features``).
      dropout: rate of a :class:`Dropout` at the end of each residual branch (0: none).
      keep, block: :class:`CausalSelfAttention`'s memory mode and key block.
      norm: ``"layer"`` (:class:`LayerNorm`) or ``"rms"`` (:class:`RMSNorm`).

    Returns:
      ``(Residual([norm, attention, ...]), Residual([norm, Dense(hidden), "gelu", Dense(features), ...]))``.
    """
    features = _validate.positive_int("transformer_block's features", features)
    hidden = 4 * features if hidden is None else _validate.positive_int("transformer_block's hidden", hidden)
    norm_layer = NORMS[_validate.name("transformer_block's norm", norm, tuple(NORMS))]
    drop = [Dropout(dropout)] if dropout else []
    attention = Residual([norm_layer(), CausalSelfAttention(heads, keep=keep, block=block), *drop])
    mlp = Residual([norm_layer(), Dense(hidden), "gelu", Dense(features), *drop])
    return attention, mlp
