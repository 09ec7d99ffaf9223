"""python -m vidgen.evaluate --config=configs/shapes/vae.py --workdir=W [--split=test]

Evaluates the trained model of W (its latest checkpoint; `--step` for
another, `--checkpoint` for a checkpoint folder elsewhere) on a whole split
and writes `W/eval/<task>_<split>.json` plus a picture:

  vae   PSNR and SSIM of the reconstructions (posterior mean, uint8 round
        trip), and for Moving Shapes whether each reconstructed object keeps
        its colour, shape, size and motion, read from the pixels and checked
        against the ground truth the data set carries (vidgen.eval.shapes).
        Picture: originals above reconstructions, `<task>_<split>.png`.
        --latent_noise=S decodes the posterior mean plus Gaussian noise of
        S times its RMS (fixed seeds): how well the decoder reads latents as
        imprecise as a diffusion model's (files `..._noise<S>.*`).
  dit   on the cached latents of `dit.eval_latents` (Moving Shapes): whether
        decoded videos show their caption's colour, shape, size and motion
        (vidgen.eval.shapes.check_prompt), for the VAE round trip of the real
        latents (the ceiling), the DiT's one-step x0 estimate from noise
        levels t in --denoise_times (how well it denoises), and full
        sampling from noise with the configured sampler (what users get).
        Picture: reference clips above samples.
  captioner  captions of the split's clips (greedy, or beam search with
        captioner.beams) against the true ones: exact match, and for Moving
        Shapes whether the caption parses and gets each attribute (colour,
        shape, size, motion) right (vidgen.eval.shapes.compare_captions).
        Picture and report: up to 8 clips captioned wrong.
        With --samples=DIR (a vidgen.sample output): the generated videos
        instead, scored against their prompts by the captioner (alignment
        per attribute), for temporal consistency (--chunks parts captioned
        apart) and, for Moving Shapes prompts, from the pixels
        (vidgen.eval.generated); DIR/evaluation/report.md shows the worst.

Prints the report as one JSON line.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import flags, logging

from vidgen import app

_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: data.eval_split).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Workdir or checkpoint folder to load (default: --workdir).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 0, "Stop after this many batches (0: all).")
_SAMPLES = flags.DEFINE_string(
    "samples", None, "captioner: a vidgen.sample output folder to evaluate instead of a split.")
_CHUNKS = flags.DEFINE_integer("chunks", 2, "captioner --samples: parts of each video captioned "
                               "for the temporal consistency check.")
_LATENT_NOISE = flags.DEFINE_float(
    "latent_noise", 0.0, "vae: decode the latents plus noise of this fraction of their RMS.")
_DENOISE_TIMES = flags.DEFINE_list("denoise_times", ["0.3", "0.6", "0.9"],
                                   "dit: noise levels of the one-step x0 check.")


def evaluate_vae(config, directory: str, split: str, step: int | None = None,
                 max_batches: int = 0, latent_noise: float = 0.0
                 ) -> tuple[dict, np.ndarray | None]:
  """(report, side-by-side picture) of the VAE of `directory` on `split`."""
  from vidgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from vidgen.eval import metrics, shapes  # pylint: disable=g-import-not-at-top
  from vidgen.parallel import mesh as mesh_lib, multihost  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import loop, vae  # pylint: disable=g-import-not-at-top

  task = vae.make_task(config)
  s, params, step = loop.restore_for_inference(config, task, directory, step)
  pipeline.ensure_tokenizer(config)
  data = pipeline.dataset_from_config(
      config, split, train=False, num_workers=0,
      process_index=jax.process_index(), process_count=jax.process_count())
  recon_fn = jax.jit(vae.reconstructor(config, latent_noise))
  psnr_fn, ssim_fn = jax.jit(metrics.psnr), jax.jit(metrics.ssim)
  totals: dict[str, float] = {}
  picture = None
  is_shapes = config.data.source.partition(":")[0] in ("shapes", "shapes_records")
  for i, local in enumerate(data):
    if max_batches and i >= max_batches:
      break
    with mesh_lib.activate(s.mesh, s.rules):
      batch = multihost.global_batch(local, s.mesh, s.rules, ("video",))
      rng = jax.random.fold_in(jax.random.key(0), i)
      recon = multihost.host_rows(recon_fn(params, batch["video"], rng))
    video = np.asarray(local["video"])
    n = len(video)
    totals["count"] = totals.get("count", 0) + n
    clip_psnr = np.minimum(np.asarray(psnr_fn(video, recon)), metrics.PSNR_CAP)
    totals["psnr"] = totals.get("psnr", 0.0) + float(clip_psnr.sum())
    totals["ssim"] = totals.get("ssim", 0.0) + float(np.asarray(ssim_fn(video, recon)).sum())
    if is_shapes:
      acc = shapes.attribute_accuracy(recon, local)
      objects = acc["num_objects"]
      totals["objects"] = totals.get("objects", 0) + objects
      for k in ("color", "shape", "size", "motion"):
        totals[f"keeps_{k}"] = totals.get(f"keeps_{k}", 0.0) + acc[k] * objects
      totals["keeps_all"] = totals.get("keeps_all", 0.0) + acc["all"] * n
      if np.isfinite(acc["position_error_px"]):
        totals["position_error_px"] = totals.get("position_error_px", 0.0) + (
            acc["position_error_px"] * objects)
    if picture is None:
      picture = metrics.side_by_side(video, recon, max_clips=6, max_frames=9)
  totals = multihost.sum_over_processes(totals)
  count = totals.pop("count", 0)
  if not count:
    raise ValueError(f"split {split!r} gave no batch (smaller than one batch?)")
  objects = totals.pop("objects", 0)
  report = {"task": "vae", "split": split, "step": int(step), "clips": int(count),
            "psnr": totals.pop("psnr") / count, "ssim": totals.pop("ssim") / count}
  if latent_noise:
    report["latent_noise"] = latent_noise
  if "keeps_all" in totals:
    report["keeps_all"] = totals.pop("keeps_all") / count
  for k, v in sorted(totals.items()):
    report[k] = v / max(objects, 1)
  return report, picture


def evaluate_dit(config, directory: str, step: int | None = None, max_batches: int = 0,
                 denoise_times=(0.3, 0.6, 0.9)) -> tuple[dict, np.ndarray | None]:
  """(report, reference-above-samples picture) of the stage-2 model of `directory`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vidgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from vidgen.eval import metrics, shapes  # pylint: disable=g-import-not-at-top
  from vidgen.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import dit, loop  # pylint: disable=g-import-not-at-top

  if not dit.uses_cached_latents(config):
    raise ValueError("evaluating a DiT needs cached latents: set dit.eval_latents "
                     "(prepare --mode=latents)")
  task = dit.make_task(config, for_inference=True)
  _, params, step = loop.restore_for_inference(config, task, directory, step)
  gen = dit.Generator.from_config(config)
  models = gen.models
  tokenizer = tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config))
  data = dit.data_factory(config, models)(config, train=False)

  @jax.jit
  def one_step(p, z, tokens, mask, noise, t):
    text, tmask = models.encode_text(p, tokens, mask)
    times = jnp.full(z.shape[:2], t, jnp.float32)
    x_t = models.diffusion.noisy(z, noise, times)
    pred = models.dit.apply({"params": p["dit"]}, x_t, times, text, tmask)
    return models.diffusion.predict_x0_eps(x_t, pred, times)[0]

  results: dict[str, list[dict]] = {}
  picture = None
  for i, batch in enumerate(data):
    if max_batches and i >= max_batches:
      break
    prompts = [tokenizer.decode(t) for t in batch["tokens"]]
    tokens, mask = jnp.asarray(batch["tokens"]), jnp.asarray(batch["token_mask"])
    z = dit.normalize_latents(params, jnp.asarray(batch["mean"]))
    rng = jax.random.key(i)
    videos = {"vae_round_trip": np.asarray(gen.decode(params, z))}
    for t in denoise_times:
      noise = jax.random.normal(jax.random.fold_in(rng, int(1000 * t)), z.shape)
      x0 = one_step(params, z, tokens, mask, noise, float(t))
      videos[f"denoise_t{t:g}"] = np.asarray(gen.decode(params, x0))
    noise = jax.random.normal(rng, z.shape)
    videos["samples"] = np.asarray(gen.decode(params, gen.latents(params, tokens, mask, noise)))
    for name, clips in videos.items():
      results.setdefault(name, []).extend(
          shapes.check_prompt(v, p) for v, p in zip(clips, prompts))
    if picture is None:
      picture = metrics.side_by_side(videos["vae_round_trip"], videos["samples"])
  keys = ("color", "shape", "size", "motion", "count", "all")
  report = {"task": "dit", "step": int(step), "clips": len(results.get("samples", [])),
            "sampler": gen.sampler, "steps": gen.steps, "cfg": gen.cfg}
  for name, rs in results.items():
    report[name] = {k: float(np.mean([r[k] for r in rs])) for k in keys}
  return report, picture


