"""Metrics out of a training job: a console progress line, TensorBoard, PNG pictures.

Only process 0 writes. Scalars go to `W/tensorboard/` (TensorBoard event
files via tensorboardX) and, as JSON lines, to `W/metrics.jsonl` so scripts
can read them without TensorBoard; pictures go to `W/pictures/NAME_STEP.png`
and to TensorBoard as images; sample videos to `W/pictures/NAME_STEP.mp4`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from PIL import Image


def _fmt_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Writer:
  """Writes scalars and pictures for one job (a no-op on processes other than 0)."""

  def __init__(self, workdir: str | None, *, enabled: bool | None = None):
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.workdir = workdir
    self._tb = None
    self._jsonl = None
    if self.enabled and workdir:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items()}
    if self._tb is not None:
      for k, v in clean.items():
        self._tb.add_scalar(f"{prefix}/{k}", v, step)
    if self._jsonl is not None:
      self._jsonl.write(json.dumps({"step": int(step), "split": prefix, **clean}) + "\n")
      self._jsonl.flush()

  def picture(self, step: int, name: str, image: np.ndarray) -> str | None:
    """Saves an (H, W, 3) uint8 image as PNG and in TensorBoard; returns the PNG path."""
    if not self.enabled or not self.workdir:
      return None
    folder = os.path.join(self.workdir, "pictures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}_{int(step):07d}.png")
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
    if self._tb is not None:
      self._tb.add_image(name, np.asarray(image, np.uint8), step, dataformats="HWC")
    return path

  def video(self, step: int, name: str, frames: np.ndarray, fps: float = 8.0) -> str | None:
    """Saves a (T, H, W, 3) uint8 video as mp4 (W/pictures/NAME_STEP.mp4); returns the path."""
    if not self.enabled or not self.workdir:
      return None
    from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
    folder = os.path.join(self.workdir, "pictures")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}_{int(step):07d}.mp4")
    video_io.write_video(path, np.asarray(frames, np.uint8), fps)
    return path

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()


class Progress:
  """Steps/s, clips/s and ETA over the last logging window."""

  def __init__(self, first_step: int, total_steps: int):
    self.total = total_steps
    self._t0 = time.perf_counter()
    self._step0 = first_step
    self._clips = 0

  def add_clips(self, n: int) -> None:
    self._clips += n

  def line(self, step: int, values: Mapping[str, float]) -> tuple[str, dict[str, float]]:
    now = time.perf_counter()
    dt = max(now - self._t0, 1e-9)
    steps_per_s = (step - self._step0) / dt
    clips_per_s = self._clips / dt
    eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("inf")
    self._t0, self._step0, self._clips = now, step, 0
    shown = " | ".join(f"{k} {v:.4g}" for k, v in values.items())
    text = (f"step {step}/{self.total} | {shown} | {steps_per_s:.2f} steps/s | "
            f"{clips_per_s:.1f} clips/s | ETA {_fmt_duration(eta) if eta != float('inf') else '?'}")
    return text, {"steps_per_s": steps_per_s, "clips_per_s": clips_per_s}


def log(text: str) -> None:
  if jax.process_index() == 0:
    logging.info("%s", text)
