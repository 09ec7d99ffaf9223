"""python -m vidgen.recaption --config=configs/shapes/captioner.py --workdir=W --videos=DIR --out=F

Captions every video and image file under DIR (recursively; the suffixes of
vidgen.data.video_io) with the trained captioner of W and writes F, a
`captions.jsonl` of the video-folder data set: one `{"file": <path relative
to DIR>, "caption": ...}` line per file, sorted by file. So recaptioning is
the first link of one chain (docs/data.md):

    python -m vidgen.recaption ... --videos=DIR --out=DIR/captions.jsonl
    python -m vidgen.prepare --config=configs/folder/data.py:folder=DIR --mode=build,tokenizer
    python -m vidgen.train --config=...

Each file gives one clip of the first data bucket's shape (`--frames`,
`--height`, `--width` override it): its first frames at the data config's
sampling stride / fps, cover-resized and centre-cropped as the data pipeline
does; an image is a still clip. A file that cannot be read is a line `{"file": ..., "error": ...}`
(no caption: the data set skips it as empty_caption), not a crash.

Resumable: files already in F (or in the partial files of an interrupted
run) are skipped. Several processes split the remaining files; each appends
to `F.<process>.part` after every batch, and process 0 merges everything
into F at the end (a file system the hosts share). Decoding uses
`captioner.beams` (1: greedy).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable

import jax
import numpy as np
from absl import flags, logging
from absl.app import UsageError

from vidgen import app

_VIDEOS = flags.DEFINE_string("videos", None, "Folder of videos to caption.")
_OUT = flags.DEFINE_string("out", None, "Output captions.jsonl (default: VIDEOS/captions.jsonl).")
_BATCH = flags.DEFINE_integer("batch", 16, "Clips captioned together.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_FRAMES = flags.DEFINE_integer("frames", None, "Frames per clip (default: the first bucket's).")
_HEIGHT = flags.DEFINE_integer("height", None, "Clip height (default: the first bucket's).")
_WIDTH = flags.DEFINE_integer("width", None, "Clip width (default: the first bucket's).")


def list_files(folder: str) -> list[str]:
  """Video and image files under `folder`, relative and sorted."""
  from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
  out = []
  for root, _, names in os.walk(folder):
    for name in names:
      if name.lower().endswith(video_io.SUFFIXES):
        out.append(os.path.relpath(os.path.join(root, name), folder))
  return sorted(out)


def read_lines(paths: Iterable[str]) -> dict[str, dict]:
  """file -> record of existing output files (later files win; torn last lines ignored)."""
  done = {}
  for path in paths:
    if not os.path.exists(path):
      continue
    with open(path) as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut short by an interruption: captioned again
        if isinstance(record, dict) and "file" in record:
          done[record["file"]] = record
  return done


def _parts(out: str) -> list[str]:
  folder, base = os.path.split(os.path.abspath(out))
  if not os.path.isdir(folder):
    return []
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if n.startswith(base + ".") and n.endswith(".part"))


def load_clip(path: str, shape: tuple[int, int, int], sampling) -> np.ndarray:
  """One clip (T, H, W, 3) uint8 of a file; raises BadExample / OSError when unreadable."""
  from vidgen.data import video_folder, video_io  # pylint: disable=g-import-not-at-top
  data = video_folder.read_file(path)
  info = video_io.probe(data)
  t, h, w = shape
  rng = np.random.default_rng(0)
  if video_io.is_image(data):  # an image is a still video
    still = video_folder.clip_from_bytes(data, info, 1, h, w, sampling, rng)
    return np.repeat(still, t, axis=0)
  return video_folder.clip_from_bytes(data, info, t, h, w, sampling, rng)


def recaption(config, workdir: str, videos: str, out: str, *, batch: int = 16,
              step: int | None = None, shape: tuple[int, int, int] | None = None) -> dict:
  """Captions the files of `videos` not yet in `out`; returns a summary."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from vidgen.data import buckets as buckets_lib  # pylint: disable=g-import-not-at-top
  from vidgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import captioner  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(videos):
    raise UsageError(f"--videos={videos} is not a folder")
  shape = shape or buckets_lib.parse_buckets(config.data.buckets)[0].shape
  sampling = pipeline.sampling_from_config(config.data, train=False)
  files = list_files(videos)
  done = read_lines([out] + _parts(out))
  pid, nproc = jax.process_index(), jax.process_count()
  todo = [f for f in files if f not in done][pid::nproc]
  writer, ckpt_step = captioner.VideoCaptioner.restore(config, workdir, step,
                                                       beams=int(config.captioner.beams))
  part = f"{out}.{pid}.part"
  counts = {"captioned": 0, "errors": 0}
  start = time.perf_counter()
  progress = tqdm(total=len(todo), desc="recaption", unit="video", disable=pid != 0)
  with open(part, "a") as f:
    for i in range(0, len(todo), batch):
      names = todo[i:i + batch]
      clips, ok, lines = [], [], {}
      for name in names:
        try:
          clips.append(load_clip(os.path.join(videos, name), shape, sampling))
          ok.append(name)
        except Exception as e:  # pylint: disable=broad-except
          # Any reason a file cannot become a clip is that file's error line.
          lines[name] = {"file": name, "error": f"{type(e).__name__}: {e}"}
          counts["errors"] += 1
      if clips:
        stacked = np.stack(clips + [clips[-1]] * (batch - len(clips)))  # one shape, one compile
        for name, caption in zip(ok, writer(stacked)):
          lines[name] = {"file": name, "caption": caption}
          counts["captioned"] += 1
      for name in names:
        f.write(json.dumps(lines[name]) + "\n")
      f.flush()
      progress.update(len(names))
  progress.close()
  seconds = time.perf_counter() - start
  if nproc > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("vidgen.recaption: parts written")
  summary = {"out": out, "files": len(files), "already_done": len(done),
             "step": int(ckpt_step), **counts, "seconds": round(seconds, 2),
             "clips_per_s": round(counts["captioned"] / seconds, 2) if seconds else None}
  if pid == 0:
    merged = read_lines([out] + _parts(out))
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
      for name in sorted(merged):
        f.write(json.dumps(merged[name]) + "\n")
    os.replace(tmp, out)
    for p in _parts(out):
      os.remove(p)
    summary["lines"] = len(merged)
  logging.info("recaption: %s", summary)
  return summary


def main(config, workdir):
  if config.task != "captioner":
    raise UsageError(f"vidgen.recaption needs a captioner config, got task={config.task!r}")
  if not _VIDEOS.value:
    raise UsageError("give the folder to caption with --videos=DIR")
  out = _OUT.value or os.path.join(_VIDEOS.value, "captions.jsonl")
  shape = None
  if _FRAMES.value or _HEIGHT.value or _WIDTH.value:
    from vidgen.data import buckets as buckets_lib  # pylint: disable=g-import-not-at-top
    t, h, w = buckets_lib.parse_buckets(config.data.buckets)[0].shape
    shape = (_FRAMES.value or t, _HEIGHT.value or h, _WIDTH.value or w)
  summary = recaption(config, workdir, _VIDEOS.value, out, batch=_BATCH.value,
                      step=_STEP.value, shape=shape)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main, config_file="recaption/config.json")