def evaluate_captioner(config, directory: str, split: str, step: int | None = None,
                       max_batches: int = 0) -> tuple[dict, np.ndarray | None]:
  """(report, picture of the worst cases) of the captioner of `directory` on `split`."""
  from vidgen import viz  # pylint: disable=g-import-not-at-top
  from vidgen.data import pipeline  # pylint: disable=g-import-not-at-top
  from vidgen.eval import shapes  # pylint: disable=g-import-not-at-top
  from vidgen.parallel import multihost  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import captioner  # pylint: disable=g-import-not-at-top

  writer, step = captioner.VideoCaptioner.restore(config, directory, step,
                                                   beams=int(config.captioner.beams))
  data = pipeline.dataset_from_config(
      config, split, train=False, num_workers=0,
      process_index=jax.process_index(), process_count=jax.process_count())
  is_shapes = config.data.source.partition(":")[0] in ("shapes", "shapes_records")
  keys = ("exact", "grammatical", "color", "shape", "size", "motion")
  totals = {k: 0.0 for k in keys if is_shapes or k == "exact"}
  count, wrong = 0, []
  for i, local in enumerate(data):
    if max_batches and i >= max_batches:
      break
    videos = np.asarray(local["video"])
    truths = [writer.tokenizer.decode(t) for t in np.asarray(local["tokens"])]
    for video, pred, truth in zip(videos, writer(videos), truths):
      result = (shapes.compare_captions(pred, truth) if is_shapes
                else {"exact": pred.strip() == truth.strip()})
      for k in totals:
        totals[k] += float(result[k])
      if not result["exact"] and len(wrong) < 8:
        wrong.append((video, f"true: {truth} | captioned: {pred}"))
    count += len(videos)
  totals["count"] = count
  totals = multihost.sum_over_processes(totals)
  count = totals.pop("count")
  if not count:
    raise ValueError(f"split {split!r} gave no batch (smaller than one batch?)")
  report = {"task": "captioner", "split": split, "step": int(step), "clips": int(count),
            "beams": writer.beams, **{k: v / count for k, v in totals.items()},
            "worst": [caption for _, caption in wrong]}
  picture = (np.asarray(viz.contact_sheet([v for v, _ in wrong], [c for _, c in wrong]))
             if wrong else None)
  return report, picture


