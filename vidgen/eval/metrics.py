"""Reconstruction metrics of video batches: PSNR, SSIM, and side-by-side grids.

PSNR and SSIM come from `dm_pix` (DeepMind's JAX image library); this module
only fixes the video conventions, so the numbers match what papers report:

- inputs are batches of clips (B, T, H, W, C): float in [0, max_val], or
  uint8 (then read as [0, 255] and `max_val` is ignored); the two sides may
  differ in dtype (uint8 originals against float reconstructions). Floats
  are not clipped.
- PSNR is per clip, from the clip's MSE over all its frames, pixels and
  channels: `10 log10(max_val^2 / MSE)` (not the mean of per-frame PSNRs,
  which weights a bad frame less). Identical clips give `inf`.
- SSIM is per frame (dm_pix: 11 x 11 Gaussian window, sigma 1.5, k1 0.01,
  k2 0.03, valid filtering, mean over pixels and channels), then averaged
  over the clip's frames. Frames must be at least 11 x 11.

Both return (B,) float32 JAX arrays and can be jitted. `Mean` aggregates
them over batches into a JSON-friendly dict, capping each clip's PSNR at
`PSNR_CAP` (100 dB) so that a perfect clip does not make the mean infinite.

Shape legend: B batch, T frames, H height, W width, C channels.
"""

from __future__ import annotations

from typing import Any

import dm_pix
import jax.numpy as jnp
import numpy as np

# Per-clip PSNR is capped here when aggregated (identical clips: inf dB).
PSNR_CAP = 100.0
# Gray gap between frames in `side_by_side` (as in `vidgen.viz`).
GAP = 4
GAP_VALUE = 64
SSIM_FILTER_SIZE = 11


def _unit(x, max_val: float) -> jnp.ndarray:
  """Video batch -> float32 in [0, 1] (uint8: / 255; float: / max_val)."""
  x = jnp.asarray(x)
  if x.ndim != 5:
    raise ValueError(f"expected video batches (B, T, H, W, C), got shape {x.shape}")
  if x.dtype == jnp.uint8:
    return x.astype(jnp.float32) / 255.0
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"expected uint8 or float videos, got {x.dtype}")
  return x.astype(jnp.float32) / max_val


def _pair(a, b, max_val: float):
  a, b = _unit(a, max_val), _unit(b, max_val)
  if a.shape != b.shape:
    raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
  return a, b


def psnr(a, b, max_val: float = 1.0) -> jnp.ndarray:
  """Per-clip PSNR in dB, (B,): from each clip's MSE over all its frames.

  Args:
    a, b: (B, T, H, W, C) videos, float in [0, max_val] or uint8.
    max_val: the peak value of float inputs (ignored for uint8: 255).

  Returns:
    (B,) float32; `inf` where a clip is reproduced exactly.
  """
  a, b = _pair(a, b, max_val)
  bsz, t, h, w, c = a.shape
  # dm_pix.psnr averages the squared error over the last three axes and
  # assumes a dynamic range of 1: stacking the frames makes it the clip's MSE.
  return dm_pix.psnr(a.reshape(bsz, t * h, w, c), b.reshape(bsz, t * h, w, c))


def ssim(a, b, max_val: float = 1.0) -> jnp.ndarray:
  """Per-clip SSIM, (B,): the mean over frames of each frame's SSIM.

  Args:
    a, b: (B, T, H, W, C) videos, float in [0, max_val] or uint8; frames at
      least 11 x 11.
    max_val: the peak value of float inputs (ignored for uint8: 255).

  Returns:
    (B,) float32 in [-1, 1]; 1 for identical clips.
  """
  a, b = _pair(a, b, max_val)
  bsz, t, h, w, c = a.shape
  if min(h, w) < SSIM_FILTER_SIZE:
    raise ValueError(
        f"SSIM needs frames of at least {SSIM_FILTER_SIZE} x {SSIM_FILTER_SIZE}, "
        f"got {h} x {w}")
  per_frame = dm_pix.ssim(a.reshape(bsz * t, h, w, c), b.reshape(bsz * t, h, w, c),
                          max_val=1.0)
  return per_frame.reshape(bsz, t).mean(axis=1)


