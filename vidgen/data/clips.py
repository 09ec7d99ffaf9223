"""Shared vocabulary of the data layer: clip metadata, bad-input reasons, clip sampling.

Every data source of vidgen (Moving Shapes on demand or from array_record, a
folder of video files, any TFDS video data set) is a `ClipSource`: random access
by integer key to a *record*, plus a way to turn a record into a clip of a
requested shape. The pipeline (`vidgen.data.pipeline`) only talks to this
protocol, so every source gets the same bucketing, batching, bad-input policy
and resumable iteration.

Shape legend: T frames, H height, W width, C=3 channels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np
from PIL import Image

# Why an example was skipped. The pipeline counts skips under these names; the
# names appear in logs, in the saved iterator state and in the error that stops
# a job with too many bad examples.
MISSING_FILE = "missing_file"
ZERO_BYTE = "zero_byte"
CORRUPT = "corrupt"  # undecodable or truncated so that no frame decodes
TOO_FEW_FRAMES = "too_few_frames"
EMPTY_CAPTION = "empty_caption"
BAD_CAPTION_ENCODING = "caption_not_utf8"
CAPTION_TOO_LONG = "caption_too_long"
REASONS = (
    MISSING_FILE,
    ZERO_BYTE,
    CORRUPT,
    TOO_FEW_FRAMES,
    EMPTY_CAPTION,
    BAD_CAPTION_ENCODING,
    CAPTION_TOO_LONG,
)


class BadExample(Exception):
  """An example that cannot be used; the pipeline skips and counts it.

  Attributes:
    reason: one of `REASONS`.
  """

  def __init__(self, reason: str, detail: str = ""):
    if reason not in REASONS:
      raise ValueError(f"unknown bad-example reason {reason!r}; known: {REASONS}")
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """Cheap metadata of a stored clip, enough to choose its bucket.

  Attributes:
    num_frames: frames in the stored video (1 for an image).
    fps: frames per second of the stored video (0 when unknown, e.g. images).
    height: stored frame height in pixels.
    width: stored frame width in pixels.
  """

  num_frames: int
  fps: float
  height: int
  width: int

  @property
  def aspect(self) -> float:
    return self.width / self.height


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How frames are picked from a longer video.

  Attributes:
    stride: take every `stride`-th stored frame (ignored when `fps` > 0).
    fps: if > 0, resample to this frame rate (stride = source fps / fps).
    random_start: random start frame (training) or the first frame (eval).
    random_crop: random crop position after resizing, else centre crop.
  """

  stride: int = 1
  fps: float = 0.0
  random_start: bool = True
  random_crop: bool = False

  def step(self, source_fps: float) -> float:
    """Stored frames per sampled frame."""
    if self.fps > 0 and source_fps > 0:
      return source_fps / self.fps
    return float(self.stride)


def frames_needed(num_frames: int, step: float) -> int:
  """Stored frames a clip of `num_frames` sampled frames spans at `step`."""
  return int(math.floor((num_frames - 1) * step + 1e-6)) + 1


def sample_frame_indices(
    info: ClipInfo, num_frames: int, sampling: Sampling, rng: np.random.Generator
) -> np.ndarray:
  """Indices of the stored frames that make a clip of `num_frames` frames.

  Raises:
    BadExample(TOO_FEW_FRAMES) if the stored video is too short.
  """
  step = sampling.step(info.fps)
  span = frames_needed(num_frames, step)
  if info.num_frames < span:
    raise BadExample(
        TOO_FEW_FRAMES, f"needs {span} stored frames, has {info.num_frames}"
    )
  slack = info.num_frames - span
  start = int(rng.integers(0, slack + 1)) if sampling.random_start else 0
  idx = start + np.floor(np.arange(num_frames) * step + 1e-6).astype(np.int64)
  return np.minimum(idx, info.num_frames - 1)


def cover_size(height: int, width: int, out_h: int, out_w: int) -> tuple[int, int]:
  """Smallest (h, w) with the aspect of (height, width) that covers (out_h, out_w)."""
  scale = max(out_h / height, out_w / width)
  return max(out_h, round(height * scale)), max(out_w, round(width * scale))


def crop_offsets(
    height: int, width: int, out_h: int, out_w: int, random_crop: bool,
    rng: np.random.Generator,
) -> tuple[int, int]:
  if random_crop:
    return int(rng.integers(0, height - out_h + 1)), int(rng.integers(0, width - out_w + 1))
  return (height - out_h) // 2, (width - out_w) // 2


def resize(video: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """(T, h, w, 3) uint8 -> (T, out_h, out_w, 3) uint8, aspect not kept.

  Area filter when shrinking (no aliasing), bilinear when growing.
  """
  _, h, w, _ = video.shape
  if (h, w) == (out_h, out_w):
    return video
  resample = Image.Resampling.BOX if out_h < h else Image.Resampling.BILINEAR
  return np.stack([
      np.asarray(Image.fromarray(f).resize((out_w, out_h), resample)) for f in video
  ])


def resize_and_crop(
    video: np.ndarray, out_h: int, out_w: int, random_crop: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
  """(T, h, w, 3) uint8 -> (T, out_h, out_w, 3) uint8: cover-resize, then crop."""
  _, h, w, _ = video.shape
  if (h, w) != (out_h, out_w):
    rh, rw = cover_size(h, w, out_h, out_w)
    video = resize(video, rh, rw)
    y, x = crop_offsets(rh, rw, out_h, out_w, random_crop, rng or np.random.default_rng(0))
    video = video[:, y : y + out_h, x : x + out_w]
  return np.ascontiguousarray(video, dtype=np.uint8)


class ClipSource(Protocol):
  """Random access to clips. Must be picklable (Grain worker processes).

  `record(key)` is the cheap part (read bytes, metadata); `clip(...)` is the
  expensive part (decode, render, resize). Both may raise `BadExample`.
  """

  def __len__(self) -> int:
    ...

  def record(self, key: int) -> Any:
    ...

  def caption(self, record: Any) -> bytes | str:
    """The record's caption, without decoding any video (tokenizer training)."""
    ...

  def info(self, record: Any) -> ClipInfo | None:
    """Metadata for bucketing; None if the source renders any shape (Moving Shapes)."""
    ...

  def clip(
      self, record: Any, num_frames: int, height: int, width: int,
      sampling: Sampling, rng: np.random.Generator,
  ) -> dict[str, Any]:
    """Returns {'video': (T, H, W, 3) uint8, 'caption': bytes | str, ...extras}."""
    ...
