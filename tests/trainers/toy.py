"""A toy Task (a per-pixel autoencoder) for testing the trainer's mechanics fast.

Also a runner: `python tests/trainers/toy.py --config=... --workdir=W [--nan_at=2,3]
[--width=8]` trains it through `vidgen.app` (so multi-process flags work) and
prints one JSON line with the per-step losses read back from W/metrics.jsonl.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vidgen.parallel import axes
from vidgen.parallel import rules as rules_lib
from vidgen.trainers import loop


class PixelAutoencoder(nn.Module):
  """Attributes: width: hidden channels."""

  width: int = 8

  @nn.compact
  def __call__(self, x):  # (B, T, H, W, 3) -> same
    init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), (axes.CONV_IN, axes.CONV_OUT))
    h = nn.Dense(self.width, kernel_init=init, name="enc")(x)
    h = nn.silu(h)
    return nn.Dense(3, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (axes.CONV_IN, None)), name="dec")(h)


def _grads(params, batch, rng, step, *, model, nan_at):
  x = batch["video"].astype(jnp.float32) / 127.5 - 1.0

  def loss_fn(p):
    noise = 0.01 * jax.random.normal(rng, x.shape)
    y = model.apply({"params": p}, x + noise)
    loss = jnp.mean(jnp.square(y - x))
    bad = jnp.isin(step, jnp.asarray(nan_at or (-1,), jnp.int32))
    return jnp.where(bad, jnp.nan, loss)

  loss, g = jax.value_and_grad(loss_fn)(params)
  # A checksum of the batch: equal checksums step by step mean equal data streams.
  checksum = jnp.sum(batch["video"].astype(jnp.float32) * jnp.arange(1, x.shape[0] + 1)[
      :, None, None, None, None]) / 1e6
  return g, dict(loss=loss, batch_checksum=checksum)


def _evaluate(params, batch, rng, *, model):
  x = batch["video"].astype(jnp.float32) / 127.5 - 1.0
  y = model.apply({"params": params}, x)
  return dict(mse=jnp.sum(jnp.mean(jnp.square(y - x), axis=(1, 2, 3, 4))),
              count=jnp.asarray(x.shape[0], jnp.float32))


def make_task(width: int = 8, nan_at: tuple[int, ...] = ()) -> loop.Task:
  model = PixelAutoencoder(width)

  def init(rng):
    return model.init(rng, jnp.zeros((1, 1, 4, 4, 3)))["params"]

  def pictures(params, batch, rng):
    return {"frames": np.asarray(batch["video"][0, 0])}

  return loop.Task(
      name="toy", rules=rules_lib.VAE, batch_keys=("video",), init=init,
      grads=functools.partial(_grads, model=model, nan_at=tuple(nan_at)),
      evaluate=functools.partial(_evaluate, model=model), pictures=pictures)


def read_metrics(workdir: str, split: str = "train") -> dict[int, dict]:
  out = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    for line in open(path):
      m = json.loads(line)
      if m["split"] == split:
        out[m["step"]] = m
  return out


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidgen import app  # pylint: disable=g-import-not-at-top

  nan_flag = flags.DEFINE_string("nan_at", "", "steps whose loss is NaN")
  width_flag = flags.DEFINE_integer("width", 8, "hidden width")

  def main(config, workdir):
    nan_at = tuple(int(v) for v in nan_flag.value.split(",") if v)
    try:
      result = loop.train(config, workdir, make_task(width_flag.value, nan_at))
    except Exception as e:  # pylint: disable=broad-except
      print(json.dumps({"error": type(e).__name__, "message": str(e)}), flush=True)
      sys.exit(3)
    print(json.dumps({"step": result.step, "stopped_early": result.stopped_early,
                      "skipped": result.skipped, "process": jax.process_index(),
                      "devices": jax.device_count()}), flush=True)

  app.run(main)
