"""Moving Shapes data: build, tokenizer, export and the demo contact sheet.

    python -m vidgen.prepare --config=configs/shapes/data.py --workdir=out/data
    python -m vidgen.prepare --config=configs/shapes/data.py:smoke,objects=2 ...

Arguments: `smoke` (tiny sizes for tests), `objects` (1 or 2 per clip),
`holdout` (pairs kept out of train, `color-shape+color-shape`), `workers`.
"""

from vidgen import configlib


def get_config(arg=None):
  arg = configlib.parse_arg(arg, smoke=False, objects=1,
                            holdout="red-triangle+cyan-circle", workers=2)
  config = configlib.base_config()
  config.task = "prepare"
  d = config.data
  d.source = "shapes"
  d.data_dir = "data/shapes"
  d.shapes.num_objects = arg.objects
  d.shapes.holdout = tuple(
      tuple(pair.split("-")) for pair in arg.holdout.split("+") if pair)
  # Two buckets of different aspect ratio and duration: the variable-shape
  # path is exercised from the start. Moving Shapes renders any shape.
  d.buckets = "16x64x64:8@2,8x48x80:8@1"
  d.sizes = dict(train=100_000, test=256, holdout=256)
  d.num_workers = arg.workers
  if arg.smoke:
    d.sizes = dict(train=64, test=16, holdout=16)
    d.build_sizes = dict(train=64, test=16, holdout=16)
    d.buckets = "8x32x32:4@2,4x32x48:4@1"
    config.text.train_captions = 2_000
  return config
