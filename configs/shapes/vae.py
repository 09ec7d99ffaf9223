"""Stage 1 on Moving Shapes: the causal video VAE (time x4, space x8, 16 channels).

    python -m vidgen.train --config=configs/shapes/vae.py --workdir=out/vae
    python -m vidgen.evaluate --config=configs/shapes/vae.py --workdir=out/vae

17-frame 64x64 clips (1 + 4k frames: the first frame is encoded alone) and
64x64 images (one-frame clips) train together. Arguments: `smoke` (a tiny
model and data for tests), `minutes` (a wall-clock budget), `steps`,
`disc` (switch the 3D patch discriminator on).
"""

from vidgen import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, smoke=False, minutes=0.0, steps=6_000, disc=False, workers=2)
  config = configlib.base_config()
  config.task = "vae"
  config.mesh = configlib.mesh_config()
  config.optim = configlib.optim_config()
  config.train = configlib.train_config()
  config.vae = configlib.vae_config()

  d = config.data
  d.source = "shapes"
  d.data_dir = "data/shapes"
  d.shapes.num_objects = 1
  d.buckets = "17x64x64:8@3,1x64x64:16@1"
  d.num_workers = arg.workers

  o = config.optim
  o.lr = 1e-3
  o.warmup_steps = 200
  o.schedule = "cosine"
  o.end_lr_factor = 0.05
  o.clip_norm = 1.0

  t = config.train
  t.steps = arg.steps
  t.time_limit_minutes = arg.minutes
  t.log_every = 50
  t.picture_every = 1_000
  t.eval_every = 2_000
  t.eval_batches = 8
  t.checkpoint_every = 1_000

  v = config.vae
  v.disc.enabled = arg.disc
  if arg.smoke:
    d.sizes = dict(train=64, test=16, holdout=16)
    d.buckets = "5x32x32:4@2,1x32x32:4@1"
    config.text.train_captions = 2_000
    v.channels = (8, 16, 16)
    v.latent_channels = 4
    v.groups = 4
    v.transformer = dict(layers=1, heads=2, window=2, mlp_ratio=2.0)
    v.disc.channels = (8, 16, 16)
    v.disc.start_step = 2
    o.warmup_steps = 2
    t.steps = arg.steps if arg.steps != 6_000 else 4
    t.log_every = 2
    t.picture_every = 2
    t.eval_every = 0
    t.eval_batches = 2
    t.checkpoint_every = 2
  return config
