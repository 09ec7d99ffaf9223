"""The text encoder: a small pre-LN transformer over sentencepiece tokens.

Tokens (B, L) int32 with a mask (B, L) bool (vidgen.text.tokenizer: 0 pads,
EOS ends every caption, so the empty caption is one EOS token) become
per-token embeddings (B, L, D) and the same mask. Padding never changes the
embeddings of real tokens: attention only looks at masked-in keys. The DiT
trains it jointly by default (`text.encoder.trainable`), or keeps it frozen.

Shape legend: B batch, L tokens, D width, N heads.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen.models import attention
from vidgen.models.layers import dense, partitioned
from vidgen.parallel import axes

Array = jax.Array
Dtype = Any


def layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
  """A LayerNorm whose scale and bias carry the NORM logical axis."""
  return nn.LayerNorm(name=name, dtype=dtype, param_dtype=param_dtype,
                      scale_init=partitioned(nn.initializers.ones, axes.NORM),
                      bias_init=partitioned(nn.initializers.zeros, axes.NORM))


class MLP(nn.Module):
  """Dense -> GELU (tanh) -> Dense, D -> hidden -> D.

  Attributes:
    hidden: hidden width.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  hidden: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = dense(self.hidden, name="fc_in", names=(axes.EMBED, axes.MLP), **kw)(x)
    return dense(x.shape[-1], name="fc_out", names=(axes.MLP, axes.EMBED), **kw)(
        nn.gelu(h, approximate=True))


class EncoderBlock(nn.Module):
  """x + Attention(LN(x)) under the key mask, then x + MLP(LN(x)).

  Attributes:
    heads: N.
    mlp_ratio: MLP hidden width / D.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array) -> Array:
    """x (B, L, D), mask (B, L) -> (B, L, D)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    key_mask = mask[:, None, None, :]  # (B, 1, 1, L): every query sees the caption's tokens
    h = layer_norm("norm_attn", **kw)(x)
    x = x + attention.Attention(self.heads, name="attn", **kw)(h, mask=key_mask)
    h = layer_norm("norm_mlp", **kw)(x)
    return x + MLP(int(x.shape[-1] * self.mlp_ratio), name="mlp", **kw)(h)


class TextEncoder(nn.Module):
  """Token embedding + learned positions -> `depth` blocks -> LayerNorm.

  Attributes:
    vocab_size: ids in the tokenizer.
    max_len: longest caption in tokens.
    width: D.
    depth: blocks.
    heads: N.
    mlp_ratio: MLP hidden width / D.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  vocab_size: int
  max_len: int
  width: int = 128
  depth: int = 2
  heads: int = 4
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, mask: Array) -> tuple[Array, Array]:
    """tokens (B, L) int32, mask (B, L) bool -> ((B, L, D), mask)."""
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f"captions of {length} tokens; the text encoder takes at most {self.max_len}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # Unit-scale tables, like the attention and MLP branches added to them: at 0.02 the shared
    # context swamped the one word that tells two captions apart (docs/training.md, Text).
    embed = nn.Embed(self.vocab_size, self.width, name="embed", param_dtype=self.param_dtype,
                     embedding_init=partitioned(nn.initializers.normal(1.0), axes.VOCAB, axes.EMBED))
    pos = self.param("pos", partitioned(nn.initializers.normal(1.0), axes.TABLE, axes.EMBED),
                     (self.max_len, self.width), self.param_dtype)
    x = (embed(tokens) + pos[None, :length]).astype(self.dtype)
    x = nn.with_logical_constraint(x, (axes.BATCH, None, None))
    for i in range(self.depth):
      x = EncoderBlock(self.heads, self.mlp_ratio, name=f"block_{i}", **kw)(x, mask)
    x = layer_norm("norm_out", **kw)(x)
    return x, mask


def encoder_from_config(text_cfg: Any, vocab_size: int, dtype: Dtype = jnp.float32,
                        param_dtype: Dtype = jnp.float32) -> TextEncoder:
  """The encoder `config.text.encoder` describes, for a tokenizer of `vocab_size` ids."""
  e = text_cfg.encoder
  return TextEncoder(vocab_size=int(vocab_size), max_len=int(text_cfg.max_len),
                     width=int(e.width), depth=int(e.depth), heads=int(e.heads),
                     mlp_ratio=float(e.mlp_ratio), dtype=jnp.dtype(dtype),
                     param_dtype=jnp.dtype(param_dtype))
