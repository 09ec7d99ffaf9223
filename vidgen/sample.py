"""python -m vidgen.sample --config=configs/shapes/dit.py:vae=... --workdir=W --prompt="..." --out=DIR

Generates videos with the trained stage-2 model of W (its latest checkpoint;
`--step` for another): one mp4 per video (`--gif` adds a gif),
`samples.jsonl` (one line per video: file, prompt, seed and every setting,
enough to reproduce it), a contact sheet `contact_sheet.png` and an
`index.html` page in --out. Prompts come from repeated --prompt flags or
--prompts=FILE (one per line); they are generated in batches of --batch
(one compile per shape), each batch spread over the devices of the mesh
and the prompt list over the processes (each writes its own videos;
process 0 writes the shared files). --negative_prompt (or a file of one per
prompt, --negative_prompts) replaces the empty caption of classifier-free
guidance, so the video is steered away from that caption.

Modes (--mode; vidgen.diffusion.modes): t2v; i2v --image=PNG; extend and
extend_back --video=FILE; interpolate --image=A --image=B; stitch
--video=A --video=B; loop (a clip, then a transition back into it made on
its latents, decoded as a cycle). --keep sets how many latent frames of a
given video, or of a loop's ends, are kept.

Videos longer than the window (--window latent frames; default the
longest training bucket) are made by a Flexible Diffusion Modeling plan
(--scheme autoregressive | long_range | hierarchical | brute_force;
vidgen.diffusion.long_video); --print_plan prints it and exits.

With --check_shapes, each video is also checked against its Moving Shapes
prompt from the pixels (vidgen.eval.shapes.check_prompt) and the accuracy is
printed and written to `DIR/accuracy.json`.

Sizes are in pixels (--frames must be 1 + k x the VAE's time factor; a loop
has k x that factor frames, given as either; height and width multiples of
its space factor times the patch); a window outside the DiT's position
tables fails with an error naming them.
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
from vidgen.eval import metrics as eval_metrics
from vidgen.diffusion import long_video
from vidgen.diffusion.modes import MODES

_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt (repeat for several).")
_PROMPTS = flags.DEFINE_string("prompts", None, "A file with one prompt per line.")
_NEGATIVE = flags.DEFINE_string(
    "negative_prompt", "", "A caption that guidance steers every video away from, in place of "
    "the empty caption (needs --cfg other than 1).")
_NEGATIVES = flags.DEFINE_string(
    "negative_prompts", None, "A file with one negative prompt per line, one per prompt "
    "(empty lines: the empty caption).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: W/samples).")
_MODE = flags.DEFINE_enum("mode", "t2v", list(MODES), "Generation mode (module doc).")
_IMAGE = flags.DEFINE_multi_string("image", [], "Image file(s) for i2v (1) and interpolate (2).")
_VIDEO = flags.DEFINE_multi_string("video", [], "Video file(s) for extend(_back) (1), stitch (2).")
_KEEP = flags.DEFINE_integer("keep", 1, "Latent frames kept of each given video (extend, "
                             "extend_back, stitch) and of a loop's two ends.")
_CONTEXT = flags.DEFINE_integer("context", None, "Conditioning frames per window of a long video "
                                "(default: diffusion.sample.context, else half the window).")
_FRAMES = flags.DEFINE_integer("frames", 17, "Frames per video.")
_HEIGHT = flags.DEFINE_integer("height", 64, "Height in pixels.")
_WIDTH = flags.DEFINE_integer("width", 64, "Width in pixels.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampler steps (default: diffusion.sample.steps).")
_CFG = flags.DEFINE_float("cfg", None, "Text guidance scale (default: diffusion.sample.cfg).")
_CFG_FRAMES = flags.DEFINE_float(
    "cfg_frames", None,
    "Guidance scale on the given frames (default: diffusion.sample.cfg_frames).")
_SAMPLER = flags.DEFINE_string("sampler", None, "Sampler (default: diffusion.sample.sampler).")
_SHIFT = flags.DEFINE_float("shift", None, "Flow time shift (default: diffusion.sample.shift).")
_SCHEME = flags.DEFINE_enum("scheme", None, list(long_video.SCHEMES),
                            "Long-video scheme (default: diffusion.sample.scheme).")
_WINDOW = flags.DEFINE_integer("window", None, "Latent frames per sampler call "
                               "(default: diffusion.sample.window, else the longest bucket).")
_MAX_SPAN = flags.DEFINE_integer("max_span", None, "Latent frames a window may span "
                                 "(default: diffusion.sample.max_span, else the position table).")
_PRINT_PLAN = flags.DEFINE_bool("print_plan", False, "Print the long-video plan and exit.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the first video; video i uses seed + i.")
_BATCH = flags.DEFINE_integer("batch", 8, "Videos generated together.")
_FPS = flags.DEFINE_float("fps", 8.0, "Frames per second of the written videos.")
_GIF = flags.DEFINE_bool("gif", False, "Also write a gif of each video.")
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


def read_negatives(count: int, prompt: str, path: str | None) -> list[str]:
  """One negative prompt per prompt: --negative_prompts' lines, else --negative_prompt for all."""
  if path and prompt:
    raise UsageError("give --negative_prompt or --negative_prompts, not both")
  if not path:
    return [prompt.strip()] * count
  with open(path) as f:
    lines = [line.strip() for line in f.read().splitlines()]
  if len(lines) != count:
    raise UsageError(f"--negative_prompts has {len(lines)} lines for {count} prompts")
  return lines


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


