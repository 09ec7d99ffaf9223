"""Context parallelism: attention over a token axis sharded across the `context` mesh axis.

Long videos do not fit one chip, so the DiT shards its tokens by frame over
the `context` mesh axis (`axes.FRAMES` -> "context"): spatial attention, the
MLP, cross-attention and adaLN see whole frames and stay local. Only temporal
attention mixes frames, and it has two context-parallel forms (config
`dit.context_attention`):

  ulysses  (DeepSpeed-Ulysses) an all-to-all turns the frame-sharded queries,
           keys and values into a head-sharded layout (every device holds
           all frames of N / context heads), attention runs locally, and a
           second all-to-all returns the frame-sharded layout. Written as
           sharding constraints; XLA's partitioner emits the all-to-alls.
           Needs heads divisible by tensor x context to avoid padding.
  ring     (Ring Attention) every device keeps its query frames and passes
           its key/value frames around the ring (`ppermute`), `context`
           steps of blockwise attention combined with an online softmax, so
           no device ever holds all keys. Needs the frames to divide by
           `context`; the heads need not.

Both give the same output as unsharded attention (tests/parallel/
test_context_parallel.py checks outputs and gradients on 8 devices). Without
a mesh, or with `context` 1, both are plain attention.

Shape legend: B batch, S spatial positions, T frames, N heads, K head dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vidgen.models import attention
from vidgen.parallel import axes

Array = jax.Array
MODES = ("ulysses", "ring")
AXIS = "context"  # the mesh axis


def _mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def context_size() -> int:
  """Devices on the `context` axis of the mesh in scope (1 without a mesh)."""
  mesh = _mesh()
  if mesh is None or AXIS not in mesh.axis_names:
    return 1
  return int(mesh.shape[AXIS])


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"unknown context attention {mode!r}; known: {', '.join(MODES)}")


def ulysses(q: Array, k: Array, v: Array, mask: Array | None, scale: float | None,
            leading: tuple[str | None, ...]) -> Array:
  """Attention along axis -3 of (..., T, N, K) arrays whose T is sharded over `context`.

  `leading` names the axes before T (e.g. (BATCH, None) for (B, S, T, N, K)).
  The constraints move `context` from T to the heads and back; between them
  attention is local.
  """
  by_heads = (*leading, None, axes.CONTEXT_HEADS, axes.KV)
  by_frames = (*leading, axes.FRAMES, axes.HEADS, axes.KV)
  q, k, v = (nn.with_logical_constraint(a, by_heads) for a in (q, k, v))
  out = attention.dot_product_attention(q, k, v, mask, scale)
  return nn.with_logical_constraint(out, by_frames)


def _spec_for(name: str, size: int, mesh) -> str | tuple[str, ...] | None:
  """The mesh axes a logical name maps to, if they divide `size` (else replicated)."""
  target = nn.logical_to_mesh_axes((name,))[0]
  if target is None:
    return None
  names = target if isinstance(target, tuple) else (target,)
  if size % math.prod(int(mesh.shape[n]) for n in names):
    return None
  return target


def ring(q: Array, k: Array, v: Array, q_index: Array, k_index: Array, k_known: Array,
         visible: Callable[[Array, Array, Array], Array], scale: float | None) -> Array:
  """Ring attention along T of (B, S, T, N, K) arrays, T sharded over `context`.

  Args:
    q, k, v: (B, S, T, N, K).
    q_index, k_index: (B, T) int frame index of each query / key frame.
    k_known: (B, T) bool, the key frame is given (conditioning).
    visible: (q_index (B, Tq, 1), k_index (B, 1, Tk), k_known (B, 1, Tk)) -> (B, Tq, Tk)
      bool, where a query frame may see a key frame.
    scale: logit scale (None: 1 / sqrt(K)).

  Returns:
    (B, S, T, N, K), equal to softmax attention over all T with mask `visible`
    (a query with no visible key averages all keys uniformly, as
    `attention.dot_product_attention` does).
  """
  mesh = _mesh()
  c = context_size()
  b, _, t, n, _ = q.shape
  if c == 1:
    mask = visible(q_index[:, :, None], k_index[:, None, :], k_known[:, None, :])
    return attention.dot_product_attention(q, k, v, mask[:, None, None], scale)
  if t % c:
    raise ValueError(f"ring attention shards the {t} patch frames over context={c}: "
                     "they must divide (or use dit.context_attention=ulysses)")
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  batch = _spec_for(axes.BATCH, b, mesh)
  heads = _spec_for(axes.HEADS, n, mesh)
  tokens = P(batch, None, AXIS, heads, None)
  index = P(batch, AXIS)
  shift = [(j, (j + 1) % c) for j in range(c)]

  def local(q, k, v, qi, ki, kk):
    # Online softmax over the c key blocks: running max m, normaliser l, output o.
    m = jnp.full(q.shape[:2] + (q.shape[3], q.shape[2]), attention.MASKED, jnp.float32)
    l = jnp.zeros_like(m)  # (B, S, N, Tq)
    o = jnp.zeros(q.shape, jnp.float32)  # (B, S, Tq, N, K)
    for step in range(c):
      logits = jnp.einsum("bsqnk,bstnk->bsnqt", q, k,
                          preferred_element_type=jnp.float32) * scale
      mask = visible(qi[:, :, None], ki[:, None, :], kk[:, None, :])[:, None, None]
      logits = jnp.where(mask, logits, attention.MASKED)
      m_new = jnp.maximum(m, logits.max(-1))
      p = jnp.exp(logits - m_new[..., None])
      correction = jnp.exp(m - m_new)
      l = l * correction + p.sum(-1)
      o = o * jnp.swapaxes(correction, -1, -2)[..., None] + jnp.einsum(
          "bsnqt,bstnk->bsqnk", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
      m = m_new
      if step < c - 1:  # pass this block of keys on to the next device
        k, v, ki, kk = (jax.lax.ppermute(a, AXIS, shift) for a in (k, v, ki, kk))
    return (o / jnp.swapaxes(l, -1, -2)[..., None]).astype(v.dtype)

  return jax.shard_map(local, mesh=mesh, in_specs=(tokens, tokens, tokens, index, index, index),
                       out_specs=tokens)(q, k, v, q_index, k_index, k_known)
