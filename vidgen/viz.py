"""Pictures of clips: contact sheets (one clip per row, frames left to right, caption below)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_PAD = 4
_LINE = 12  # pixels per caption line of PIL's default bitmap font


def contact_sheet(
    videos: Sequence[np.ndarray],
    captions: Sequence[str],
    max_frames: int = 8,
    scale: int = 2,
) -> Image.Image:
  """One row per clip: up to `max_frames` evenly spaced frames, then its caption.

  Args:
    videos: (T, H, W, 3) uint8 clips; shapes may differ between clips.
    captions: one string per clip.
    max_frames: frames shown per clip.
    scale: nearest-neighbour upscaling of the frames (small clips stay legible).
  """
  if len(videos) != len(captions):
    raise ValueError(f"{len(videos)} videos but {len(captions)} captions")
  rows = []
  for video, caption in zip(videos, captions):
    t = video.shape[0]
    idx = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    gap = np.full((video.shape[1], _PAD, 3), 64, np.uint8)
    strip = np.concatenate([x for i in idx for x in (video[i], gap)][:-1], axis=1)
    strip = strip.repeat(scale, 0).repeat(scale, 1)
    lines = textwrap.wrap(caption, width=max(20, strip.shape[1] // 6)) or [""]
    rows.append((strip, lines))
  width = max(s.shape[1] for s, _ in rows) + 2 * _PAD
  height = sum(s.shape[0] + len(l) * _LINE + 2 * _PAD for s, l in rows) + _PAD
  sheet = Image.new("RGB", (width, height), (24, 24, 24))
  draw = ImageDraw.Draw(sheet)
  font = ImageFont.load_default()
  y = _PAD
  for strip, lines in rows:
    sheet.paste(Image.fromarray(strip), (_PAD, y))
    y += strip.shape[0] + _PAD // 2
    for line in lines:
      draw.text((_PAD, y), line, fill=(230, 230, 230), font=font)
      y += _LINE
    y += _PAD + _PAD // 2
  return sheet
