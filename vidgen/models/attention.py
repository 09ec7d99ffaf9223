"""Multi-head attention shared by the transformers (DiT, text encoder, captioner).

One module, `Attention`, does self- and cross-attention over the last token
axis of inputs with any number of leading axes, so the DiT's bucketed fast
path attends within frames `(B, T, S, D)` or along time `(B, S, T, D)` with no
reshapes and no clip-wide mask, and its packed path attends over `(B, L, D)`
with a segment mask. Masks are boolean, True where a query may see a key,
broadcastable to `(..., N, Lq, Lk)`. The softmax runs in float32; a query
whose keys are all masked gets a uniform average (finite, never NaN).

Shape legend: B batch, T frames, S spatial positions, L tokens, D width,
N heads, K head dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen.parallel import axes

Array = jax.Array
Dtype = Any

MASKED = -1e30  # finite, so a fully masked row stays finite


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array | None = None,
                          scale: float | None = None) -> Array:
  """softmax(scale q k^T) v: q (..., Lq, N, K), k and v (..., Lk, N, K) -> (..., Lq, N, K).

  `scale` defaults to 1 / sqrt(K); pass 1.0 when q is already scaled.
  """
  logits = jnp.einsum("...qnk,...snk->...nqs", q, k, preferred_element_type=jnp.float32)
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  if scale != 1.0:
    logits = logits * scale
  if mask is not None:
    logits = jnp.where(mask, logits, MASKED)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("...nqs,...snk->...qnk", weights, v)


def chunked_attention(q: Array, k: Array, v: Array, mask: Array | None = None,
                      scale: float | None = None, *, chunk: int = 0) -> Array:
  """`dot_product_attention` over blocks of `chunk` queries, for long sequences.

  A `lax.map` over query blocks, each block under `jax.checkpoint`: the
  float32 logits of one block (..., N, chunk, Lk) exist at a time, in the
  forward and in the backward pass (which recomputes them), instead of all
  (..., N, Lq, Lk). The result is the same. `chunk` <= 0 or >= Lq: no blocks.
  The mask must not vary along the query axis (its Lq dimension is 1).
  """
  lq = q.shape[-3]
  if chunk <= 0 or lq <= chunk:
    return dot_product_attention(q, k, v, mask, scale)
  if mask is not None and mask.shape[-2] != 1:
    raise ValueError(f"chunked attention takes a mask without a query axis; got {mask.shape}")
  blocks = -(-lq // chunk)
  lead, tail = q.shape[:-3], q.shape[-2:]
  q = jnp.pad(q, [(0, 0)] * len(lead) + [(0, blocks * chunk - lq), (0, 0), (0, 0)])
  q = jnp.moveaxis(q.reshape(*lead, blocks, chunk, *tail), -4, 0)  # (blocks, ..., chunk, N, K)
  block = jax.checkpoint(lambda qb: dot_product_attention(qb, k, v, mask, scale))
  out = jnp.moveaxis(jax.lax.map(block, q), 0, -4)
  return out.reshape(*lead, blocks * chunk, *tail)[..., :lq, :, :]


def rope_tables(positions: tuple[Array, ...], head_dim: int, base: float = 10_000.0
                ) -> tuple[Array, Array]:
  """Rotary (cos, sin) of integer positions along one or more axes: (...,) each -> 2 x (..., K/2).

  The head dim's K/2 rotation pairs are split evenly between the axes (axis
  `a` takes pairs [a K/(2A), (a+1) K/(2A))), each axis with the frequencies
  base^(-i/n), i < n, of its n pairs; so a query-key logit depends on the
  positions only through their differences along every axis. Computed once
  per forward pass and shared by every block.
  """
  if head_dim % (2 * len(positions)):
    raise ValueError(f"rotary positions over {len(positions)} axes need a head dim divisible "
                     f"by {2 * len(positions)}; got {head_dim}")
  n = head_dim // (2 * len(positions))
  freqs = base ** (-jnp.arange(n, dtype=jnp.float32) / n)
  angles = jnp.concatenate([p.astype(jnp.float32)[..., None] * freqs for p in positions], -1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, rope: tuple[Array, Array]) -> Array:
  """Rotates pairs (x_i, x_{i+K/2}) of x (..., L, N, K) by `rope_tables` broadcastable to (..., L, 1, K/2)."""
  half = x.shape[-1] // 2
  cos, sin = (r.astype(x.dtype) for r in rope)
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class RMSNorm(nn.Module):
  """RMS normalisation over the last axis with a learned scale (queries and keys per head).

  Attributes:
    names: logical axis name of the scale.
    param_dtype: parameter dtype.
  """

  names: tuple[str, ...] = (axes.KV,)
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, apply_scale: bool = True) -> Array | tuple[Array, Array]:
    """x / rms(x) * scale; with `apply_scale=False`, (x / rms(x), scale) for the caller to fold."""
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, self.names),
                       (x.shape[-1],), self.param_dtype)
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + 1e-6)
    if not apply_scale:
      return y.astype(x.dtype), scale.astype(x.dtype)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


class Attention(nn.Module):
  """Multi-head attention: queries from `x`, keys and values from `context` (or `x`).

  Attributes:
    heads: N; the head dim is the query width / N.
    qk_norm: RMS-normalise queries and keys per head.
    dtype: compute dtype (the softmax is float32).
    param_dtype: parameter dtype.
  """

  heads: int
  qk_norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array | None = None, mask: Array | None = None,
               attend: Callable[..., Array] | None = None,
               rope: tuple[Array, Array] | None = None) -> Array:
    """x (..., Lq, D), context (..., Lk, Dc) -> (..., Lq, D).

    `attend(q, k, v, mask, scale)` replaces `dot_product_attention` (same
    shapes and meaning), e.g. a context-parallel form (vidgen/parallel/context.py).
    `rope`: self-attention only, rotary (cos, sin) (`rope_tables`) broadcastable
    to (..., L, 1, K/2), applied to queries and keys after their norm.
    """
    if rope is not None and context is not None:
      raise ValueError("rotary positions are for self-attention")
    context = x if context is None else context
    d, dc = x.shape[-1], context.shape[-1]
    if d % self.heads:
      raise ValueError(f"attention width {d} is not divisible by {self.heads} heads")
    n, k = self.heads, d // self.heads
    in_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                               in_axis=0, out_axis=(1, 2))
    out_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                in_axis=(0, 1), out_axis=2)

    def proj(name, width):
      return self.param(name, nn.with_logical_partitioning(in_init, (axes.EMBED, axes.HEADS, axes.KV)),
                        (width, n, k), self.param_dtype)

    wq, wk, wv = proj("query", d), proj("key", dc), proj("value", dc)
    wo = self.param("out", nn.with_logical_partitioning(out_init, (axes.HEADS, axes.KV, axes.EMBED)),
                    (n, k, d), self.param_dtype)
    x, context, wq, wk, wv, wo = nn.dtypes.promote_dtype(
        x, context, wq, wk, wv, wo, dtype=self.dtype)
    q = jnp.einsum("...ld,dnk->...lnk", x, wq)
    key = jnp.einsum("...ld,dnk->...lnk", context, wk)
    value = jnp.einsum("...ld,dnk->...lnk", context, wv)
    scale = None
    if self.qk_norm:
      q, q_scale = RMSNorm(param_dtype=self.param_dtype, name="query_norm")(q, apply_scale=False)
      key, k_scale = RMSNorm(param_dtype=self.param_dtype, name="key_norm")(key, apply_scale=False)
      if rope is None:
        # (q / rms q * a) . (k / rms k * b) / sqrt(K) with the per-dimension scales a, b and
        # 1 / sqrt(K) folded into one multiply of q: the same logits, a third of the
        # elementwise work (it is a tenth of a block's time on CPU otherwise).
        q = q * (q_scale * k_scale / math.sqrt(k))
      else:  # the rotation mixes dimensions, so each side keeps its own scale
        q, key = q * (q_scale / math.sqrt(k)), key * k_scale
      scale = 1.0
    if rope is not None:
      q, key = apply_rope(q, rope), apply_rope(key, rope)
    out = (attend or dot_product_attention)(q, key, value, mask, scale)
    return jnp.einsum("...lnk,nkd->...ld", out, wo)
