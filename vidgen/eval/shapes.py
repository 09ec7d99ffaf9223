"""Moving Shapes attributes read back from pixels, checked against ground truth.

`measure` reads a clip the way a person would: every object is found by its
colour, and its shape, size, motion and per-frame centre are estimated from
its pixels alone (no ground truth). `check` compares the measurement with the
ground truth a batch carries (`gt_color`, `gt_shape`, `gt_size`, `gt_motion`,
`gt_start`, see `moving_shapes.ground_truth_arrays`), and `attribute_accuracy`
aggregates `check` over a batch. Everything is numpy, vectorised over the
batch: 256 clips of 16 x 64 x 64 take a fraction of a second.

How a clip is read (T frames of H x W, the contract of MOVING_SHAPES.md):

- Colours: every pixel is labelled with the nearest entry of the palette
  {black} + `COLORS` if it lies within `tol` (Euclidean RGB, default 60) of
  it; black is background and pixels far from every entry (blends of two
  colours, blur at edges) are ignored. The palette entries are >= 140 apart,
  so with `tol < 70` the balls are disjoint and "nearest within tol" is
  unambiguous (a 2**24-entry lookup table, built once per tol).
- Objects: one per colour (the contract gives two objects different
  colours). A colour is present in a frame when it has at least
  `min_pixels` pixels there (default 10% of a small object's bounding box,
  so a few stray pixels are not an object); an object is present in a clip
  when present in any frame.
- Torus straddling: each frame's colour mask is reduced to its row and column
  profiles (pixel counts per row / column). On each axis the circular mean
  of the profile (pixel centres as angles 2 pi (i + 0.5) / n) gives a
  reference row inside the object, the axis is unwrapped around it (offsets
  in [-n/2, n/2)), and the centroid, the bounding-box extent and the
  profile asymmetry are computed on the unwrapped offsets. This is exact for
  any object narrower than half the canvas (objects are at most 0.35 x
  min(H, W)), whether it straddles an edge or not, and needs no connected
  components.
- Occlusion: with two objects the second is drawn on top and may hide part
  of the first. A frame is *clean* for an object when its bounding box is
  at least `CLEAR_PIXELS` (1) pixel away from every other present object's
  box (boxes that overlap or touch are not clean), or when its area there is
  at least `FULL_AREA_FRACTION` (97%) of its median area over the frames
  with free boxes (an object on top touches the other without losing
  pixels). Shape, size, centre and motion are estimated from clean frames
  only; an
  object with no clean frame (for instance both objects still and
  overlapping in every frame) falls back to all its frames and is flagged
  `occluded` (its estimates may then be wrong: the pixels are hidden).
- Shape, from the medians over the frames used of the fill ratio
  `area / (box height x box width)` (square 1, circle ~pi/4, triangle ~1/2)
  and the vertical asymmetry `(area below the box centre - area above) /
  area` (triangle apex up ~ +1/2, circle and square 0), and the edge cover
  (pixels on the box's first and last row over its width, and on its first
  and last column over its height, averaged: square 1, a circle's chords
  0.2-0.5): triangle when `asym >= 0.2` and `asym - fill > -0.5`; square
  when `fill >= 0.965`, or, where a small object is at least 8 pixels (a
  canvas of 40 and up), when `fill >= 0.85` and `fill + edge >= 1.45`;
  circle when not a square, `fill >= 0.65` and `|asym| < 0.25`; else
  unknown (None). Measured on the renderer over all sub-pixel offsets, these
  hold with margin from 32 x 32 up (rendered circles from 40 x 40 up: fill +
  edge <= 1.38); the second square rule reads squares whose corners a
  decoder has rounded (VAE reconstructions: fill >= 0.90, fill + edge >=
  1.52) and that the fill ratio alone calls circles. At 16 x 16 a small
  object is 3 pixels wide and a circle can be a full 3 x 3 block, so shape
  (and a small triangle's size) is not decidable there.
- Size: the median over the frames used of the larger box side, against the
  nominal sides `s_small = side_pixels('small')` and `s_large`: small in
  [0.5 s_small, (s_small + s_large) / 2), large in [(s_small + s_large) / 2,
  1.5 s_large], else unknown.
- Centre per frame: the centroid of the unwrapped pixels, except for a
  triangle, whose centroid lies `side * sqrt(3) / 12` below the centre of its
  bounding box (the contract's object centre): it is moved up by that much
  (side: the nominal side of the measured size). On the renderer's clips the
  error is below 0.71 px (a square's pixel centroid is quantised to 0.5 px
  on each axis).
- Motion: the trajectory of centres is unwrapped (the steps between
  successive frames wrapped to [-n/2, n/2) per axis, then summed, so an
  object may cross the edge any number of times), and its velocity is the
  least-squares slope over the clean frames (all present frames if fewer
  than two are clean), in pixels per frame, against the contract's speed
  `v = min(H, W) / 32`:
  still when both components are below v / 2; left/right/up/down when the
  larger component is in [v / 2, 1.5 v + 1 / S] and the other below v / 2
  (S: frames spanned by the fit; 1 / S allows for the centres' pixel
  quantisation when few frames are clean); else unknown. A clip of one
  frame has no motion to measure (None).

`height` and `width` (default: the clip's) give the canvas the nominal sides
and speed refer to.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vidgen.data import moving_shapes as ms

COLOR_TOLERANCE = 60.0
# Palette of labels 1..K (label 0 is black background, -1 ignored).
_PALETTE = np.array([(0, 0, 0)] + [ms.COLORS[c] for c in ms.COLOR_NAMES], np.int64)
_K = len(ms.COLOR_NAMES)

# Shape decision thresholds (see the module docstring).
TRIANGLE_MIN_ASYM = 0.2
TRIANGLE_MIN_SCORE = -0.5  # asym - fill
SQUARE_MIN_FILL = 0.965
# A square with corners rounded by blur keeps its sides: on canvases where a
# small object is at least SQUARE_EDGE_MIN_SIDE pixels, fill + edge (the share
# of the box sides covered) separates it from any rendered circle.
SQUARE_EDGE_MIN_SIDE = 8
SQUARE_MIN_FILL_WITH_EDGES = 0.85
SQUARE_MIN_FILL_PLUS_EDGE = 1.45
CIRCLE_MIN_FILL = 0.65
CIRCLE_MAX_ABS_ASYM = 0.25
# A frame whose box touches another's is still clean when the object covers
# at least this fraction of its median area over the frames with free boxes.
FULL_AREA_FRACTION = 0.97
# Minimum pixels of a colour in a frame, as a fraction of s_small ** 2.
MIN_PIXELS_FRACTION = 0.1
_BIG = 1e9
# A frame is clean for an object when its bounding box and every other
# object's are at least this many pixels apart (on the torus).
CLEAR_PIXELS = 1
# Unit velocity (dy, dx) of each motion (the contract's directions).
_DIRECTION = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0),
              "still": (0, 0)}


@functools.lru_cache(maxsize=4)
def _color_lut(tol: float) -> np.ndarray:
  """(2**24,) int8 label of each packed RGB `r << 16 | g << 8 | b`."""
  if not 0 <= tol < 70:
    raise ValueError(
        f"colour tolerance must be in [0, 70) (half the palette's spacing), got {tol}")
  lut = np.full((256, 256, 256), -1, np.int8)
  r = int(math.floor(tol))
  for label, colour in enumerate(_PALETTE):
    lo = np.maximum(colour - r, 0)
    hi = np.minimum(colour + r, 255) + 1
    d = [np.arange(lo[i], hi[i]) - colour[i] for i in range(3)]
    d2 = d[0][:, None, None] ** 2 + d[1][None, :, None] ** 2 + d[2][None, None, :] ** 2
    sub = lut[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    sub[d2 <= tol * tol] = label
  return lut.reshape(-1)


def _labels(videos: np.ndarray, tol: float) -> np.ndarray:
  """(..., H, W, 3) uint8 -> (..., H, W) int8: 0 black, k + 1 colour k, -1 other."""
  videos = np.asarray(videos)
  if videos.dtype != np.uint8 or videos.shape[-1] != 3:
    raise ValueError(
        f"expected uint8 RGB videos (..., H, W, 3), got {videos.dtype} {videos.shape}")
  code = videos[..., 0].astype(np.int32) << 16
  code |= videos[..., 1].astype(np.int32) << 8
  code |= videos[..., 2]
  return _color_lut(float(tol))[code]


def _axis(profile: np.ndarray, n: int):
  """Torus-unwrapped statistics of pixel-count profiles (..., n) along one axis.

  Returns (area, centroid, box centre, extent, asymmetry, edge), each (...);
  centroid and box centre in [0, n) pixel coordinates (pixel i spans
  [i, i + 1)), nan where the profile is empty. Asymmetry: (count after the
  box centre - count before) / area. Edge: the mean count of the box's first
  and last line (pixels on the two box sides across this axis).
  """
  p = profile.astype(np.float64)
  area = p.sum(-1)
  angle = 2 * np.pi * (np.arange(n) + 0.5) / n
  mean_angle = np.arctan2(p @ np.sin(angle), p @ np.cos(angle))
  ref = np.floor(np.mod(mean_angle * n / (2 * np.pi) - 0.5, n)).astype(np.int64)
  ref = np.minimum(ref, n - 1)
  # Integer offsets of every index from the reference, in [-n//2, n - n//2).
  k = np.mod(np.arange(n) - ref[..., None] + n // 2, n) - n // 2
  occupied = profile > 0
  kmin = np.where(occupied, k, n).min(-1)
  kmax = np.where(occupied, k, -n).max(-1)
  sign = np.sign(2 * k - (kmin + kmax)[..., None])
  with np.errstate(invalid="ignore", divide="ignore"):
    centroid = ref + 0.5 + (p * k).sum(-1) / area
    asym = (p * sign).sum(-1) / area
  empty = area == 0
  box = np.where(empty, np.nan, ref + 0.5 + (kmin + kmax) / 2)
  extent = np.where(empty, np.nan, kmax - kmin + 1)
  first = np.take_along_axis(p, np.mod(ref + kmin, n)[..., None], -1)[..., 0]
  last = np.take_along_axis(p, np.mod(ref + kmax, n)[..., None], -1)[..., 0]
  edge = np.where(empty, np.nan, (first + last) / 2)
  return area, np.mod(centroid, n), np.mod(box, n), extent, asym, edge


def _wrap(d, n):
  """Torus difference into [-n/2, n/2)."""
  return np.mod(d + n / 2, n) - n / 2


def _nanmedian(x, axis=-1):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmedian(x, axis=axis)


def _canvas(videos: np.ndarray, height, width):
  h, w = videos.shape[-3], videos.shape[-2]
  return (h if height is None else int(height)), (w if width is None else int(width))


def _analyse(videos: np.ndarray, height: int | None = None, width: int | None = None,
             tol: float = COLOR_TOLERANCE) -> dict[str, np.ndarray]:
  """Measures every palette colour of a batch (B, T, H, W, 3) uint8 at once.

  Returns arrays indexed (B, K[, T...]) with K = len(COLOR_NAMES): see the keys.
  """
  videos = np.asarray(videos)
  if videos.ndim != 5:
    raise ValueError(f"expected (B, T, H, W, 3) videos, got {videos.shape}")
  b, t, h, w, _ = videos.shape
  ch, cw = _canvas(videos, height, width)
  labels = _labels(videos, tol)  # (B, T, H, W)
  rows = np.empty((b, _K, t, h), np.int32)
  cols = np.empty((b, _K, t, w), np.int32)
  for k in range(_K):
    mask = (labels == k + 1).view(np.uint8)
    rows[:, k] = mask.sum(-1, dtype=np.int32)
    cols[:, k] = mask.sum(-2, dtype=np.int32)
  area, cy, by, bh, asym, edge_y = _axis(rows, h)
  _, cx, bx, bw, _, edge_x = _axis(cols, w)
  area = area.astype(np.int64)  # (B, K, T)

  s_small = ms.side_pixels("small", ch, cw)
  s_large = ms.side_pixels("large", ch, cw)
  min_pixels = max(2, round(MIN_PIXELS_FRACTION * s_small * s_small))
  frame_present = area >= min_pixels  # (B, K, T)
  present = frame_present.any(-1)  # (B, K)

  # Clean frames: the gap between bounding boxes, per axis, in pixels.
  gy = np.abs(_wrap(by[:, :, None] - by[:, None, :], h)) - (bh[:, :, None] + bh[:, None, :]) / 2
  gx = np.abs(_wrap(bx[:, :, None] - bx[:, None, :], w)) - (bw[:, :, None] + bw[:, None, :]) / 2
  touch = (gy < CLEAR_PIXELS) & (gx < CLEAR_PIXELS)  # (B, K, K, T); nan is False
  touch &= frame_present[:, :, None] & frame_present[:, None, :]
  touch &= ~np.eye(_K, dtype=bool)[None, :, :, None]
  touching = frame_present & touch.any(2)  # (B, K, T)
  clean = frame_present & ~touching
  # ...and frames where the boxes touch but the object shows its whole area
  # (that of its frames with free boxes): nothing of it is hidden there.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    full_area = np.nanmedian(np.where(clean, area, np.nan), axis=-1)  # (B, K)
  clean |= frame_present & (area >= FULL_AREA_FRACTION * full_area[..., None])
  occluded = present & ~clean.any(-1)
  used = np.where(occluded[..., None], frame_present, clean)  # (B, K, T)

  with np.errstate(invalid="ignore", divide="ignore"):
    fill = area / (bh * bw)
    # Box sides covered: top and bottom lines against the width, left and
    # right against the height.
    edge = (edge_y / bw + edge_x / bh) / 2
  nan = np.float64(np.nan)
  fill_m = _nanmedian(np.where(used, fill, nan))
  edge_m = _nanmedian(np.where(used, edge, nan))
  asym_m = _nanmedian(np.where(used, asym, nan))
  side_m = _nanmedian(np.where(used, np.fmax(bh, bw), nan))

  # Shape: index into SHAPES, -1 unknown.
  is_triangle = (asym_m >= TRIANGLE_MIN_ASYM) & (asym_m - fill_m > TRIANGLE_MIN_SCORE)
  is_square = (fill_m >= SQUARE_MIN_FILL) | (
      (s_small >= SQUARE_EDGE_MIN_SIDE) & (fill_m >= SQUARE_MIN_FILL_WITH_EDGES)
      & (fill_m + edge_m >= SQUARE_MIN_FILL_PLUS_EDGE))
  is_circle = ((fill_m >= CIRCLE_MIN_FILL) & ~is_square
               & (np.abs(asym_m) < CIRCLE_MAX_ABS_ASYM))
  shape = np.select([is_triangle, is_square, is_circle],
                    [ms.SHAPES.index("triangle"), ms.SHAPES.index("square"),
                     ms.SHAPES.index("circle")], -1)
  # Size: index into SIZE_NAMES, -1 unknown.
  mid = (s_small + s_large) / 2
  size = np.select([(side_m >= 0.5 * s_small) & (side_m < mid),
                    (side_m >= mid) & (side_m <= 1.5 * s_large)],
                   [ms.SIZE_NAMES.index("small"), ms.SIZE_NAMES.index("large")], -1)

  # Centres: a triangle's centroid lies side * sqrt(3) / 12 below its centre.
  nominal = np.where(size == 0, s_small, np.where(size == 1, s_large, side_m))
  shift = np.where(shape == ms.SHAPES.index("triangle"), nominal * math.sqrt(3) / 12, 0.0)
  centre_y = np.mod(cy - np.nan_to_num(shift)[..., None], h)
  centre = np.stack([centre_y, cx], axis=-1)  # (B, K, T, 2)
  centre = np.where(frame_present[..., None], centre, nan)

  # Motion: the trajectory unwrapped on the torus (steps between successive
  # present frames wrapped to [-n/2, n/2), then summed), and its
  # least-squares slope over the frames used (else all present frames).
  frame = np.arange(t)
  last = np.maximum.accumulate(np.where(frame_present, frame, 0), axis=-1)  # (B, K, T)
  filled = np.take_along_axis(centre, last[..., None], axis=2)  # forward-filled
  step = np.diff(filled, axis=2)
  step = np.stack([_wrap(step[..., 0], h), _wrap(step[..., 1], w)], axis=-1)
  step = np.concatenate([np.zeros_like(step[:, :, :1]), np.nan_to_num(step)], axis=2)
  unwrapped = np.cumsum(step, axis=2)  # (B, K, T, 2), up to a constant
  fit = np.where((used.sum(-1) >= 2)[..., None], used, frame_present)  # (B, K, T)
  weight = fit.astype(np.float64)
  count = weight.sum(-1)  # (B, K)
  with np.errstate(invalid="ignore", divide="ignore"):
    t_mean = (weight * frame).sum(-1) / count
    dt = np.where(fit, frame - t_mean[..., None], 0.0)  # (B, K, T)
    u = np.where(fit[..., None], unwrapped, 0.0)
    velocity = (dt[..., None] * u).sum(2) / (dt * dt).sum(-1)[..., None]  # (B, K, 2)
  velocity = np.where((count >= 2)[..., None], velocity, nan)
  # Centres are quantised (~0.5 px): the slope over a span of S frames may be
  # off by ~1/S px per frame, which the speed band allows for.
  span = (np.where(fit, frame, -1).max(-1) - np.where(fit, frame, t).min(-1))
  slack = 1.0 / np.maximum(span, 1)  # (B, K)
  speed = ms.speed_pixels(ch, cw)
  vy, vx = velocity[..., 0], velocity[..., 1]
  ay, ax = np.abs(vy), np.abs(vx)
  still = (ay < speed / 2) & (ax < speed / 2)
  horizontal = (ax >= speed / 2) & (ax <= 1.5 * speed + slack) & (ay < speed / 2)
  vertical = (ay >= speed / 2) & (ay <= 1.5 * speed + slack) & (ax < speed / 2)
  idx = ms.MOTIONS.index
  motion = np.select(
      [still, horizontal & (vx < 0), horizontal & (vx > 0), vertical & (vy < 0),
       vertical & (vy > 0)],
      [idx("still"), idx("left"), idx("right"), idx("up"), idx("down")], -1)

  return dict(present=present, frame_present=frame_present, used=used,
              occluded=occluded, area=area, centre=centre, velocity=velocity,
              fill=fill_m, asym=asym_m, edge=edge_m, side=side_m, shape=shape, size=size,
              motion=motion, canvas=np.array([ch, cw]))


def _name(names, i):
  return None if i < 0 else names[int(i)]


def measure(video: np.ndarray, height: int | None = None, width: int | None = None,
            *, tol: float = COLOR_TOLERANCE) -> list[dict[str, Any]]:
  """The objects of one clip (T, H, W, 3) uint8, read from its pixels.

  Args:
    video: the clip.
    height, width: the canvas the contract's sizes and speed refer to
      (default: the clip's own H, W).
    tol: colour tolerance (Euclidean RGB distance to a palette colour), < 70.

  Returns:
    One dict per colour present, in `COLOR_NAMES` order: `color` (str),
    `shape`, `size`, `motion` (str, or None when the pixels match none),
    `area` ((T,) int, pixels of that colour per frame), `centre` ((T, 2)
    float (y, x) pixel coordinates, nan where absent), `velocity` ((2,)
    (dy, dx) pixels per frame, nan with one frame), `side_px` (median box
    side), `fill`, `asym` (the shape features), `frames_used` (frames the
    estimates come from) and `occluded` (True when no frame was free of
    other objects, so estimates may be off).
  """
  video = np.asarray(video)
  if video.ndim != 4:
    raise ValueError(f"expected a (T, H, W, 3) clip, got {video.shape}")
  a = _analyse(video[None], height, width, tol)
  out = []
  for k, color in enumerate(ms.COLOR_NAMES):
    if not a["present"][0, k]:
      continue
    out.append(dict(
        color=color,
        shape=_name(ms.SHAPES, a["shape"][0, k]),
        size=_name(ms.SIZE_NAMES, a["size"][0, k]),
        motion=_name(ms.MOTIONS, a["motion"][0, k]),
        area=a["area"][0, k].copy(),
        centre=a["centre"][0, k].copy(),
        velocity=a["velocity"][0, k].copy(),
        side_px=float(a["side"][0, k]),
        fill=float(a["fill"][0, k]),
        asym=float(a["asym"][0, k]),
        edge=float(a["edge"][0, k]),
        frames_used=int(a["used"][0, k].sum()),
        occluded=bool(a["occluded"][0, k]),
    ))
  return out


# ---------------------------------------------------------------------------
# Checking against ground truth.

_ATTRS = ("color", "shape", "size", "motion")


def _gt_arrays(gt: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """gt_* arrays of one clip; also accepts an `example()` dict with 'objects'."""
  if "gt_color" not in gt and "objects" in gt:
    objects = gt["objects"]
    gt = ms.ground_truth_arrays(objects, [(o["y"], o["x"]) for o in objects])
  out = {k: np.asarray(gt[k]) for k in
         ("gt_color", "gt_shape", "gt_size", "gt_motion", "gt_start")}
  n = out["gt_color"].reshape(-1).shape[0]
  for k in ("gt_color", "gt_shape", "gt_size", "gt_motion"):
    out[k] = out[k].reshape(n).astype(np.int64)
  out["gt_start"] = out["gt_start"].reshape(n, 2).astype(np.float64)
  return out


def _check_one(a: dict[str, np.ndarray], i: int, gt: dict[str, np.ndarray],
               h: int, w: int) -> dict[str, Any]:
  """`check` of clip `i` of an `_analyse` result."""
  ch, cw = (int(x) for x in a["canvas"])
  frames = a["centre"].shape[2]
  n = gt["gt_color"].shape[0]
  present = np.nonzero(a["present"][i])[0]  # measured colours
  speed = ms.speed_pixels(ch, cw)
  t = np.arange(frames, dtype=np.float64)

  # Position error of every (gt object, measured object) pair.
  err = np.full((n, len(present)), np.nan)
  for g in range(n):
    d = np.array(_DIRECTION[ms.MOTIONS[gt["gt_motion"][g]]], np.float64)
    traj = gt["gt_start"][g][None, :] + t[:, None] * d[None, :] * speed  # (T, 2)
    for j, k in enumerate(present):
      c = a["centre"][i, k]
      dy = _wrap(c[:, 0] - traj[:, 0], h)
      dx = _wrap(c[:, 1] - traj[:, 1], w)
      dist = np.hypot(dy, dx)[a["used"][i, k]]
      err[g, j] = dist.mean() if dist.size else np.nan

  # Assignment gt -> measured (or none): colour first, then position.
  best, best_cost = None, math.inf
  options = list(range(len(present))) + [None]
  for assign in itertools.product(options, repeat=n):
    chosen = [j for j in assign if j is not None]
    if len(set(chosen)) != len(chosen):
      continue
    cost = 0.0
    for g, j in enumerate(assign):
      if j is None:
        cost += _BIG
      else:
        cost += 1e4 * (present[j] != gt["gt_color"][g])
        cost += err[g, j] if np.isfinite(err[g, j]) else 1e3
    if cost < best_cost:
      best, best_cost = assign, cost

  objects = []
  for g, j in enumerate(best):
    if j is None:
      res = dict(found=False, **{k: False for k in _ATTRS}, all=False,
                 occluded=False)
      res["position_error_px"] = float("nan")
    else:
      k = present[j]
      res = dict(
          found=True,
          color=bool(k == gt["gt_color"][g]),
          shape=bool(a["shape"][i, k] == gt["gt_shape"][g]),
          size=bool(a["size"][i, k] == gt["gt_size"][g]),
          motion=bool(frames < 2 or a["motion"][i, k] == gt["gt_motion"][g]),
      )
      res["all"] = all(res[name] for name in _ATTRS)
      res["occluded"] = bool(a["occluded"][i, k])
      res["position_error_px"] = float(err[g, j])
    objects.append(res)
  errors = [o["position_error_px"] for o in objects if np.isfinite(o["position_error_px"])]
  out = {k: all(o[k] for o in objects) for k in _ATTRS}
  out["count"] = len(present) == n
  out["all"] = all(o["all"] for o in objects) and out["count"]
  out["position_error_px"] = float(np.mean(errors)) if errors else float("nan")
  out["objects"] = objects
  return out


def check(video: np.ndarray, gt: Mapping[str, Any], height: int | None = None,
          width: int | None = None, *, tol: float = COLOR_TOLERANCE) -> dict[str, Any]:
  """Checks one clip (T, H, W, 3) uint8 against its ground truth.

  Ground-truth objects are matched to the measured ones (one colour each) by
  colour first, then by position error, so an object painted the wrong
  colour is still checked for shape, size and motion.

  Args:
    video: the clip.
    gt: its `gt_color`, `gt_shape`, `gt_size`, `gt_motion` ((N,) indices)
      and `gt_start` ((N, 2) start centre (y, x) in pixels) as a batch
      carries them, or an `example()` dict (with `objects`).
    height, width: the canvas the sizes and speed refer to (default: the
      clip's).
    tol: colour tolerance.

  Returns:
    `objects`: per ground-truth object {found, color, shape, size, motion,
    all, occluded, position_error_px} (booleans; `all` = the four
    attributes; `occluded`: the measured object has no frame free of other
    objects, see `measure`;
    position error: mean over the frames used of the torus distance between
    the measured centre and `gt_start + t * velocity`, nan if not found);
    `color`, `shape`, `size`, `motion`: every object right; `count`: as many
    objects measured as in the ground truth; `all`: every object right and
    the count right; `position_error_px`: mean over found objects (nan if
    none). A clip of one frame passes `motion` (nothing to check).
  """
  video = np.asarray(video)
  if video.ndim != 4:
    raise ValueError(f"expected a (T, H, W, 3) clip, got {video.shape}")
  a = _analyse(video[None], height, width, tol)
  return _check_one(a, 0, _gt_arrays(gt), *video.shape[1:3])


def attribute_accuracy(videos: np.ndarray,
                       gts: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                       height: int | None = None, width: int | None = None,
                       *, tol: float = COLOR_TOLERANCE) -> dict[str, float]:
  """`check` over a batch, aggregated into a JSON-friendly dict.

  Args:
    videos: (B, T, H, W, 3) uint8.
    gts: a batch's gt_* arrays with a leading B axis, or one gt dict per clip.
    height, width, tol: as in `check`.

  Returns:
    `color`, `shape`, `size`, `motion`, `found`: fraction of ground-truth
    objects (B x N) right; `occluded`: fraction of objects matched to a
    measured object that is never free of the other (its shape and size may
    be unreadable: hidden pixels); `count`, `all`: fraction of clips;
    `all_unoccluded`: `all` over the clips with no occluded object (nan if
    none); `position_error_px`: mean over found objects (nan if none);
    `num_clips`, `num_objects`. Floats and ints only (JSON-friendly, up to
    nan).
  """
  videos = np.asarray(videos)
  b, _, h, w, _ = videos.shape
  if isinstance(gts, Mapping):
    per_clip = [{k: np.asarray(v)[i] for k, v in gts.items() if k.startswith("gt_")}
                for i in range(b)]
  else:
    per_clip = list(gts)
  if len(per_clip) != b:
    raise ValueError(f"{b} videos but {len(per_clip)} ground truths")
  a = _analyse(videos, height, width, tol)
  results = [_check_one(a, i, _gt_arrays(g), h, w) for i, g in enumerate(per_clip)]
  objects = [o for r in results for o in r["objects"]]
  out = {k: float(np.mean([o[k] for o in objects])) if objects else float("nan")
         for k in _ATTRS + ("found",)}
  out["occluded"] = float(np.mean([o["occluded"] for o in objects])) if objects else float("nan")
  out["count"] = float(np.mean([r["count"] for r in results])) if results else float("nan")
  out["all"] = float(np.mean([r["all"] for r in results])) if results else float("nan")
  clear = [r["all"] for r in results if not any(o["occluded"] for o in r["objects"])]
  out["all_unoccluded"] = float(np.mean(clear)) if clear else float("nan")
  errors = [o["position_error_px"] for o in objects if np.isfinite(o["position_error_px"])]
  out["position_error_px"] = float(np.mean(errors)) if errors else float("nan")
  out["num_clips"] = b
  out["num_objects"] = len(objects)
  return out


def check_prompt(video: np.ndarray, prompt: str, *, tol: float = COLOR_TOLERANCE
                 ) -> dict[str, Any]:
  """Whether a generated clip (T, H, W, 3) shows what its Moving Shapes prompt asks for.

  Generated videos have no start position to compare against, so each
  prompted object is matched to the measured object of its colour; its
  shape, size and motion are then read from the pixels. `count`: as many
  objects measured as prompted.

  Returns:
    `color`, `shape`, `size`, `motion` (every prompted object right), `count`,
    `all` (all of these), and `objects`: per prompted object its booleans and
    the measured attributes.
  """
  wanted = ms.parse_caption(prompt)
  measured = {m["color"]: m for m in measure(video, tol=tol)}
  objects = []
  for obj in wanted:
    got = measured.get(obj["color"])
    res = {"color": got is not None}
    for attr in ("shape", "size", "motion"):
      if got is None:
        res[attr] = False
      elif attr == "motion" and video.shape[0] < 2:
        res[attr] = True  # one frame: nothing to check
      else:
        res[attr] = got[attr] == obj[attr]
      res[f"measured_{attr}"] = None if got is None else got[attr]
    objects.append(res)
  out = {k: all(o[k] for o in objects) for k in _ATTRS}
  out["count"] = len(measured) == len(wanted)
  out["all"] = all(out[k] for k in _ATTRS) and out["count"]
  out["objects"] = objects
  return out


def prompt_accuracy(videos: Sequence[np.ndarray], prompts: Sequence[str], *,
                    tol: float = COLOR_TOLERANCE) -> dict[str, float]:
  """`check_prompt` over clips: the fraction of clips right per attribute, `count` and `all`."""
  if len(videos) != len(prompts):
    raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts")
  results = [check_prompt(v, p, tol=tol) for v, p in zip(videos, prompts)]
  out = {k: float(np.mean([r[k] for r in results])) if results else float("nan")
         for k in _ATTRS + ("count", "all")}
  out["num_clips"] = len(results)
  return out


def compare_captions(predicted: str, truth: str) -> dict[str, bool]:
  """Whether a predicted Moving Shapes caption says what the true one says, per attribute.

  Objects are compared in order; an attribute is right when every true
  object has it right (a missing or extra object makes every attribute
  wrong). `grammatical`: the prediction parses; `exact`: the strings agree.
  """
  truth_objects = ms.parse_caption(truth)
  try:
    objects = ms.parse_caption(predicted)
  except ValueError:
    objects = None
  same_count = objects is not None and len(objects) == len(truth_objects)
  out = {attr: same_count and all(p[attr] == t[attr] for p, t in zip(objects, truth_objects))
         for attr in _ATTRS}
  out["grammatical"] = objects is not None
  out["exact"] = predicted.strip() == truth.strip()
  return out