def read_media(path: str) -> np.ndarray:
  """uint8 (T, H, W, 3) frames of an image (T = 1) or video file."""
  from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise UsageError(f"no such file: {path}")
  with open(path, "rb") as f:
    return video_io.decode(f.read())


class _Sharder:
  """Puts a batch's arrays on the process's devices, split along the batch.

  Each process samples its own prompts with the whole model on its devices,
  so no step waits on another host.
  """

  def __init__(self):
    from jax.sharding import (  # pylint: disable=g-import-not-at-top
        Mesh, NamedSharding, PartitionSpec)
    devices = jax.local_devices()
    self.count = len(devices)
    mesh = Mesh(np.asarray(devices), ("data",))
    self._sharding = NamedSharding(mesh, PartitionSpec("data"))
    self._replicated = NamedSharding(mesh, PartitionSpec())

  def __call__(self, x):
    return jax.device_put(jnp.asarray(x), self._sharding)

  def local_params(self, params):
    """The model on this process's devices (replicated), gathered first from a multi-host mesh."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      params = multihost_utils.process_allgather(params, tiled=True)
    return jax.device_put(params, self._replicated)


def generate(config, workdir: str, prompts: Sequence[str], out: str, *, frames: int,
             height: int, width: int, mode: str = "t2v", images: Sequence[str] = (),
             videos: Sequence[str] = (), keep: int = 1, seed: int = 0, batch: int = 8,
             fps: float = 8.0, gif: bool = False, step: int | None = None,
             check_shapes: bool = False, print_plan: bool = False,
             negative_prompts: Sequence[str] | None = None, **settings) -> dict:
  """Writes the videos of `prompts` into `out`; returns a summary (and accuracy when checked).

  `negative_prompts`: one per prompt ("" or None: the empty caption), the
  caption guidance steers away from.

  `settings` override the Generator's (sampler, steps, cfg, cfg_frames, shift,
  window, scheme, context, max_span); None keeps the config's.
  """
  from vidgen import viz  # pylint: disable=g-import-not-at-top
  from vidgen.data import pipeline, video_io  # pylint: disable=g-import-not-at-top
  from vidgen.diffusion import modes  # pylint: disable=g-import-not-at-top
  from vidgen.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import dit, loop  # pylint: disable=g-import-not-at-top

  gen = dit.Generator.from_config(config, **settings)
  tf = gen.time_factor
  image_arrays = [read_media(p)[0] for p in images]
  video_arrays = [read_media(p) for p in videos]
  try:
    _, lh, lw, channels = gen.models.latent_grid((1, height, width))
    if mode == "loop":  # two passes in latent space: a clip, then a transition back
      first, g = gen.loop_lengths(frames, keep)
      passes = [(first, None), (2 * keep + g, modes.loop_known(g, keep))]
      canvas = None
    else:
      canvas = modes.build(mode, frames, height, width, time_factor=tf, context=keep,
                           images=image_arrays, videos=video_arrays)
      passes = [(modes.latent_frames(frames, tf), canvas.latent_known(tf))]
    plans = []
    for lt, known in passes:
      plans.append(gen.plan(lt, known))
      gen.check_shape((lt, lh, lw))
  except ValueError as e:
    raise UsageError(str(e)) from e
  if print_plan:
    text = "\n".join(p.describe() for p in plans)
    print(text, flush=True)
    return {"plans": [p.to_json() for p in plans]}

  task = dit.make_task(config, for_inference=True)
  _, params, ckpt_step = loop.restore_for_inference(config, task, workdir, step)
  tokenizer = tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config))
  os.makedirs(out, exist_ok=True)
  shard = _Sharder()
  params = shard.local_params(params)
  batch = -(-batch // shard.count) * shard.count  # a multiple of the local devices
  pid, nproc = jax.process_index(), jax.process_count()
  mine = list(range(len(prompts)))[pid::nproc]
  records, videos_out = [], []
  progress = _progress(len(mine))

  def noise(seeds, salt, lt):
    return shard(jnp.stack([jax.random.normal(jax.random.fold_in(jax.random.key(s), salt),
                                              (lt, lh, lw, channels)) for s in seeds]))

  def run(tokens, mask, seeds, negative):
    tokens, mask, negative = shard(tokens), shard(mask), (shard(negative[0]), shard(negative[1]))
    if mode == "loop":
      z = gen.loop_latents(params, tokens, mask, noise(seeds, 0, passes[0][0]),
                           noise(seeds, 1, passes[1][0]), keep, negative=negative)
      return gen.decode_loop(params, z)
    known_x0, known = gen.canvas_latents(params, canvas, len(seeds))
    z = gen.sample_latents(params, tokens, mask, noise(seeds, 0, passes[0][0]),
                           None if known_x0 is None else shard(known_x0), known,
                           negative=negative)
    return gen.decode_video(params, z)

  negatives = list(negative_prompts or [""] * len(prompts))
  if len(negatives) != len(prompts):
    raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")

  lt_total = passes[0][0]
  for start in range(0, len(mine), batch):
    chunk = mine[start:start + batch]
    n = len(chunk)
    padded = chunk + [chunk[-1]] * (batch - n)  # one shape, one compile
    tokens, mask = tokenize(tokenizer, [prompts[i] for i in padded], config.text.max_len)
    seeds = [seed + i for i in padded]
    # Always given, so one compile serves every batch: "" tokenizes to the empty caption.
    negative = tokenize(tokenizer, [negatives[i] for i in padded], config.text.max_len)
    clips = run(tokens, mask, seeds, negative)
    for index, clip in zip(chunk, clips[:n]):
      prompt = prompts[index]
      name = f"{index:04d}.mp4"
      video_io.write_video(os.path.join(out, name), clip, fps)
      if gif:
        video_io.write_video(os.path.join(out, f"{index:04d}.gif"), clip, fps)
      record = {"file": name, "prompt": prompt, "negative_prompt": negatives[index],
                "seed": seed + index, "frames": int(len(clip)),
                "height": height, "width": width, "mode": mode,
                "images": [os.path.abspath(p) for p in images],
                "videos": [os.path.abspath(p) for p in videos], "keep": keep,
                "sampler": gen.sampler, "steps": gen.steps, "cfg": gen.cfg,
                "cfg_frames": gen.cfg_frames, "shift": gen.shift, "window": gen.window,
                "scheme": gen.scheme, "context": gen.context, "max_span": gen.span,
                "windows": [len(p.steps) for p in plans], "fps": fps,
                "checkpoint": os.path.abspath(workdir), "step": int(ckpt_step)}
      if mode == "loop":
        record["loop"] = eval_metrics.loop_jump(clip)
      elif canvas is not None and canvas.given.any():
        # How faithfully the given frames come back (VAE round trip): PSNR in dB.
        record["given_psnr"] = float(eval_metrics.psnr(
            clip[None, canvas.given], canvas.pixels[None, canvas.given])[0])
      if check_shapes:
        window_frames = 1 + tf * ((gen.window or lt_total) - 1)
        record.update(check_video(clip, prompt, window_frames))
      records.append(record)
      videos_out.append(clip)
    progress.update(n)
  progress.close()
  records, videos_out = _gather(out, records, videos_out, pid, nproc)
  if pid:
    return {"out": out, "videos": len(mine), "process": pid}
  with open(os.path.join(out, "samples.jsonl"), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  sheet = viz.contact_sheet(videos_out, [r["prompt"] for r in records])
  sheet.save(os.path.join(out, "contact_sheet.png"))
  index = write_index(out, records, "contact_sheet.png")
  summary = {"out": out, "videos": len(records), "index": index, "step": int(ckpt_step),
             "mode": mode}
  if any("given_psnr" in r for r in records):
    summary["given_psnr"] = float(np.mean([r["given_psnr"] for r in records]))
  if mode == "loop":
    ratios = [r["loop"]["ratio"] for r in records]
    summary["loop"] = {"median_ratio": float(np.median(ratios)),
                       "seamless": float(np.mean(np.asarray(ratios) <= 1))}
  if check_shapes:
    summary["accuracy"] = shapes_accuracy(records, config.data.shapes.holdout)
    with open(os.path.join(out, "accuracy.json"), "w") as f:
      json.dump(summary["accuracy"], f, indent=2)
  logging.info("wrote %d videos to %s", len(records), out)
  return summary


def _gather(out: str, records: list[dict], videos: list[np.ndarray], pid: int, nproc: int):
  """All processes' records and videos, in prompt order, on process 0 (others: their own).

  Each process writes its records to `samples.<pid>.jsonl`; after a barrier,
  process 0 reads them and the videos back (a file system shared by the hosts).
  """
  if nproc == 1:
    return records, videos
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  part = os.path.join(out, f"samples.{pid}.jsonl")
  with open(part, "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  multihost_utils.sync_global_devices("vidgen.sample: videos written")
  if pid:
    return records, videos
  merged = []
  for p in range(nproc):
    path = os.path.join(out, f"samples.{p}.jsonl")
    with open(path) as f:
      merged += [json.loads(line) for line in f if line.strip()]
    os.remove(path)
  merged.sort(key=lambda r: r["file"])
  return merged, [read_media(os.path.join(out, r["file"])) for r in merged]


CHECK_KEYS = ("color", "shape", "size", "motion", "count", "all")


def check_video(clip: np.ndarray, prompt: str, chunk: int) -> dict:
  """{"check": ...} of a video against its prompt; longer than `chunk` frames also per chunk.

  A long video is cut into chunks of `chunk` frames overlapping by one (the
  window's length in pixels); "every_chunk" says whether each attribute is
  right in every chunk (the object keeps its colour, shape, size and motion
  over the whole video), "chunks" the fraction of chunks where it is.
  """
  from vidgen.eval import shapes  # pylint: disable=g-import-not-at-top
  strip = lambda result: {k: result[k] for k in CHECK_KEYS}
  out = {"check": strip(shapes.check_prompt(clip, prompt))}
  if len(clip) > chunk > 1:
    parts = [strip(shapes.check_prompt(clip[s:s + chunk], prompt))
             for s in range(0, len(clip) - chunk + 1, chunk - 1)]
    out["chunks"] = {k: float(np.mean([p[k] for p in parts])) for k in CHECK_KEYS}
    out["every_chunk"] = {k: bool(all(p[k] for p in parts)) for k in CHECK_KEYS}
  return out


def shapes_accuracy(records: Sequence[dict], holdout: Sequence[Sequence[str]]) -> dict:
  """Per-attribute accuracy of checked records: all, seen and held-out compositions.

  A prompt is a held-out composition when one of its objects is a (colour,
  shape) pair of `holdout` (kept out of training). Long videos add
  "every_chunk": the fraction of videos right in every chunk (check_video).
  """
  from vidgen.data import moving_shapes  # pylint: disable=g-import-not-at-top
  pairs = {tuple(p) for p in holdout}

  def held_out(prompt):
    return any((o["color"], o["shape"]) in pairs for o in moving_shapes.parse_caption(prompt))

  groups = {"all": list(records),
            "seen": [r for r in records if not held_out(r["prompt"])],
            "held_out": [r for r in records if held_out(r["prompt"])]}
  out = {}
  for name, group in groups.items():
    out[name] = ({k: float(np.mean([r["check"][k] for r in group])) for k in CHECK_KEYS}
                 if group else {})
    out[name]["videos"] = len(group)
    if group and all("every_chunk" in r for r in group):
      out[name]["every_chunk"] = {k: float(np.mean([r["every_chunk"][k] for r in group]))
                                  for k in CHECK_KEYS}
  return out


def _progress(total: int):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc="videos", unit="video", disable=jax.process_index() != 0)


def main(config, workdir):
  if config.task != "dit":
    raise UsageError(f"vidgen.sample needs a stage-2 (task=dit) config, got {config.task!r}")
  prompts = [] if _PRINT_PLAN.value else read_prompts(_PROMPT.value, _PROMPTS.value)
  negatives = [] if _PRINT_PLAN.value else read_negatives(len(prompts), _NEGATIVE.value,
                                                          _NEGATIVES.value)
  summary = generate(
      config, workdir, prompts, _OUT.value or os.path.join(workdir, "samples"),
      frames=_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value, mode=_MODE.value,
      images=_IMAGE.value, videos=_VIDEO.value, keep=_KEEP.value, seed=_SEED.value,
      batch=_BATCH.value, fps=_FPS.value, gif=_GIF.value, step=_STEP.value,
      check_shapes=_CHECK.value, print_plan=_PRINT_PLAN.value, negative_prompts=negatives,
      sampler=_SAMPLER.value, steps=_STEPS.value, cfg=_CFG.value, cfg_frames=_CFG_FRAMES.value,
      shift=_SHIFT.value, window=_WINDOW.value, scheme=_SCHEME.value, context=_CONTEXT.value,
      max_span=_MAX_SPAN.value)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main, config_file="samples/config.json")