class Mean:
  """Running means of per-clip PSNR and SSIM over batches.

      mean = Mean()
      for batch in batches:
        mean.update(batch_originals, batch_recons)
      json.dumps(mean.result())  # {"psnr": 31.2, "ssim": 0.93, "count": 512}

  Each clip counts once, whatever its batch. PSNR values above `PSNR_CAP`
  (including `inf`, a perfect clip) count as `PSNR_CAP`. The state
  (`psnr_sum`, `ssim_sum`, `count`) is plain Python numbers, so means of
  several processes merge by adding them (`merge`).
  """

  def __init__(self):
    self.psnr_sum = 0.0
    self.ssim_sum = 0.0
    self.count = 0

  def add(self, psnr_values, ssim_values) -> None:
    """Adds per-clip values (B,) (from `psnr` and `ssim`)."""
    p = np.asarray(psnr_values, np.float64).reshape(-1)
    s = np.asarray(ssim_values, np.float64).reshape(-1)
    if p.shape != s.shape:
      raise ValueError(f"{p.size} PSNR values but {s.size} SSIM values")
    self.psnr_sum += float(np.minimum(p, PSNR_CAP).sum())
    self.ssim_sum += float(s.sum())
    self.count += int(p.size)

  def update(self, originals, recons, max_val: float = 1.0) -> None:
    """Measures a batch (B, T, H, W, C) and adds it."""
    self.add(psnr(originals, recons, max_val), ssim(originals, recons, max_val))

  def merge(self, other: Mean) -> None:
    """Adds another accumulator's clips to this one."""
    self.psnr_sum += other.psnr_sum
    self.ssim_sum += other.ssim_sum
    self.count += other.count

  def result(self) -> dict[str, Any]:
    """{"psnr": mean dB, "ssim": mean, "count": clips}; means None when empty."""
    if self.count == 0:
      return {"psnr": None, "ssim": None, "count": 0}
    return {"psnr": self.psnr_sum / self.count, "ssim": self.ssim_sum / self.count,
            "count": self.count}


def reconstruction_metrics(originals, recons, max_val: float = 1.0) -> dict[str, Any]:
  """`Mean` of one batch: {"psnr", "ssim", "count"}."""
  mean = Mean()
  mean.update(originals, recons, max_val)
  return mean.result()


def _uint8(x, max_val: float) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype == np.uint8:
    return x
  return np.round(np.clip(x.astype(np.float64) / max_val, 0.0, 1.0) * 255).astype(np.uint8)


def frame_indices(num_frames: int, max_frames: int) -> np.ndarray:
  """Up to `max_frames` evenly spaced frame indices, first and last included."""
  n = min(num_frames, max_frames)
  return np.unique(np.linspace(0, num_frames - 1, n).round().astype(int))


def side_by_side(originals, recons, max_clips: int = 8, max_frames: int = 8,
                 *, max_val: float = 1.0) -> np.ndarray:
  """A grid image comparing clips with their reconstructions.

  For each of the first `max_clips` clips, one row of its original frames,
  then one row of the reconstructed frames; up to `max_frames` frames per
  row, evenly spaced (the same choice as `vidgen.viz.contact_sheet`). Frames
  are separated and framed by `GAP` pixels of gray (`GAP_VALUE`), and clips
  by twice that.

  Args:
    originals, recons: (B, T, H, W, 3) videos of the same shape, uint8 or
      float in [0, max_val] (clipped).
    max_clips: clips shown (rows of pairs).
    max_frames: frames shown per row.
    max_val: peak value of float inputs.

  Returns:
    (H', W', 3) uint8: with n = min(B, max_clips) clips and k frames per
    row, `H' = 2 n H + 3 n GAP` and `W' = k W + (k + 1) GAP`.
  """
  a, b = _uint8(originals, max_val), _uint8(recons, max_val)
  if a.shape != b.shape or a.ndim != 5 or a.shape[-1] != 3:
    raise ValueError(
        f"expected two (B, T, H, W, 3) batches of the same shape, got {a.shape} "
        f"and {b.shape}")
  bsz, t, h, w, _ = a.shape
  n = min(bsz, max_clips)
  idx = frame_indices(t, max_frames)
  k = len(idx)
  grid = np.full((2 * n * h + 3 * n * GAP, k * w + (k + 1) * GAP, 3), GAP_VALUE, np.uint8)
  y = GAP
  for i in range(n):
    y += GAP if i else 0
    for row in (a[i], b[i]):
      for j, f in enumerate(idx):
        x = GAP + j * (w + GAP)
        grid[y:y + h, x:x + w] = row[f]
      y += h + GAP
  return grid


def loop_jump(video: np.ndarray) -> dict:
  """How seamless a loop is: the jump from its last frame to its first against its steps.

  Mean absolute pixel difference (0-255) of frame t + 1 and t for every t,
  and of frame 0 after the last; `ratio` = jump / median step (<= 1: the
  wrap is no larger than a typical step).
  """
  v = np.asarray(video, np.float32)
  steps = np.abs(np.diff(v, axis=0)).mean(axis=(1, 2, 3))
  jump = float(np.abs(v[0] - v[-1]).mean())
  median = float(np.median(steps))
  return {"jump": jump, "median_step": median, "ratio": jump / max(median, 1e-6)}
