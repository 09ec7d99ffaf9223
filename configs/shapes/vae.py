"""Stage 1 on Moving Shapes: the causal video VAE (time x4, space x8, 16 channels).

    python -m vidgen.train --config=configs/shapes/vae.py:minutes=20 --workdir=out/vae
    python -m vidgen.evaluate --config=configs/shapes/vae.py --workdir=out/vae \
        --config.data.buckets=17x64x64:8

Trains on 9-frame 64x64 clips (1 + 4k frames: the first frame is encoded
alone) and 64x64 images (one-frame clips) together, with two objects in
every training clip (`data.shapes.train_num_objects`: twice the edges a step,
+1.5 dB test PSNR at 1,500 steps) while the test and holdout splits stay the
one-object data set; being causal and
convolutional, with a temporal window of 3 latent frames, the model
reconstructs clips of any 1 + 4k length (evaluated at 17 frames). Sized for a
2-core CPU: 4x4 pixels folded into channels first and widths (64, 96, 96), so
the convolutions run at 16x16 and 8x8 (docs/benchmarks.md has the speed and
the quality reached in 20 minutes). The held-out compositions of
configs/shapes/data.py are kept out of training here too, so stage 2's
held-out evaluation never sees them through the VAE.

Arguments: `smoke` (a tiny model and data for tests), `minutes` (a wall-clock
budget; 0: none), `steps` (the schedule's length), `disc` (switch the 3D
patch discriminator on), `workers` (Grain worker processes), `noise` (the
largest latent noise the decoder trains on, a fraction of the latents' RMS).
"""

from vidgen import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, smoke=False, minutes=0.0, steps=9_000, disc=False, workers=1,
                            noise=0.0)
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
  d.shapes.train_num_objects = 2  # more edges a step; evaluation splits keep one object
  d.shapes.holdout = (("red", "triangle"), ("cyan", "circle"))  # as configs/shapes/data.py
  d.buckets = "9x64x64:2@3,1x64x64:4@1"  # small batches: more steps in the budget
  d.num_workers = arg.workers

  o = config.optim
  o.lr = 2e-3
  o.warmup_steps = 300
  o.schedule = "cosine"
  o.end_lr_factor = 0.05
  o.clip_norm = 1.0

  t = config.train
  t.steps = arg.steps
  t.time_limit_minutes = arg.minutes
  t.log_every = 200
  t.picture_every = 1_400
  t.eval_every = 1_400
  t.eval_batches = 8
  t.checkpoint_every = 1_400

  v = config.vae
  v.patch = (1, 4, 4)
  v.channels = (64, 96, 96)
  v.down = ((2, 2), (2, 1))  # time 1 * 2 * 2 = 4, space 4 * 2 * 1 = 8
  v.transformer.window = 3
  v.loss.recon = "l2"  # PSNR is an MSE; L1 stalls at all-black for a while on sparse objects
  # noise=0.3: the decoder also reads latents noised by up to 0.3 of their RMS
  # (more robust to a DiT's imprecise latents; no gain in the demo's videos,
  # docs/benchmarks.md, so off by default).
  v.loss.latent_noise = arg.noise
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
    v.patch = (1, 2, 2)
    v.down = ((2, 2), (2, 2))
    t.steps = arg.steps if arg.steps != 9_000 else 4
    t.log_every = 2
    t.picture_every = 2
    t.eval_every = 0
    t.eval_batches = 2
    t.checkpoint_every = 2
  return config
