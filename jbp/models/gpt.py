"""A GPT (Radford et al. 2019) as a :class:`jbp.Sequential`, :func:`gpt`, and sampling
from it, :func:`generate`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jbp import _validate
from jbp.layers.dropout import Dropout
from jbp.layers.embedding import Embedding, PositionEmbedding
from jbp.layers.lm_head import FusedLMHead
from jbp.layers.norm import LayerNorm
from jbp.layers.tied import TiedLM
from jbp.layers.transformer import transformer_block
from jbp.model import base
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


def generate(net: Sequential, params, prompt, tokens: int, *, key, temperature: float = 1.0) -> np.ndarray:
    """Samples ``tokens`` ids after ``prompt`` from a network of token ids (a :func:`gpt`).

    Each new id is drawn from ``softmax(z / temperature)``, ``z`` the logits at the last
    filled position of a window of ``T = net.input_shape[0]`` ids: the prompt and the
    ids drawn so far, left-aligned while they are shorter than ``T`` (the causal mask
    keeps the unfilled positions after them from being seen), else their last ``T``.
    Compiled as one ``lax.scan`` over the new ids.

    Args:
      net: a :class:`jbp.Sequential` whose first layer takes ids (``net.input_vocab``).
      params: its parameters.
      prompt: at least one id, 1-D (a text's ids: ``vocab.encode(text)``).
      tokens: how many ids to draw.
      key: PRNG key; each step draws from ``fold_in(key, step)``.
      temperature: > 0; lower is greedier.

    Returns:
      The prompt followed by the new ids, int32 ``(len(prompt) + tokens,)``.
    """
    if getattr(net, "input_vocab", None) is None:
        raise TypeError(f"net must be a network of token ids (first layer an Embedding), got {_validate.describe(net)}")
    base.params(net, params)
    prompt = np.asarray(prompt)
    if prompt.ndim != 1 or prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"prompt must be a non-empty 1-D array of integer ids, got {_validate.describe(prompt)}")
    if prompt.min() < 0 or prompt.max() >= net.input_vocab:
        raise ValueError(f"prompt holds ids in [{prompt.min()}, {prompt.max()}] but the vocabulary has {net.input_vocab}")
    tokens = _validate.integer("tokens", tokens, low=0)
    _validate.prng_key("key", key)
    _validate.real("temperature", temperature, positive=True, finite=True)
    return np.asarray(_sample(net, params, jnp.asarray(prompt, jnp.int32), tokens, key, jnp.asarray(temperature)))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _sample(net, params, prompt, tokens, key, temperature):
    T, n = net.input_shape[0], prompt.shape[0]
    ids = jnp.zeros(max(n + tokens, T), jnp.int32).at[:n].set(prompt)

    def step(ids, i):  # i: the position to fill
        start = jnp.maximum(i - T, 0)
        window = lax.dynamic_slice(ids, (start,), (T,))
        _, cache = net.forward_unchecked(params, window[None])
        z = cache.z[0, i - 1 - start]
        new = jax.random.categorical(jax.random.fold_in(key, i), z / temperature.astype(z.dtype))
        return ids.at[i].set(new.astype(jnp.int32)), None

    ids, _ = lax.scan(step, ids, jnp.arange(n, n + tokens))
    return ids[: n + tokens]
