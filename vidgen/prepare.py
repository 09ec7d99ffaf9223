"""Prepare data: build data sets, train the tokenizer, export clips, draw a contact sheet.

    python -m vidgen.prepare --config=configs/shapes/data.py --workdir=out/data \
        --mode=build,tokenizer,sheet
    python -m vidgen.prepare --config=configs/shapes/data.py --mode=export \
        --split=test --num=64 --out=out/test_clips

Modes (comma separated, run in this order):
  build      write the data set to array_record under data.data_dir (Moving
             Shapes: every split at data.build_sizes; a video folder: its
             files and captions, bad files recorded with their reason).
  tokenizer  train the SentencePiece tokenizer on the train captions and save
             it at text.tokenizer (default <data.data_dir>/tokenizer.model).
  export     write --num clips of --split as DIR/<i>.npy (T, H, W, 3) uint8 and
             DIR/prompts.jsonl ({"file": "<i>.npy", "prompt": caption} per
             line); Moving Shapes adds DIR/ground_truth.jsonl.
  sheet      run the input pipeline on --split and write <workdir>/contact_sheet.png
             and one mp4 per clip shown, captions decoded from the batch tokens.
  latents    encode --split with the trained VAE of --vae (default
             vae.checkpoint) into array_record shards under --out (default
             <data.data_dir>/latents/<split>), one shard per process, with
             caption tokens and metadata (vidgen.data.latents); --num clips
             (default: the whole split; Moving Shapes: data.build_sizes).
             Needs a config with a `vae` section (configs/shapes/vae.py).
  prompts    write --num distinct captions of --split to the file --out, one
             per line (prompts for `vidgen.sample --prompts=FILE`).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import flags, logging
from absl.app import UsageError

from vidgen import app
from vidgen.data import buckets as buckets_lib
from vidgen.data import clips, pipeline

MODES = ("build", "tokenizer", "export", "sheet", "latents", "prompts")

_MODE = flags.DEFINE_string("mode", "build,tokenizer,sheet", f"Comma-separated of {MODES}.")
_SPLIT = flags.DEFINE_string("split", None, "Split for export/sheet (default data.eval_split).")
_OUT = flags.DEFINE_string("out", None, "Output folder of export mode.")
_NUM = flags.DEFINE_integer("num", 16, "Clips to export / show on the contact sheet / encode.")
_VAE = flags.DEFINE_string("vae", None, "latents: trained VAE workdir (default vae.checkpoint).")


def _source_kind(config) -> tuple[str, str]:
  kind, _, arg = config.data.source.partition(":")
  return kind, arg


def build(config) -> None:
  """Writes the configured data set to array_record under data.data_dir."""
  from vidgen.data import video_folder  # pylint: disable=g-import-not-at-top

  kind, arg = _source_kind(config)
  start = time.time()
  if kind in ("shapes", "shapes_records"):
    sizes = {k: int(v) for k, v in config.data.build_sizes.items()}
    if not config.data.shapes.holdout:
      sizes["holdout"] = 0
    for group, data_dir in pipeline.build_shapes(config.data, sizes):
      logging.info("built Moving Shapes %s in %.1fs: %s", group, time.time() - start, data_dir)
  elif kind in ("folder", "folder_records"):
    builder = video_folder.VideoFolder(
        data_dir=config.data.data_dir, folder=arg, file_format="array_record")
    builder.download_and_prepare()
    logging.info("built video folder %s in %.1fs: %s", arg, time.time() - start,
                 builder.data_dir)
  else:
    raise ValueError(f"data.source {config.data.source!r} is built by TFDS itself; "
                     "prepare it with its own TFDS builder into data.data_dir")


def export(config, split: str, out: str, num: int) -> int:
  """Writes `num` clips of `split` to `out`; returns how many were written."""
  from vidgen.data import moving_shapes  # pylint: disable=g-import-not-at-top

  os.makedirs(out, exist_ok=True)
  kind, _ = _source_kind(config)
  written = 0
  with open(os.path.join(out, "prompts.jsonl"), "w") as prompts:
    if kind in ("shapes", "shapes_records"):
      cfg = pipeline.shapes_config(config.data, split)
      with open(os.path.join(out, "ground_truth.jsonl"), "w") as truth:
        for i in range(num):
          ex = moving_shapes.example(cfg, split, i)
          np.save(os.path.join(out, f"{i}.npy"), ex["video"])
          prompts.write(json.dumps({"file": f"{i}.npy", "prompt": ex["caption"]}) + "\n")
          truth.write(json.dumps({"file": f"{i}.npy", "split": split, "index": i,
                                  "objects": ex["objects"]}) + "\n")
          written += 1
      return written
    source = pipeline.make_source(config.data, split)
    bucket = buckets_lib.parse_buckets(config.data.buckets)[0]
    sampling = pipeline.sampling_from_config(config.data, train=False)
    for key in range(len(source)):
      if written == num:
        break
      try:
        ex = source.clip(source.record(key), bucket.frames, bucket.height, bucket.width,
                         sampling, np.random.default_rng(key))
        caption = ex["caption"]
        caption = caption.decode("utf-8") if isinstance(caption, bytes) else caption
      except (clips.BadExample, UnicodeDecodeError) as e:
        logging.warning("export: skipping key %d: %s", key, e)
        continue
      np.save(os.path.join(out, f"{written}.npy"), ex["video"])
      prompts.write(json.dumps({"file": f"{written}.npy", "prompt": caption}) + "\n")
      written += 1
  return written


def sheet(config, split: str, workdir: str, num: int) -> str:
  """Draws `num` clips from the input pipeline; returns the PNG path."""
  from vidgen import viz  # pylint: disable=g-import-not-at-top
  from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
  from vidgen.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  tok = tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config))
  ds = pipeline.dataset_from_config(config, split, train=False, num_workers=0)
  videos, captions = [], []
  it = iter(ds)
  for batch in it:
    for video, tokens in zip(batch["video"], batch["tokens"]):
      videos.append(video)
      captions.append(tok.decode(tokens))
    if len(videos) >= num:
      break
  videos, captions = videos[:num], captions[:num]
  clip_dir = os.path.join(workdir, "clips")
  os.makedirs(clip_dir, exist_ok=True)
  for i, video in enumerate(videos):
    video_io.write_video(os.path.join(clip_dir, f"{i:03d}.mp4"), video, fps=8)
  with open(os.path.join(clip_dir, "captions.jsonl"), "w") as f:
    for i, c in enumerate(captions):
      f.write(json.dumps({"file": f"{i:03d}.mp4", "caption": c}) + "\n")
  path = os.path.join(workdir, "contact_sheet.png")
  viz.contact_sheet(videos, captions).save(path)
  logging.info("skipped while drawing: %s", pipeline.skip_counts(it.get_state()) or "none")
  return path


def encode_latents(config, split: str, out: str, vae_dir: str, num: int | None) -> dict:
  """Writes this process's shard of `split` as VAE latents; returns the metadata."""
  import jax  # pylint: disable=g-import-not-at-top
  from vidgen.data import latents  # pylint: disable=g-import-not-at-top
  from vidgen.models import vae as vae_lib  # pylint: disable=g-import-not-at-top
  from vidgen.parallel import multihost  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import loop, vae  # pylint: disable=g-import-not-at-top

  index, count = jax.process_index(), jax.process_count()
  task = vae.make_task(config)
  s, params, step = loop.restore_for_inference(config, task, vae_dir)
  model = vae_lib.vae_from_config(config.vae)
  encode = vae.host_encoder(s, model)
  pipeline.ensure_tokenizer(config)
  data = pipeline.dataset_from_config(config, split, train=False, num_workers=0,
                                      process_index=index, process_count=count)
  writer = latents.LatentWriter(out, index, count)
  limit = None if num is None else -(-num // count)  # this process's share
  start = time.time()
  for local in data:
    mean, logvar = encode(params, local["video"])
    for i in range(len(mean)):
      if limit is not None and writer.count >= limit:
        break
      _, t, h, w, _ = local["video"].shape
      record = {"mean": mean[i], "logvar": logvar[i], "tokens": local["tokens"][i],
                "token_mask": local["token_mask"][i], "key": local["key"][i],
                "frames": t, "height": h, "width": w}
      record.update({k: v[i] for k, v in local.items() if k.startswith("gt_")})
      writer.add(record)
    if limit is not None and writer.count >= limit:
      break
  writer.close()
  stats = dict(writer.stats(), count=writer.count)
  logging.info("encoded %d clips of %r in %.1fs into %s", writer.count, split,
               time.time() - start, writer.path)
  shard_stats = multihost.gather_over_processes(stats)
  info = {"vae": os.path.abspath(vae_dir), "vae_step": int(step), "split": split,
          "time_factor": vae_lib.time_factor(model), "space_factor": vae_lib.space_factor(model),
          "latent_channels": int(config.vae.latent_channels), "source": config.data.source}
  meta = latents.write_metadata(out, info, shard_stats) if index == 0 else info
  return meta


def write_prompts(config, split: str, out: str, num: int) -> int:
  """Writes up to `num` distinct captions of `split` to the file `out`; returns how many."""
  seen: dict[str, None] = {}
  for caption in pipeline.tokenizer_captions(config, split, 50 * num):
    seen.setdefault(caption, None)
    if len(seen) == num:
      break
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    f.writelines(c + "\n" for c in seen)
  return len(seen)


def main(config, workdir: str | None) -> None:
  modes = [m.strip() for m in _MODE.value.split(",") if m.strip()]
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    raise UsageError(f"unknown --mode {unknown}; known: {MODES}")
  split = _SPLIT.value or config.data.eval_split
  if "build" in modes:
    build(config)
  if "tokenizer" in modes:
    print(f"tokenizer: {pipeline.train_tokenizer(config)}")
  if "export" in modes:
    if not _OUT.value:
      raise UsageError("--mode=export needs --out=DIR")
    n = export(config, split, _OUT.value, _NUM.value)
    print(f"exported {n} clips of split {split!r} to {_OUT.value}")
  if "sheet" in modes:
    if not workdir:
      raise UsageError("--mode=sheet needs --workdir")
    print(f"contact sheet: {sheet(config, split, workdir, _NUM.value)}")
    print(f"clips: {os.path.join(workdir, 'clips')}")
  if "latents" in modes:
    if "vae" not in config:
      raise UsageError("--mode=latents needs a config with a `vae` section "
                       "(e.g. configs/shapes/vae.py)")
    vae_dir = _VAE.value or config.vae.checkpoint
    if not vae_dir:
      raise UsageError("--mode=latents needs --vae=DIR (a trained VAE workdir) or vae.checkpoint")
    out = _OUT.value or os.path.join(config.data.data_dir, "latents", split)
    num = _NUM.value if flags.FLAGS["num"].present else None
    if num is None and config.data.source.partition(":")[0] == "shapes":
      num = int(config.data.build_sizes[split])  # on-demand Moving Shapes never ends
    meta = encode_latents(config, split, out, vae_dir, num)
    print(f"latents of {split!r}: {out} ({json.dumps(meta)})")
  if "prompts" in modes:
    if not _OUT.value:
      raise UsageError("--mode=prompts needs --out=FILE")
    n = write_prompts(config, split, _OUT.value, _NUM.value)
    print(f"wrote {n} prompts of split {split!r} to {_OUT.value}")


if __name__ == "__main__":
  app.run(main, workdir_required=False)
