"""Evaluation of generated videos: captioner alignment, temporal consistency, pixel checks.

Input: a folder written by `vidgen.sample` (videos and `samples.jsonl` with
each video's prompt). Per video:

  alignment    the captioner's caption of the video against its prompt,
               per attribute (Moving Shapes grammar: colour, shape, size,
               motion; else exact match only).
  consistency  the object keeps its identity over time: the video is cut
               into `chunks` equal parts and each part is captioned; the
               video is consistent when every part's caption names the same
               colour and shape (Moving Shapes) or the same caption.
               With Moving Shapes prompts the same is read from the pixels
               (vidgen.eval.shapes.measure of each part: the same colours,
               each with the same shape).
  pixels       Moving Shapes only: colour, shape, size and motion of the
               prompted objects read from the pixels (check_prompt).

The report (means over videos) goes with a markdown page listing the worst
videos (most attributes wrong) as frame strips.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from vidgen.data import clips, video_io
from vidgen.data import moving_shapes as ms
from vidgen.eval import shapes

ATTRS = ("color", "shape", "size", "motion")


def fit_clip(video: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
  """(T, H, W, 3) -> the captioner's (t, h, w): first t frames (last repeated if short), resized."""
  t, h, w = shape
  if len(video) < t:
    video = np.concatenate([video, np.repeat(video[-1:], t - len(video), axis=0)])
  return clips.resize_and_crop(video[:t], h, w)


def _identity(caption: str) -> tuple | str:
  try:
    return tuple((o["color"], o["shape"]) for o in ms.parse_caption(caption))
  except ValueError:
    return caption


def _pixel_identity(video: np.ndarray) -> tuple:
  return tuple((o["color"], o["shape"]) for o in shapes.measure(video))


def evaluate_videos(videos: Sequence[np.ndarray], prompts: Sequence[str],
                    caption: Callable[[np.ndarray], list[str]], clip_shape: tuple[int, int, int],
                    chunks: int = 2) -> list[dict]:
  """Per-video results (see module doc); `caption` maps (B, t, h, w, 3) uint8 to strings."""
  is_shapes = all(_parses(p) for p in prompts)
  whole = caption(np.stack([fit_clip(v, clip_shape) for v in videos]))
  part_shape = (max(1, clip_shape[0] // chunks),) + tuple(clip_shape[1:])
  parts = [np.array_split(v, chunks) for v in videos]
  part_captions = caption(np.stack([fit_clip(p, part_shape) for ps in parts for p in ps]))
  out = []
  for i, (video, prompt) in enumerate(zip(videos, prompts)):
    mine = part_captions[i * chunks:(i + 1) * chunks]
    r = {"prompt": prompt, "caption": whole[i], "part_captions": mine}
    if is_shapes:
      r["alignment"] = shapes.compare_captions(whole[i], prompt)
      r["consistent"] = len({_identity(c) for c in mine}) == 1 and all(
          isinstance(_identity(c), tuple) for c in mine)
      r["consistent_pixels"] = len({_pixel_identity(p) for p in parts[i]}) == 1
      check = shapes.check_prompt(video, prompt)
      r["pixels"] = {k: bool(check[k]) for k in ATTRS + ("all",)}
      r["wrong"] = (sum(not r["alignment"][k] for k in ATTRS)
                    + sum(not r["pixels"][k] for k in ATTRS) + (not r["consistent"]))
    else:
      r["alignment"] = {"exact": whole[i].strip() == prompt.strip()}
      r["consistent"] = len(set(mine)) == 1
      r["wrong"] = int(not r["alignment"]["exact"]) + int(not r["consistent"])
    out.append(r)
  return out


def _parses(prompt: str) -> bool:
  try:
    ms.parse_caption(prompt)
    return True
  except ValueError:
    return False


def summarize(results: Sequence[dict]) -> dict:
  """Means over videos of every boolean result."""
  out: dict = {"videos": len(results)}
  for group in ("alignment", "pixels"):
    keys = sorted({k for r in results for k in r.get(group, {})})
    if keys:
      out[group] = {k: float(np.mean([r[group][k] for r in results])) for k in keys}
  for key in ("consistent", "consistent_pixels"):
    if any(key in r for r in results):
      out[key] = float(np.mean([r[key] for r in results]))
  return out


def write_page(out: str, results: Sequence[dict], videos: Sequence[np.ndarray],
               summary: dict, worst: int = 8) -> str:
  """A markdown page: the summary, then the worst videos as frame strips (PNG)."""
  from vidgen import viz  # pylint: disable=g-import-not-at-top
  os.makedirs(out, exist_ok=True)
  order = sorted(range(len(results)), key=lambda i: -results[i]["wrong"])[:worst]
  lines = ["# Evaluation of generated videos", "", "```json", json.dumps(summary, indent=1),
           "```", "", f"## The {len(order)} worst videos", ""]
  for rank, i in enumerate(order):
    r = results[i]
    name = f"worst_{rank:02d}.png"
    viz.contact_sheet([videos[i]], [f"prompt: {r['prompt']}"], max_frames=9).save(
        os.path.join(out, name))
    lines += [f"### {rank + 1}. {r['file'] if 'file' in r else i}", "",
              f"- prompt: `{r['prompt']}`", f"- caption: `{r['caption']}`",
              f"- captions over time: {' / '.join(f'`{c}`' for c in r['part_captions'])}",
              f"- wrong: {r['wrong']}", "", f"![{name}]({name})", ""]
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def load_samples(folder: str) -> tuple[list[dict], list[np.ndarray]]:
  """Records of `folder/samples.jsonl` and their decoded videos."""
  path = os.path.join(folder, "samples.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no samples.jsonl in {folder} (a vidgen.sample output folder)")
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  videos = []
  for r in records:
    with open(os.path.join(folder, r["file"]), "rb") as f:
      videos.append(video_io.decode(f.read()))
  return records, videos
