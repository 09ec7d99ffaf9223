"""Stage 2 on Moving Shapes: the Video DiT and text encoder on the shapes VAE's latents.

    python -m vidgen.train --config=configs/shapes/vae.py --workdir=out/vae
    python -m vidgen.prepare --config=configs/shapes/dit.py:vae=out/vae --mode=latents \
        --split=train --num=4000 --out=out/latents/train
    python -m vidgen.prepare --config=configs/shapes/dit.py:vae=out/vae --mode=latents \
        --split=test --num=256 --out=out/latents/test
    python -m vidgen.train --config=configs/shapes/dit.py:vae=out/vae,latents=out/latents \
        --workdir=out/dit

Two buckets of different aspect ratio and duration, so the variable-shape path
trains for real: 17x64x64 clips (latents 5x8x8, 80 tokens with 1x2x2 patches)
and 9x48x80 clips (latents 3x6x10, 45 tokens). The VAE section is the one of
configs/shapes/vae.py (it must match the checkpoint). Without `latents` the
frozen VAE encodes every batch on the fly (slower on a CPU).

Arguments: `vae` (the trained VAE workdir), `latents` (a folder holding
`train/` and `test/` latents from `prepare --mode=latents`; empty: encode on
the fly), `variant` (configlib.VARIANTS), `steps`, `minutes` (wall-clock
budget; 0: none), `smoke` (tiny model and data for tests), `workers`.
"""

import os

from vidgen import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, vae="", latents="", variant="mini", steps=6_000, minutes=0.0,
                            smoke=False, workers=1)
  here = os.path.dirname(os.path.abspath(__file__))
  vae_spec = os.path.join(here, "vae.py") + (":smoke" if arg.smoke else "")
  config = configlib.load(vae_spec)
  config.unlock()
  config.task = "dit"
  config.dit = configlib.dit_config()
  config.diffusion = configlib.diffusion_config()
  config.vae.checkpoint = arg.vae

  d = config.data
  d.shapes.train_num_objects = 0  # the VAE trained on two-object clips; captions here have one
  d.buckets = "17x64x64:8@3,9x48x80:8@1"
  d.num_workers = arg.workers

  t = config.text
  t.encoder.width = 128
  t.encoder.depth = 2

  m = config.dit
  m.variant = arg.variant
  m.max_frames, m.max_height, m.max_width = 16, 8, 8  # patch units: 16 latent frames, 128x128
  # Every frame sees every other in temporal attention: the frames of a clip
  # agree on one trajectory (demo5 latents, 20 minutes each, 96 test prompts:
  # videos with a > 5 px jump between frames 28 -> 4, motion 66% -> 98%).
  m.temporal = "full"
  m.rope = True  # relative positions in attention: eval loss 0.101 against 0.112 at 9,900 steps
  if arg.latents:
    m.latents = os.path.join(arg.latents, "train")
    m.eval_latents = os.path.join(arg.latents, "test")

  f = config.diffusion
  f.kind = "flow"
  f.caption_dropout = 0.1
  # Train (and sample) far towards noise, where a clip's layout and motion are
  # decided: 204 prompts, 20 minutes each, motion 25% (shift 1) -> 58% (3) -> 66% (6).
  f.flow.shift = 6.0
  f.sample.shift = 6.0
  f.sample.steps = 30
  f.sample.cfg = 3.0

  o = config.optim
  o.lr = 1e-3
  o.warmup_steps = 200
  o.schedule = "cosine"
  o.end_lr_factor = 0.05
  o.ema_decay = 0.999

  tr = config.train
  tr.steps = arg.steps
  tr.time_limit_minutes = arg.minutes
  tr.log_every = 100
  tr.picture_every = 2_000
  tr.eval_every = 2_000
  tr.eval_batches = 8
  tr.checkpoint_every = 1_000

  if arg.smoke:
    d.buckets = "5x32x32:4@2,5x16x48:4@1"  # latents 2x4x4 and 2x2x6 with the smoke VAE
    t.encoder.width = 32
    t.encoder.depth = 1
    t.encoder.heads = 2
    m.variant = "tiny" if arg.variant == "mini" else arg.variant
    f.sample.steps = 2
    o.warmup_steps = 2
    o.ema_decay = 0.9
    tr.steps = arg.steps if arg.steps != 6_000 else 4
    tr.log_every = 2
    tr.picture_every = 4
    tr.eval_every = 0
    tr.eval_batches = 1
    tr.checkpoint_every = 2
  config.lock()
  return config
