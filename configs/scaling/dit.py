"""Stage 2 at scale: one Video DiT variant at one clip size, for a scaling study.

    python -m vidgen.train --config=configs/scaling/dit.py:variant=L/2,steps=20000 \
        --workdir=out/scaling/L2 --config.vae.checkpoint=out/vae \
        --config.data.source=folder_records:data/clips

Arguments (all optional):
  variant  configlib.VARIANTS name and patch: `B/2` (1x2x2 patches), `S/2x2x2`, `XL/2`, ...
  frames, height, width  the VIDEO clip in frames and pixels (what `data.buckets`
           holds), not latents: frames = 1 + k * 4 and height, width multiples of
           8 * the patch for the default VAE (time x4, space x8). 61x256x256 is
           16x32x32 latents, a 16x16x16 patch grid (4,096 tokens) at patch 1x2x2.
  batch    global clips per step.
  steps    the schedule's length.
  remat    none | full | dots (dit.remat; pick it with bench.flops, below).
  source   data.source (shapes renders Moving Shapes at the requested size; a real
           study uses folder_records:DIR or tfds:NAME).
  smoke    a tiny model, VAE and data (32x32 clips of 2 * pt latent frames: 5 frames at
           patch 1x2x2; batch 2, 4 steps) for tests; replaces frames, height, width,
           batch and steps and uses the `tiny` sizes with the variant's patch.

The DiT's position tables (`dit.max_frames / max_height / max_width`) are the
requested clip's patch grid; the VAE is the default one (train it first with
stage 1 and point `vae.checkpoint` at it, or cache latents with `vidgen.prepare
--mode=latents` and set `dit.latents`).

Planning a study with `vidgen.bench.flops` (analytic, prints one JSON line per
variant in about 10 s on a CPU; its sizes are LATENTS: frames (F - 1) / 4 + 1,
height H / 8, width W / 8 for a F x H x W video):

    python -m vidgen.bench.flops --variants=S,B,L,XL --patch=1x2x2 \
        --frames=16 --height=32 --width=32 --batch=64 --dtype=bfloat16 --remat=none

  1. Compute. `train_flops_per_step` (3 x forward matmul FLOPs, plus the
     recomputation remat adds) for each variant at this batch. For a budget of
     C FLOPs, steps = C / train_flops_per_step; clips seen = steps * batch;
     tokens seen = clips * tokens_per_clip. An iso-FLOP study fixes C and
     trains each variant for its own number of steps (`steps=...`); a
     fixed-data study fixes steps and compares C.
  2. Time. At a model-FLOPs utilisation u on n chips of peak F FLOP/s, a step
     takes train_flops_per_step / (u * n * F) seconds (measure u with
     bench.train_step, which uses the same analytic FLOPs).
  3. Memory. Per chip: `activation_memory_bytes_estimate` / (chips sharing the
     batch) plus params * (4 param + 4 grad + 8 Adam, + 4 with EMA) bytes /
     (fsdp shards). When activations do not fit, rerun with `--remat=dots` (keeps
     the matmul outputs, recomputes attention: +1-3% FLOPs for S to XL at 4,096
     tokens) or `--remat=full` (keeps each block's input: +33%), then set
     `remat=` here and `--config.mesh.fsdp=...` to shard the weights.
  4. Check the analytic figures against XLA with `--xla_check --xla_train`
     (compiles depth 1 and 2 at the real width and grid from abstract shapes
     and extrapolates; analytic / XLA is 0.98-0.99 for S to XL: XLA also counts
     norms, softmax and GELU).
"""

import math

from vidgen import configlib


def _compression(vae) -> tuple[int, int, int]:
  """(time, height, width) factors of the VAE `vae` describes."""
  return (int(vae.patch[0]) * math.prod(int(d[0]) for d in vae.down),
          int(vae.patch[1]) * math.prod(int(d[1]) for d in vae.down),
          int(vae.patch[2]) * math.prod(int(d[1]) for d in vae.down))


