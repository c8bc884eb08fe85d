"""A GPT (Radford et al. 2019) as a :class:`jbp.Sequential`: :func:`gpt`."""

from __future__ import annotations

from jbp import _validate
from jbp.layers.dropout import Dropout
from jbp.layers.embedding import Embedding, PositionEmbedding
from jbp.layers.lm_head import FusedLMHead
from jbp.layers.norm import LayerNorm
from jbp.layers.tied import TiedLM
from jbp.layers.transformer import transformer_block
from jbp.model.sequential import Sequential


def gpt(vocab: int, context: int, blocks: int, heads: int, features: int, dropout: float = 0.0, *,
        keep: str = "lse", block: int = 128, chunk: int | None = None, tied: bool = False) -> Sequential:
    """A decoder-only transformer language model over token ids.

    The layers, in order::

        Embedding(vocab, features), PositionEmbedding(context), [Dropout(dropout)],
        blocks x transformer_block(features, heads)   (two Residual layers each)
        LayerNorm(), FusedLMHead(vocab)

    ``x`` is ``(batch, context)`` integer ids, the output ``(batch, context, vocab)``
    (the softmax of the logits), the targets ``(batch, context)`` ids (usually ``x``
    shifted by one; ``-1`` for padding). The loss is the cross-entropy averaged over the
    positions, computed by the fused head without forming the logits.

    Args:
      vocab: the number of token ids.
      context: ``T``, the sequence length.
      blocks: transformer blocks.
      heads: attention heads per block; must divide ``features``.
      features: the model width.
      dropout: dropout rate after the embeddings and at the end of each residual branch.
      keep, block: the attention's memory mode (``"lse"``: memory linear in ``T``;
        ``"probs"``: keep ``P``) and key block, see :class:`jbp.layers.CausalSelfAttention`.
      chunk: token positions per chunk of the fused head (default: 2²⁰ logits' worth,
        see :func:`jbp.layers.lm_head.chunk_rows`).
      tied: the head's weight is the embedding's table (GPT-2's), both gradients summed:
        the whole model is then one :class:`jbp.layers.TiedLM` layer holding the same
        layers, ``params[0] = TiedLMParams(table, body, bias)``.

    Returns:
      A :class:`jbp.Sequential` that :func:`jbp.fit` and :func:`jbp.check_grads` take.
    """
    blocks = _validate.integer("gpt's blocks", blocks, low=0)
    body = [PositionEmbedding(context)]
    if dropout:
        body.append(Dropout(dropout))
    for _ in range(blocks):
        body += transformer_block(features, heads, dropout=dropout, keep=keep, block=block)
    body.append(LayerNorm())
    if _validate.flag("gpt's tied", tied):
        layers = [TiedLM(vocab, features, body, chunk)]
    else:
        layers = [Embedding(vocab, features), *body, FusedLMHead(vocab, chunk)]
    return Sequential((_validate.positive_int("gpt's context", context),), layers, loss="cross_entropy")
