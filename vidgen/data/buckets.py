"""Shape buckets: every batch holds clips of one (T, H, W).

A bucket list is written in configs as a compact string, one bucket per comma:
`"16x64x64:8@2,8x48x80:8@1,1x64x64:32"` is 16-frame 64x64 clips in global
batches of 8 with weight 2, 8-frame 48x80 clips with weight 1, and 64x64
images (one-frame clips) in batches of 32 (weight 1 when omitted).

A stored clip goes to a bucket it can fill (enough frames at the sampling
stride), chosen by, in order:
  1. kind: a video goes to a video bucket (T > 1) when it can fill one; an
     image, or a video too short for every video bucket, to an image bucket;
  2. nearest aspect ratio (|log(clip aspect / bucket aspect)|; the cover-crop
     keeps the most of the frame);
  3. nearest duration: the longest T it can fill;
  4. remaining ties by the bucket weights.
Sources that render any shape (Moving Shapes on demand) choose by weight alone.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from vidgen.data import clips

_BUCKET_RE = re.compile(r"^\s*(\d+)x(\d+)x(\d+):(\d+)(?:@([0-9.eE+-]+))?\s*$")


@dataclasses.dataclass(frozen=True)
class Bucket:
  """One batch shape.

  Attributes:
    frames: T of every clip in the batch (1 for images).
    height: H in pixels.
    width: W in pixels.
    batch_size: global batch size (split evenly over hosts).
    weight: relative share when the choice is free.
  """

  frames: int
  height: int
  width: int
  batch_size: int
  weight: float = 1.0

  @property
  def aspect(self) -> float:
    return self.width / self.height

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.frames, self.height, self.width)

  def __str__(self) -> str:
    return f"{self.frames}x{self.height}x{self.width}:{self.batch_size}@{self.weight:g}"


def parse_buckets(spec: str) -> tuple[Bucket, ...]:
  """Parses `"TxHxW:batch[@weight],..."`; raises ValueError naming the bad part."""
  buckets = []
  for part in spec.split(","):
    m = _BUCKET_RE.match(part)
    if not m:
      raise ValueError(
          f"bad bucket {part.strip()!r}: expected 'TxHxW:batch_size[@weight]', "
          "e.g. '16x64x64:8@1.0'"
      )
    t, h, w, b = (int(g) for g in m.groups()[:4])
    weight = float(m.group(5)) if m.group(5) else 1.0
    if min(t, h, w, b) < 1 or not weight > 0 or not math.isfinite(weight):
      raise ValueError(f"bad bucket {part.strip()!r}: sizes must be >= 1, weight > 0")
    buckets.append(Bucket(t, h, w, b, weight))
  if len({b.shape for b in buckets}) != len(buckets):
    raise ValueError(f"buckets {spec!r} repeat a (T, H, W) shape")
  return tuple(buckets)


def sampled_frames_available(info: clips.ClipInfo, sampling: clips.Sampling) -> int:
  """How many frames a clip can give at the sampling stride."""
  return int(math.floor((info.num_frames - 1) / sampling.step(info.fps) + 1e-6)) + 1


def assign(
    info: clips.ClipInfo | None,
    buckets: tuple[Bucket, ...],
    sampling: clips.Sampling,
    rng: np.random.Generator,
) -> int:
  """Index of the bucket a clip goes to (rules in the module docstring).

  Raises:
    BadExample(TOO_FEW_FRAMES) if the clip can fill no bucket.
  """
  candidates = list(range(len(buckets)))
  if info is not None:
    available = sampled_frames_available(info, sampling)
    candidates = [i for i in candidates if buckets[i].frames <= available]
    if not candidates:
      shortest = min(b.frames for b in buckets)
      raise clips.BadExample(
          clips.TOO_FEW_FRAMES,
          f"{info.num_frames} frames at {info.fps:g} fps give {available} sampled "
          f"frames; the shortest bucket needs {shortest}",
      )
    if info.num_frames > 1 and any(buckets[i].frames > 1 for i in candidates):
      candidates = [i for i in candidates if buckets[i].frames > 1]

    def rank(i):
      return (round(abs(math.log(info.aspect / buckets[i].aspect)), 9), -buckets[i].frames)

    best = min(rank(i) for i in candidates)
    candidates = [i for i in candidates if rank(i) == best]
  if len(candidates) == 1:
    return candidates[0]
  weights = np.array([buckets[i].weight for i in candidates])
  return int(candidates[rng.choice(len(candidates), p=weights / weights.sum())])
