"""Generation goals on a trained Moving Shapes model: i2v fidelity, loop seams, long videos.

    python -m vidgen.bench.generation --config=configs/shapes/dit.py:vae=V,latents=L \
        --config.data.data_dir=DATA --workdir=D [--what=i2v,loop,long] [--num=16]

Quality, not speed: every figure is read from the pixels of videos made by
`vidgen.sample.generate` for the first `--num` test-split compositions
(rendered from the Moving Shapes contract, not read from disk), and printed
as one JSON line per result:

  i2v   {"bench": "i2v", "given_psnr_mean", "given_psnr_min", "accuracy"}:
        frame 0 of each test clip is the given image; PSNR of the output's
        frame 0 against it (the goal: >= 30 dB).
  loop  {"bench": "loop", "median_ratio", "seamless", "ratios"}: the jump
        from the last frame to the first over the median step, per loop of
        --loop_frames frames (32: an object at the contract's speed, 1/32 of
        the canvas a frame, crosses the torus once in 32 steps, so only a
        loop of that length can be seamless without changing speed).
  long  {"bench": "long_video", "scheme", ...accuracy, "every_chunk"}: videos
        of --long_frames frames per scheme, each checked per window-long
        chunk, and a t2v reference at --frames.

Videos go to --out (default WORKDIR/bench_generation); --frames (17) is the
length of the i2v and reference videos; the other flags of
vidgen.sample (sampler, steps, cfg, ...) are not used: settings come from
the config (--config.diffusion.sample.*).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from vidgen import app, sample

FLAGS = flags.FLAGS  # vidgen.sample's --frames (i2v, reference) and --out are used here

_WHAT = flags.DEFINE_list("what", ["i2v", "loop", "long"], "Which goals to measure.")
_NUM = flags.DEFINE_integer("num", 16, "Test compositions (prompts) per measurement.")
_LONG = flags.DEFINE_integer("long_frames", 65, "Frames of the long videos.")
_SCHEMES = flags.DEFINE_list("schemes", ["autoregressive", "long_range", "hierarchical"],
                             "Long-video schemes.")
_SIZE = flags.DEFINE_integer("size", 64, "Height and width.")
_LOOP_FRAMES = flags.DEFINE_integer(
    "loop_frames", 32, "Frames of the loops (a multiple of the VAE's time factor): one "
    "torus period at the contract's speed.")


def _emit(row: dict) -> None:
  print(json.dumps(row), flush=True)


def main(config, workdir):
  from vidgen.data import moving_shapes as ms  # pylint: disable=g-import-not-at-top
  from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
  out = FLAGS.out or os.path.join(workdir, "bench_generation")
  os.makedirs(out, exist_ok=True)
  size, frames = _SIZE.value, FLAGS.frames
  cfg = ms.ShapesConfig(height=size, width=size, frames=frames, num_objects=1)
  examples = [ms.sample_objects(cfg, "test", i) for i in range(_NUM.value)]
  prompts = [ms.caption(o) for o in examples]
  common = dict(height=size, width=size, check_shapes=True, batch=8)
  if "i2v" in _WHAT.value:
    psnrs, acc = [], []
    for i, objects in enumerate(examples):
      image = os.path.join(out, f"first_{i:03d}.png")
      video_io.write_video(image, ms.render(objects, 1, size, size), 8)
      s = sample.generate(config, workdir, [prompts[i]], os.path.join(out, f"i2v_{i:03d}"),
                          frames=frames, mode="i2v", images=[image], seed=i,
                          **dict(common, batch=1))
      psnrs.append(s["given_psnr"])
      acc.append(s["accuracy"]["all"]["all"])
    _emit({"bench": "i2v", "videos": len(psnrs), "given_psnr_mean": float(np.mean(psnrs)),
           "given_psnr_min": float(np.min(psnrs)), "accuracy_all": float(np.mean(acc))})
  if "loop" in _WHAT.value:
    s = sample.generate(config, workdir, prompts, os.path.join(out, "loop"),
                        frames=_LOOP_FRAMES.value, mode="loop", **common)
    with open(os.path.join(out, "loop", "samples.jsonl")) as f:
      ratios = [json.loads(line)["loop"]["ratio"] for line in f]
    _emit({"bench": "loop", **s["loop"], "ratios": [round(r, 3) for r in ratios],
           "accuracy": s["accuracy"]["all"]})
  if "long" in _WHAT.value:
    for scheme in _SCHEMES.value:
      s = sample.generate(config, workdir, prompts, os.path.join(out, f"long_{scheme}"),
                          frames=_LONG.value, scheme=scheme, **common)
      with open(os.path.join(out, f"long_{scheme}", "samples.jsonl")) as f:
        windows = json.loads(f.readline())["windows"][0]
      _emit({"bench": "long_video", "scheme": scheme, "frames": _LONG.value,
             "windows": windows, **s["accuracy"]["all"]})
    s = sample.generate(config, workdir, prompts, os.path.join(out, "reference"), frames=frames,
                        **common)
    _emit({"bench": "long_video", "scheme": "t2v reference", "frames": frames, "windows": 1,
           **s["accuracy"]["all"]})


if __name__ == "__main__":
  app.run(main, config_file="bench_generation/config.json")
