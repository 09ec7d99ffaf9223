"""The video-caption model on Moving Shapes: clips -> their captions.

    python -m vidgen.train --config=configs/shapes/captioner.py --workdir=out/captioner
    python -m vidgen.evaluate --config=configs/shapes/captioner.py --workdir=out/captioner \
        --split=test        # and --split=holdout

Pixels in by default: 16-frame 64x64 clips (and 8-frame 48x80 ones) cut into
4x16x16 tubelets (64 and 30 video tokens), a 2-block encoder and a 2-block
decoder of width 128, the luma_chroma stem (each tubelet's outline from the
colour-blind max(R, G, B), its colour from one chroma vector) and half the
decoder's input tokens dropped in training (word dropout);
16,000 steps take about 17 minutes here. `input=latents`
reads the posterior means of the frozen VAE of `vae` instead (clips of
1 + 4k frames then; 1x2x2 tubelets; the patch stem with no value channel).
The held-out compositions of configs/shapes/data.py never reach training, so
the holdout split measures composition.

Arguments: `minutes` (wall-clock budget; 0: none), `steps`, `input` (pixels
| latents), `vae` (a VAE workdir for latents), `smoke` (tiny, for tests),
`workers`.
"""

import os

from vidgen import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, minutes=0.0, steps=16_000, input="pixels", vae="", smoke=False,
                            workers=1)
  config = configlib.base_config()
  config.task = "captioner"
  config.mesh = configlib.mesh_config()
  config.optim = configlib.optim_config()
  config.train = configlib.train_config()
  config.vae = configlib.vae_config()
  config.captioner = configlib.captioner_config()

  d = config.data
  d.source = "shapes"
  d.data_dir = "data/shapes"
  d.shapes.num_objects = 1
  d.shapes.holdout = (("red", "triangle"), ("cyan", "circle"))  # as configs/shapes/data.py
  d.buckets = "16x64x64:16@3,8x48x80:16@1"
  d.num_workers = arg.workers
  config.text.max_len = 16  # captions are about 8 tokens; decoding runs max_len steps

  c = config.captioner
  c.input = arg.input
  c.patch = (4, 16, 16)
  c.max_frames, c.max_height, c.max_width = 16, 8, 8
  c.width, c.depth, c.decoder_depth, c.heads = 128, 2, 2, 4
  c.token_dropout = 0.5  # word dropout: held-out pairs 2.5% -> 25% exact (docs/benchmarks.md)
  # Outline from max(R, G, B) alone, colour as one chroma vector per tubelet:
  # held-out pairs 53% (RGB + value channel) -> 97.5% exact, test 100% (docs/benchmarks.md).
  c.stem = "luma_chroma"
  o = config.optim
  o.lr = 1e-3
  o.warmup_steps = 200
  o.schedule = "cosine"
  o.end_lr_factor = 0.05

  t = config.train
  t.steps = arg.steps
  t.time_limit_minutes = arg.minutes
  t.log_every = 100
  t.picture_every = 1_000
  t.eval_every = 1_000
  t.eval_batches = 4
  t.checkpoint_every = 1_000

  if arg.smoke:
    d.sizes = dict(train=64, test=16, holdout=16)
    d.buckets = "8x32x32:4@2,4x32x48:4@1"
    config.text.train_captions = 2_000
    c.patch = (2, 8, 8)
    c.width, c.depth, c.decoder_depth, c.heads = 32, 1, 1, 2
    o.warmup_steps = 2
    t.steps = arg.steps if arg.steps != 16_000 else 4
    t.log_every = 2
    t.picture_every = 2
    t.eval_every = 2
    t.eval_batches = 1
    t.checkpoint_every = 2
  if arg.input == "latents":
    here = os.path.dirname(os.path.abspath(__file__))
    stage1 = configlib.load(os.path.join(here, "vae.py") + (":smoke" if arg.smoke else ""))
    stage1.unlock()
    config.vae = stage1.vae  # the VAE it reads must be built as it was trained
    config.vae.checkpoint = arg.vae
    d.buckets = ("5x32x32:4@2,5x16x48:4@1" if arg.smoke else
                 "17x64x64:16@3,9x48x80:16@1")
    c.patch = (1, 2, 2)  # latents of 5x8x8 (17x64x64 clips): 80 video tokens
    c.stem = "patch"  # latents have no RGB to split
  return config