def latent_grid(frames: int, height: int, width: int, vae, patch) -> tuple[int, int, int]:
  """A F x H x W video -> the DiT's (T', H', W') patch grid; ConfigError naming a bad size."""
  ft, fh, fw = _compression(vae)
  if frames < 1 or (frames - 1) % ft:
    raise configlib.ConfigError(
        f"config argument 'frames' = {frames}: the causal VAE takes 1 + k * {ft} frames")
  latents = ((frames - 1) // ft + 1, height // fh, width // fw)
  for name, size, latent, factor, p in (("frames", frames, latents[0], ft, patch[0]),
                                        ("height", height, latents[1], fh, patch[1]),
                                        ("width", width, latents[2], fw, patch[2])):
    if name != "frames" and size % factor:
      raise configlib.ConfigError(
          f"config argument {name!r} = {size}: not a multiple of the VAE's {factor}x")
    if latent < 1 or latent % p:
      raise configlib.ConfigError(
          f"config argument {name!r} = {size}: {latent} latent {name} do not divide into "
          f"patches of {p} (patch {'x'.join(map(str, patch))})")
  return latents[0] // patch[0], latents[1] // patch[1], latents[2] // patch[2]


def get_config(arg=None):
  arg = configlib.parse_arg(arg, variant="B/2", frames=61, height=256, width=256, batch=64,
                            steps=100_000, remat="none", source="shapes", smoke=False)
  _, patch = configlib.parse_variant(arg.variant)  # ConfigError naming a bad variant
  frames, height, width, batch, steps = arg.frames, arg.height, arg.width, arg.batch, arg.steps
  variant = arg.variant
  if arg.smoke:
    frames, height, width, batch, steps = 1 + 4 * (2 * patch[0] - 1), 32, 32, 2, 4
    variant = "tiny/" + "x".join(map(str, patch))

  config = configlib.base_config()
  config.task = "dit"
  config.mesh = configlib.mesh_config()
  config.optim = configlib.optim_config()
  config.train = configlib.train_config()
  config.vae = configlib.vae_config()
  config.dit = configlib.dit_config()
  config.diffusion = configlib.diffusion_config()

  v = config.vae
  if arg.smoke:
    v.channels = (8, 16, 16)
    v.latent_channels = 4
    v.groups = 4
    v.transformer = dict(layers=1, heads=2, window=2, mlp_ratio=2.0)
  grid = latent_grid(frames, height, width, v, patch)

  d = config.data
  d.source = arg.source
  d.buckets = f"{frames}x{height}x{width}:{batch}"
  d.shapes.frames = frames
  d.shapes.height = height
  d.shapes.width = width
  if arg.smoke:
    d.sizes = dict(train=64, test=16, holdout=16)
    d.num_workers = 0
    config.text.train_captions = 2_000

  m = config.dit
  m.variant = variant
  m.max_frames, m.max_height, m.max_width = grid
  m.dtype = "float32" if arg.smoke else "bfloat16"  # compute; params stay float32
  m.param_dtype = "float32"
  m.remat = arg.remat
  m.scan_layers = not arg.smoke  # one compiled block: compile time independent of depth

  o = config.optim
  o.lr = 1e-4
  o.warmup_steps = 2 if arg.smoke else 1_000
  o.schedule = "cosine"
  o.end_lr_factor = 0.1
  o.weight_decay = 0.0
  o.clip_norm = 1.0

  t = config.train
  t.steps = steps
  # No windowed einsums (XLA's collective matmuls) for the fsdp all-gathers of
  # weights: they split each matmul over the contraction into fsdp steps that
  # re-read and re-write the whole activation-sized output, where a video DiT's
  # weights (10 MB a matrix at XL) are far smaller than its activations. For
  # XL/2 on v5p-32 (configs/scaling/pods.py) vidgen.aot counts 0.97 TB of HBM
  # traffic a step with them, 0.40 TB without (docs/scaling.md).
  t.tpu_compiler_options = "xla_jf_spmd_threshold_for_windowed_einsum_mib=1000000"
  if arg.smoke:
    t.log_every, t.picture_every, t.eval_every, t.eval_batches, t.checkpoint_every = 2, 2, 0, 1, 2
  else:
    t.log_every, t.picture_every, t.eval_every, t.checkpoint_every = 100, 5_000, 5_000, 5_000
  return config
