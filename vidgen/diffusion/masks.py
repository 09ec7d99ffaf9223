"""Training-time conditioning: which frames are known, FDM frame subsets, caption dropout.

One masked-frame mechanism serves every generation mode: a known frame is a
clean latent frame at time 0 with no loss. Training draws, per clip, one mask
kind with the config's weights (`diffusion.masks`):

  none        nothing known (text-to-video; images are always "none")
  first       frame 0 (image-to-video)
  first_k     frames [0, k), k uniform in [1, T - 1] (extension forwards)
  last_k      frames [T - k, T) (extension backwards)
  first_last  frames 0 and T - 1 (interpolation, looping, stitching)
  random      each frame with probability 1/2 (in-filling, FDM-style sampling)

Every mask leaves at least one frame unknown. Everything here is jittable;
frame counts are static Python ints.

Shape legend: B batch, T frames, L tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vidgen.text.tokenizer import EOS_ID, PAD_ID

Array = jax.Array

MASK_KINDS = ("none", "first", "first_k", "last_k", "first_last", "random")


def _kind_probs(weights: Mapping[str, float]) -> np.ndarray:
  weights = dict(weights)
  unknown = sorted(set(weights) - set(MASK_KINDS))
  if unknown:
    raise ValueError(f"unknown mask kinds {unknown}; valid kinds are {MASK_KINDS}")
  w = np.array([float(weights.get(k, 0.0)) for k in MASK_KINDS], np.float64)
  if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
    raise ValueError(f"mask weights must be finite, >= 0 and not all 0, got {dict(weights)}")
  return w / w.sum()


def sample_known(rng: Array, batch: int, frames: int, weights: Mapping[str, float]) -> Array:
  """Draws which frames of each clip are known (conditioning frames).

  Args:
    rng: PRNG key.
    batch: number of clips B.
    frames: latent frames per clip T (static).
    weights: relative weight of each kind in MASK_KINDS (missing kinds: 0).

  Returns:
    bool (B, T), True for known frames. At least one frame per clip is
    unknown: a mask that would know every frame (first_last with T = 2, or an
    all-heads `random` draw) gets one uniformly chosen frame unknown. For
    T == 1 (images) nothing is known.
  """
  probs = _kind_probs(weights)
  if frames <= 1:
    return jnp.zeros((batch, frames), bool)
  # One uniform draw per clip serves every choice (cheap to compile and run):
  # columns 0 kind, 1 k, 2 the frame freed from an all-known mask, 3.. random.
  u = jax.random.uniform(rng, (batch, frames + 3))
  # Inverse CDF over kinds; a threshold after which only weight-0 kinds remain
  # is never crossed, whatever the rounding of the cumulative sum.
  cum = np.cumsum(probs)[:-1]
  thresholds = np.where(np.cumsum(probs[::-1])[::-1][1:] > 0, cum, 2.0)
  kind = jnp.sum(u[:, :1] >= jnp.asarray(thresholds, jnp.float32), axis=1)  # B
  k = 1 + jnp.minimum(jnp.floor(u[:, 1:2] * (frames - 1)), frames - 2).astype(jnp.int32)  # B 1
  free = jnp.minimum(jnp.floor(u[:, 2:3] * frames), frames - 1).astype(jnp.int32)  # B 1
  idx = jnp.arange(frames)[None, :]  # 1 T
  candidates = jnp.stack([
      jnp.zeros((batch, frames), bool),  # none
      jnp.broadcast_to(idx == 0, (batch, frames)),  # first
      idx < k,  # first_k, k in [1, T - 1]
      idx >= frames - k,  # last_k
      jnp.broadcast_to((idx == 0) | (idx == frames - 1), (batch, frames)),  # first_last
      u[:, 3:] < 0.5,  # random
  ])  # kinds B T
  known = jnp.take_along_axis(candidates, kind[None, :, None], axis=0)[0]  # B T
  all_known = jnp.all(known, axis=1, keepdims=True)  # B 1
  return known & ~(all_known & (idx == free))


def fdm_subset(rng: Array, batch: int, total: int, frames: int) -> Array:
  """Sorted distinct frame indices for FDM training on sparse subsets of longer clips.

  The training distribution follows Flexible Diffusion Modeling (Harvey et
  al. 2022), whose training masks are unions of groups of evenly spaced
  frames: a group of s ~ U{1..frames} frames at a log-uniform spacing in
  [1, total / (s - 0.999)], at a uniform position. Per clip, with probability
  1/2 we draw a contiguous window of `frames` frames at a uniform start (what
  plain and autoregressive sampling see), otherwise a FDM union: `frames`
  such groups, taken in order (a frame belongs to the first group holding it)
  until `frames` frames are chosen; within the group that overfills, a random
  part is kept, and should the groups cover too few frames, uniformly random
  further frames fill up. The result covers near and far frames at every
  scale, as long-range and hierarchical sampling schemes condition on.

  Args:
    rng: PRNG key.
    batch: number of clips B.
    total: frames in the long clip (static).
    frames: frames to choose (static), 1 <= frames <= total.

  Returns:
    int32 (B, frames), strictly increasing, in [0, total).
  """
  if not 1 <= frames <= total:
    raise ValueError(f"fdm_subset needs 1 <= frames <= total, got frames={frames}, total={total}")
  if frames == total:
    return jnp.broadcast_to(jnp.arange(total, dtype=jnp.int32), (batch, frames))
  group_rng, clip_rng = jax.random.split(rng)
  groups = frames
  ug = jax.random.uniform(group_rng, (batch, groups, 3))  # size, spacing, position
  uc = jax.random.uniform(clip_rng, (batch, total + 2))  # tie-breaks, window start, mixture
  # FDM groups: s frames, spacing log-uniform in [1, total / (s - 0.999)].
  s = 1 + jnp.minimum(jnp.floor(ug[..., :1] * frames), frames - 1)  # B G 1, in [1, frames]
  max_scale = total / (s - 0.999)
  scale = jnp.exp(ug[..., 1:2] * jnp.log(max_scale))
  pos = ug[..., 2:3] * (total - scale * (s - 1))
  i = jnp.arange(frames)[None, None, :]  # 1 1 frames
  members = jnp.clip(jnp.floor(pos + i * scale).astype(jnp.int32), 0, total - 1)  # B G frames
  in_group = i < s  # B G frames
  group_id = jnp.where(in_group, jnp.arange(groups)[None, :, None], groups)  # B G frames
  rows = jnp.arange(batch)[:, None, None]
  first_group = jnp.full((batch, total), groups).at[rows, members].min(group_id)  # B total
  key = first_group + uc[:, :total]  # B total; lower first, random among equals
  sparse = jnp.sort(jnp.argsort(key, axis=1)[:, :frames], axis=1)  # B frames
  start = jnp.minimum(jnp.floor(uc[:, total:total + 1] * (total - frames + 1)), total - frames)
  window = start.astype(jnp.int32) + jnp.arange(frames)[None, :]  # B frames
  use_window = uc[:, total + 1:] < 0.5  # B 1
  return jnp.where(use_window, window, sparse).astype(jnp.int32)


def empty_caption(batch: int, length: int) -> tuple[Array, Array]:
  """The empty caption: tokens (B, L) int32 [EOS, PAD, ...] and mask (B, L) [True, False, ...]."""
  if length < 1:
    raise ValueError(f"captions need length >= 1, got {length}")
  tokens = jnp.full((batch, length), PAD_ID, jnp.int32).at[:, 0].set(EOS_ID)
  mask = jnp.zeros((batch, length), bool).at[:, 0].set(True)
  return tokens, mask


def drop_captions(rng: Array, tokens: Array, mask: Array, p: float) -> tuple[Array, Array, Array]:
  """Replaces each clip's caption by the empty caption with probability p (for guidance).

  Args:
    rng: PRNG key.
    tokens: int32 (B, L) caption tokens.
    mask: bool (B, L), True for real tokens.
    p: drop probability (0: never, 1: always).

  Returns:
    (tokens (B, L), mask (B, L), dropped (B,) bool).
  """
  batch, length = tokens.shape
  dropped = jax.random.uniform(rng, (batch,)) < p  # uniform in [0, 1): exact at p = 0 and 1
  empty_tokens, empty_mask = empty_caption(batch, length)
  tokens = jnp.where(dropped[:, None], empty_tokens, tokens).astype(tokens.dtype)
  mask = jnp.where(dropped[:, None], empty_mask, mask)
  return tokens, mask, dropped

