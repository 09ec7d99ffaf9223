"""Input pipeline throughput: clips/s for each source, with 0 and 2 Grain workers.

    python -m vidgen.bench.data [--clips=2048] [--reps=3] [--workers=0,2]

Prints one JSON line per case:
    {"name": "shapes_on_demand/workers=2", "clips_per_s": ..., "reps": [...], ...}

Cases, all at 16x64x64 (T x H x W) in batches of 32, tokenized captions included:
  shapes_on_demand   Moving Shapes rendered per example (no disk)
  shapes_records     Moving Shapes read from array_record (built first, untimed)
  folder_mp4         a folder of mp4 files (written first, untimed), decoded by PyAV
Each repetition times `--clips` clips after a warm-up that starts the workers;
the figure is the median of `--reps` repetitions.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

from vidgen.data import buckets as buckets_lib
from vidgen.data import moving_shapes, pipeline
from vidgen.text import tokenizer as tokenizer_lib

_CLIPS = flags.DEFINE_integer("clips", 2048, "Clips timed per repetition.")
_REPS = flags.DEFINE_integer("reps", 3, "Repetitions; the median is reported.")
_WORKERS = flags.DEFINE_string("workers", "0,2", "Worker counts to measure.")
_CASES = flags.DEFINE_string("cases", "shapes_on_demand,shapes_records,folder_mp4",
                             "Cases to run.")
_FOLDER_CLIPS = 64
_RECORD_CLIPS = 512
BUCKETS = buckets_lib.parse_buckets("16x64x64:32")
SHAPES = moving_shapes.ShapesConfig(height=64, width=64, frames=16)


def _prepare(tmp: str, cases: list[str]) -> tuple[tokenizer_lib.Tokenizer, dict]:
  captions = [moving_shapes.caption(moving_shapes.sample_objects(SHAPES, "train", i))
              for i in range(2000)]
  tok = tokenizer_lib.train(captions, os.path.join(tmp, "tokenizer.model"))
  sources = {}
  if "shapes_on_demand" in cases:
    sources["shapes_on_demand"] = moving_shapes.MovingShapesSource(SHAPES, "train", 1_000_000)
  if "shapes_records" in cases:
    builder = moving_shapes.MovingShapes(
        data_dir=os.path.join(tmp, "tfds"), shapes=SHAPES,
        split_sizes={"train": _RECORD_CLIPS, "test": 0, "holdout": 0},
        file_format="array_record")
    builder.download_and_prepare()
    sources["shapes_records"] = moving_shapes.MovingShapesRecordSource(
        os.path.join(tmp, "tfds"), SHAPES, "train")
  if "folder_mp4" in cases:
    from vidgen.data import video_folder, video_io  # pylint: disable=g-import-not-at-top
    folder = os.path.join(tmp, "videos")
    os.makedirs(folder)
    with open(os.path.join(folder, "captions.jsonl"), "w") as f:
      for i in range(_FOLDER_CLIPS):
        ex = moving_shapes.example(SHAPES, "train", i)
        video_io.write_video(os.path.join(folder, f"{i}.mp4"), ex["video"], fps=8)
        f.write(json.dumps({"file": f"{i}.mp4", "caption": ex["caption"]}) + "\n")
    sources["folder_mp4"] = video_folder.VideoFolderSource(folder)
  return tok, sources


def measure(source, tok, workers: int, clips: int, reps: int) -> list[float]:
  """clips/s of `reps` consecutive windows of `clips` clips on one iterator."""
  ds = pipeline.make_dataset(source, BUCKETS, tok, num_workers=workers, worker_buffer_size=2, seed=0)
  it = iter(ds)
  for _ in range(max(2, 2 * workers)):  # start workers, fill buffers
    next(it)
  rates = []
  for _ in range(reps):
    n = 0
    start = time.perf_counter()
    while n < clips:
      n += next(it)["video"].shape[0]
    rates.append(n / (time.perf_counter() - start))
  it.close()
  return rates


def main(argv):
  del argv
  cases = [c for c in _CASES.value.split(",") if c]
  workers = [int(w) for w in _WORKERS.value.split(",") if w]
  with tempfile.TemporaryDirectory() as tmp:
    with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress on stdout
      tok, sources = _prepare(tmp, cases)
    for name in cases:
      for w in workers:
        rates = measure(sources[name], tok, w, _CLIPS.value, _REPS.value)
        print(json.dumps({
            "name": f"{name}/workers={w}",
            "clips_per_s": round(statistics.median(rates), 1),
            "reps": [round(r, 1) for r in rates],
            "shape": list(BUCKETS[0].shape),
            "batch_size": BUCKETS[0].batch_size,
            "cpus": os.cpu_count(),
        }), flush=True)


if __name__ == "__main__":
  app.run(main)