def evaluate_samples(config, directory: str, samples: str, step: int | None = None,
                     chunks: int = 2, batch: int = 16) -> tuple[dict, None]:
  """(report, None) of the generated videos of `samples`, scored with the captioner."""
  from vidgen.data import buckets as buckets_lib  # pylint: disable=g-import-not-at-top
  from vidgen.eval import generated  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import captioner  # pylint: disable=g-import-not-at-top

  writer, step = captioner.VideoCaptioner.restore(config, directory, step,
                                                   beams=int(config.captioner.beams))
  records, videos = generated.load_samples(samples)

  def caption(clips):
    out = []
    for i in range(0, len(clips), batch):
      chunk = clips[i:i + batch]
      padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
      out += writer(padded)[:len(chunk)]
    return out

  shape = buckets_lib.parse_buckets(config.data.buckets)[0].shape
  results = generated.evaluate_videos(videos, [r["prompt"] for r in records], caption, shape,
                                      chunks)
  for r, record in zip(results, records):
    r["file"] = record["file"]
  summary = {"task": "captioner", "samples": os.path.abspath(samples), "step": int(step),
             **generated.summarize(results)}
  out = os.path.join(samples, "evaluation")
  summary["page"] = generated.write_page(out, results, videos, summary)
  with open(os.path.join(out, "videos.jsonl"), "w") as f:
    for r in results:
      f.write(json.dumps(r) + "\n")
  return summary, None


def main(config, workdir):
  split = _SPLIT.value or config.data.eval_split
  directory = _CHECKPOINT.value or (config.vae.checkpoint if config.task == "vae" and
                                    config.vae.checkpoint else workdir)
  if config.task == "vae":
    report, picture = evaluate_vae(config, directory, split, _STEP.value, _MAX_BATCHES.value,
                                   _LATENT_NOISE.value)
  elif config.task == "dit":
    split = "latents"
    report, picture = evaluate_dit(config, directory, _STEP.value, _MAX_BATCHES.value,
                                   tuple(float(t) for t in _DENOISE_TIMES.value))
  elif config.task == "captioner" and _SAMPLES.value:
    split = "samples"
    report, picture = evaluate_samples(config, directory, _SAMPLES.value, _STEP.value,
                                       _CHUNKS.value)
  elif config.task == "captioner":
    report, picture = evaluate_captioner(config, directory, split, _STEP.value,
                                         _MAX_BATCHES.value)
  else:
    raise ValueError(f"vidgen.evaluate does not know config.task={config.task!r} yet")
  if jax.process_index() == 0:
    out = os.path.join(workdir, "eval")
    os.makedirs(out, exist_ok=True)
    name = f"{config.task}_{split}" + (f"_noise{_LATENT_NOISE.value:g}"
                                        if config.task == "vae" and _LATENT_NOISE.value else "")
    with open(os.path.join(out, name + ".json"), "w") as f:
      json.dump(report, f, indent=2)
    if picture is not None:
      from PIL import Image  # pylint: disable=g-import-not-at-top
      Image.fromarray(picture).save(os.path.join(out, name + ".png"))
      report["picture"] = os.path.join(out, name + ".png")
    logging.info("evaluation: %s", report)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
  app.run(main, config_file="eval/config.json")
