"""Fixtures: small test videos in every format, and a video folder with bad files."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from vidgen.data import clips, video_io


def make_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """(T, H, W, 3) uint8 test clip whose frame index shows in its mean.

  Frame t is a fixed smooth colour gradient over a grey level of 20 + 12 t (so
  neighbouring frames differ by about 12 in mean, far more than codec error),
  plus a small white square that moves right by 2 pixels a frame.
  """
  assert num_frames <= 17
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:height, :width].astype(np.float32)
  phase = rng.uniform(0, 2 * np.pi, 3)
  gradient = np.stack([
      20 * np.sin(2 * np.pi * (yy / height + xx / width) + p) for p in phase
  ], axis=-1)
  video = np.empty((num_frames, height, width, 3), np.uint8)
  side = max(2, min(height, width) // 6)
  for t in range(num_frames):
    frame = np.clip(20 + 12 * t + gradient, 0, 255)
    x = (2 * t) % max(1, width - side)
    frame[height // 3 : height // 3 + side, x : x + side] = 250
    video[t] = frame.astype(np.uint8)
  return video


def noisy_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """Frames of fresh blocky noise each (every frame costs many bytes to encode)."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(40, 216, (num_frames, height // 8, width // 8, 3), dtype=np.uint8)
  return blocks.repeat(8, axis=1).repeat(8, axis=2)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def frame_ids(decoded: np.ndarray, original: np.ndarray) -> list[int]:
  """For each decoded frame, the index of the original frame with the nearest mean."""
  ref = original.reshape(len(original), -1).mean(axis=1)
  got = decoded.reshape(len(decoded), -1).mean(axis=1)
  return [int(np.argmin(np.abs(ref - g))) for g in got]


class Helpers:
  """The helper functions above, for tests (conftest modules are not imported)."""

  make_frames = staticmethod(make_frames)
  noisy_frames = staticmethod(noisy_frames)
  psnr = staticmethod(psnr)
  frame_ids = staticmethod(frame_ids)


@pytest.fixture(scope="session")
def helpers() -> Helpers:
  return Helpers()


FPS = 10.0


@dataclasses.dataclass
class FolderCase:
  """A video folder on disk and what reading each of its entries should give.

  Attributes:
    folder: the folder (with captions.jsonl).
    files: file of each valid captions.jsonl line, in key order.
    captions: caption bytes of each key.
    originals: the frames each good file was encoded from.
    record_reason: per key, the BadExample reason `record()` raises (None: ok).
    clip_reason: per key, the reason `clip(..., num_frames=8)` raises when
      record() succeeds (None: ok).
    malformed_lines: how many lines of captions.jsonl are malformed.
  """

  folder: pathlib.Path
  files: list[str]
  captions: list[bytes]
  originals: dict[str, np.ndarray]
  record_reason: list[str | None]
  clip_reason: list[str | None]
  malformed_lines: int

  def key(self, file: str, caption: bytes | None = None) -> int:
    for k, (f, c) in enumerate(zip(self.files, self.captions)):
      if f == file and (caption is None or c == caption):
        return k
    raise KeyError(file)


def _write_folder(folder: pathlib.Path) -> FolderCase:
  folder.mkdir(parents=True, exist_ok=True)
  originals = {
      "clips/a.mp4": make_frames(16, 48, 64, seed=1),
      "clips/b.webm": make_frames(16, 48, 64, seed=2),
      "clips/c.avi": make_frames(12, 40, 40, seed=3),
      "clips/d.gif": make_frames(12, 36, 48, seed=4),
      "clips/odd.mp4": make_frames(10, 33, 47, seed=5),
      "images/e.png": make_frames(1, 40, 56, seed=6),
      "images/f.jpg": make_frames(1, 40, 56, seed=7),
      "short.mp4": make_frames(2, 48, 64, seed=8),
  }
  for file, frames in originals.items():
    (folder / file).parent.mkdir(parents=True, exist_ok=True)
    video_io.write_video(folder / file, frames, FPS)
  bad = folder / "bad"
  bad.mkdir(exist_ok=True)
  whole = video_io.encode(make_frames(16, 48, 64, seed=9), FPS, "mp4")  # moov at the end
  (bad / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
  fast = video_io.encode(noisy_frames(24, 48, 64, seed=10), FPS, "mp4", faststart=True)
  (bad / "truncated_faststart.mp4").write_bytes(fast[: int(len(fast) * 0.6)])
  rng = np.random.default_rng(11)
  (bad / "garbage.mp4").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
  (bad / "zero.mp4").write_bytes(b"")

  # (file, caption bytes, record reason, clip reason for 8 frames)
  rows = [
      ("clips/a.mp4", "a red square slides right".encode(), None, None),
      ("clips/b.webm", "un chat 🐈 au café".encode(), None, None),
      ("clips/c.avi", b"an avi clip", None, None),
      ("clips/d.gif", b"a gif", None, None),
      ("clips/odd.mp4", b"odd sized", None, None),
      ("images/e.png", b"a still png", None, clips.TOO_FEW_FRAMES),
      ("images/f.jpg", b"a still jpeg", None, clips.TOO_FEW_FRAMES),
      ("short.mp4", b"two frames only", None, clips.TOO_FEW_FRAMES),
      ("bad/truncated.mp4", b"truncated", clips.CORRUPT, None),
      ("bad/truncated_faststart.mp4", b"truncated after its header", None, None),
      ("bad/garbage.mp4", b"garbage", clips.CORRUPT, None),
      ("bad/zero.mp4", b"zero bytes", clips.ZERO_BYTE, None),
      ("bad/missing.mp4", b"missing", clips.MISSING_FILE, None),
      ("clips/a.mp4", b"caf\xe9 in latin-1", None, None),  # not UTF-8
      ("clips/b.webm", b"", None, None),  # empty caption
  ]
  lines = []
  for file, caption, _, _ in rows:
    if caption == b"caf\xe9 in latin-1":
      lines.append(b'{"file": "' + file.encode() + b'", "caption": "' + caption + b'"}')
    else:
      lines.append(json.dumps({"file": file, "caption": caption.decode()}).encode())
  malformed = [b'{"file": "clips/a.mp4", "caption": ', b'["not", "an object"]',
               b'{"caption": "no file"}']
  body = lines[:3] + malformed[:1] + lines[3:9] + [b""] + malformed[1:] + lines[9:]
  (folder / "captions.jsonl").write_bytes(b"\n".join(body) + b"\n")
  return FolderCase(
      folder=folder,
      files=[r[0] for r in rows],
      captions=[r[1] for r in rows],
      originals=originals,
      record_reason=[r[2] for r in rows],
      clip_reason=[r[3] for r in rows],
      malformed_lines=len(malformed),
  )


@pytest.fixture(scope="session")
def folder_case(tmp_path_factory) -> FolderCase:
  """A video folder: good clips in every format, images, and bad files."""
  return _write_folder(tmp_path_factory.mktemp("videos") / "my_videos")


@pytest.fixture(scope="session")
def built_folder(folder_case, tmp_path_factory):
  """The `VideoFolder` builder of `folder_case`, prepared as array_record."""
  from vidgen.data import video_folder  # pylint: disable=g-import-not-at-top

  data_dir = tmp_path_factory.mktemp("tfds")
  return video_folder.build_video_folder(folder_case.folder, data_dir)
