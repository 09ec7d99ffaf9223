"""python -m vidgen.sample --config=configs/shapes/dit.py:vae=... --workdir=W --prompt="..." --out=DIR

Generates videos from text with the trained stage-2 model of W (its latest
checkpoint; `--step` for another): one mp4 per video, `samples.jsonl` (one
line per video: file, prompt, seed and every setting, enough to reproduce
it), a contact sheet `contact_sheet.png` and an `index.html` page in --out.
Prompts come from repeated --prompt flags or --prompts=FILE (one per line);
they are generated in batches of --batch with one compile per shape.
With --check_shapes, each video is also checked against its Moving Shapes
prompt from the pixels (vidgen.eval.shapes.check_prompt) and the accuracy is
printed and written to `DIR/accuracy.json`.

Sizes are in pixels (--frames must be 1 + k x the VAE's time factor, height
and width multiples of its space factor times the patch); sizes outside the
DiT's position tables fail with an error naming them.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from absl.app import UsageError

from vidgen import app

_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt (repeat for several).")
_PROMPTS = flags.DEFINE_string("prompts", None, "A file with one prompt per line.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: W/samples).")
_FRAMES = flags.DEFINE_integer("frames", 17, "Frames per video.")
_HEIGHT = flags.DEFINE_integer("height", 64, "Height in pixels.")
_WIDTH = flags.DEFINE_integer("width", 64, "Width in pixels.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: diffusion.sample.steps).")
_CFG = flags.DEFINE_float("cfg", None, "Guidance scale (default: diffusion.sample.cfg).")
_SAMPLER = flags.DEFINE_string("sampler", None, "Sampler (default: diffusion.sample.sampler).")
_SHIFT = flags.DEFINE_float("shift", None, "Flow time shift (default: diffusion.sample.shift).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first video; video i uses seed + i.")
_BATCH = flags.DEFINE_integer("batch", 8, "Videos generated together.")
_FPS = flags.DEFINE_float("fps", 8.0, "Frames per second of the written videos.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_CHECK = flags.DEFINE_bool("check_shapes", False,
                           "Check each video against its Moving Shapes prompt from the pixels.")


def read_prompts(prompts: Sequence[str], path: str | None) -> list[str]:
  out = [p for p in prompts if p.strip()]
  if path:
    with open(path) as f:
      out += [line.strip() for line in f if line.strip()]
  if not out:
    raise UsageError("give prompts with --prompt=... or --prompts=FILE")
  return out


def tokenize(tokenizer, prompts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
  rows = []
  for p in prompts:
    ids = tokenizer.encode(p)
    if len(ids) > max_len:
      raise ValueError(f"prompt {p!r} has {len(ids)} tokens; the model takes {max_len}")
    rows.append(tokenizer.pad(ids, max_len))
  return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def write_index(out: str, records: Sequence[dict], sheet: str) -> str:
  """A static page: the contact sheet, then every video with its prompt and settings."""
  items = "\n".join(
      f'<figure><video src="{html.escape(r["file"])}" autoplay loop muted playsinline '
      f'width="{2 * r["width"]}"></video><figcaption>{html.escape(r["prompt"])} '
      f'(seed {r["seed"]})</figcaption></figure>' for r in records)
  page = (f"<!doctype html><meta charset=utf-8><title>vidgen samples</title>"
          f"<style>figure{{display:inline-block;margin:6px}}</style>"
          f"<h1>vidgen samples</h1><img src=\"{html.escape(sheet)}\"><br>\n{items}\n")
  path = os.path.join(out, "index.html")
  with open(path, "w") as f:
    f.write(page)
  return path


def generate(config, workdir: str, prompts: Sequence[str], out: str, *, frames: int,
             height: int, width: int, seed: int = 0, batch: int = 8, fps: float = 8.0,
             step: int | None = None, check_shapes: bool = False, **settings) -> dict:
  """Writes the videos of `prompts` into `out`; returns a summary (and accuracy when checked)."""
  from vidgen import viz  # pylint: disable=g-import-not-at-top
  from vidgen.data import pipeline, video_io  # pylint: disable=g-import-not-at-top
  from vidgen.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import dit, loop  # pylint: disable=g-import-not-at-top

  task = dit.make_task(config, for_inference=True)
  _, params, ckpt_step = loop.restore_for_inference(config, task, workdir, step)
  gen = dit.Generator.from_config(config, **settings)
  gen.check_shape(gen.models.latent_grid((frames, height, width))[:3])
  tokenizer = tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config))
  os.makedirs(out, exist_ok=True)
  records, videos = [], []
  progress = _progress(len(prompts))
  for start in range(0, len(prompts), batch):
    chunk = list(prompts[start:start + batch])
    n = len(chunk)
    padded = chunk + [chunk[-1]] * (batch - n)  # one shape, one compile
    tokens, mask = tokenize(tokenizer, padded, config.text.max_len)
    lt, lh, lw, c = gen.models.latent_grid((frames, height, width))
    noise = jnp.stack([jax.random.normal(jax.random.key(seed + start + i), (lt, lh, lw, c))
                       for i in range(batch)])
    z = gen.latents(params, jnp.asarray(tokens), jnp.asarray(mask), noise)
    clips = np.asarray(gen.decode(params, z))[:n]
    for i, (prompt, clip) in enumerate(zip(chunk, clips)):
      index = start + i
      name = f"{index:04d}.mp4"
      video_io.write_video(os.path.join(out, name), clip, fps)
      record = {"file": name, "prompt": prompt, "seed": seed + index, "frames": frames,
                "height": height, "width": width, "mode": "t2v", "sampler": gen.sampler,
                "steps": gen.steps, "cfg": gen.cfg, "shift": gen.shift, "fps": fps,
                "checkpoint": os.path.abspath(workdir), "step": int(ckpt_step)}
      if check_shapes:
        from vidgen.eval import shapes  # pylint: disable=g-import-not-at-top
        result = shapes.check_prompt(clip, prompt)
        record["check"] = {k: v for k, v in result.items() if k != "objects"}
      records.append(record)
      videos.append(clip)
    progress.update(n)
  progress.close()
  with open(os.path.join(out, "samples.jsonl"), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  sheet = viz.contact_sheet(videos, [r["prompt"] for r in records])
  sheet.save(os.path.join(out, "contact_sheet.png"))
  index = write_index(out, records, "contact_sheet.png")
  summary = {"out": out, "videos": len(records), "index": index, "step": int(ckpt_step)}
  if check_shapes:
    summary["accuracy"] = shapes_accuracy(records, config.data.shapes.holdout)
    with open(os.path.join(out, "accuracy.json"), "w") as f:
      json.dump(summary["accuracy"], f, indent=2)
  logging.info("wrote %d videos to %s", len(records), out)
  return summary


def shapes_accuracy(records: Sequence[dict], holdout: Sequence[Sequence[str]]) -> dict:
  """Per-attribute accuracy of checked records: all, seen and held-out compositions.

  A prompt is a held-out composition when one of its objects is a (colour,
  shape) pair of `holdout` (kept out of training).
  """
  from vidgen.data import moving_shapes  # pylint: disable=g-import-not-at-top
  pairs = {tuple(p) for p in holdout}
  keys = ("color", "shape", "size", "motion", "count", "all")

  def held_out(prompt):
    return any((o["color"], o["shape"]) in pairs for o in moving_shapes.parse_caption(prompt))

  groups = {"all": list(records),
            "seen": [r for r in records if not held_out(r["prompt"])],
            "held_out": [r for r in records if held_out(r["prompt"])]}
  out = {}
  for name, group in groups.items():
    out[name] = {k: float(np.mean([r["check"][k] for r in group])) for k in keys} if group else {}
    out[name]["videos"] = len(group)
  return out


def _progress(total: int):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc="videos", unit="video", disable=jax.process_index() != 0)


def main(config, workdir):
  if config.task != "dit":
    raise UsageError(f"vidgen.sample needs a stage-2 (task=dit) config, got {config.task!r}")
  prompts = read_prompts(_PROMPT.value, _PROMPTS.value)
  summary = generate(
      config, workdir, prompts, _OUT.value or os.path.join(workdir, "samples"),
      frames=_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value, seed=_SEED.value,
      batch=_BATCH.value, fps=_FPS.value, step=_STEP.value, check_shapes=_CHECK.value,
      sampler=_SAMPLER.value, steps=_STEPS.value, cfg=_CFG.value, shift=_SHIFT.value)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main, config_file="samples/config.json")
