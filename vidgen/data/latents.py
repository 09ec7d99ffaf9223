"""Cached VAE latents for stage 2: array_record shards written by `prepare --mode=latents`.

A latents folder holds
  part-<i>-of-<n>.array_record   one shard per writing process; one record per
                                 clip, msgpack of {mean, logvar (T', H', W', C)
                                 float16/float32, tokens, token_mask, caption,
                                 key, frames, height, width, gt_* when known}
  part-<i>-of-<n>.shapes.json    the latent shape of each record of the shard
                                 (records of several buckets share a folder)
  metadata.json                  the VAE it came from (folder, step, time and
                                 space factors, latent channels), the records
                                 per shard, and latent statistics (mean and
                                 std of the posterior means) for normalising
                                 latents in stage 2.
`LatentRecords` reads a folder back with random access (a Grain data source);
`latent_dataset` turns it into stage 2's batches: one shuffled, repeated
stream per latent shape, batched by its bucket's size and mixed by the
buckets' weights (deterministic and checkpointable, like the video pipeline).
"""

from __future__ import annotations

import glob
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import logging
from array_record.python import array_record_module
from flax import serialization

METADATA = "metadata.json"


def shard_name(index: int, count: int) -> str:
  return f"part-{index:05d}-of-{count:05d}.array_record"


class LatentWriter:
  """Appends clip records to this process's shard and tracks latent statistics."""

  def __init__(self, folder: str, process_index: int = 0, process_count: int = 1,
               dtype: str = "float32"):
    os.makedirs(folder, exist_ok=True)
    self.path = os.path.join(folder, shard_name(process_index, process_count))
    self._writer = array_record_module.ArrayRecordWriter(self.path, "group_size:1")
    self._dtype = np.dtype(dtype)
    self.count = 0
    self._n = 0  # values per channel
    self._channel_sum = 0.0  # (C,) once a record is added
    self._channel_sq = 0.0
    self._shapes: list[str] = []

  def add(self, record: Mapping[str, Any]) -> None:
    out = {}
    for k, v in record.items():
      if k in ("mean", "logvar"):
        v = np.asarray(v, self._dtype)
      elif isinstance(v, str):
        v = v
      else:
        v = np.asarray(v)
      out[k] = v
    mean = np.asarray(record["mean"], np.float64)
    sums = channel_sums(mean)
    self._n += sums["n"]
    self._channel_sum = self._channel_sum + sums["channel_sum"]
    self._channel_sq = self._channel_sq + sums["channel_sum_sq"]
    self._writer.write(serialization.msgpack_serialize(out))
    self._shapes.append(shape_key(mean.shape[:3]))
    self.count += 1

  def stats(self) -> dict[str, Any]:
    """Sums of the posterior means and their squares per channel ((C,)), and values per channel."""
    return {"n": self._n, "channel_sum": np.atleast_1d(self._channel_sum),
            "channel_sum_sq": np.atleast_1d(self._channel_sq)}

  def close(self) -> None:
    self._writer.close()
    with open(self.path.replace(".array_record", ".shapes.json"), "w") as f:
      json.dump(self._shapes, f)


def shape_key(shape) -> str:
  """(T', H', W') -> "T'xH'xW'"."""
  return "x".join(str(int(n)) for n in shape)


def moments(n: float, total, sq) -> tuple[Any, Any]:
  """(mean, std) from a count and sums of values and squares (floats or arrays alike)."""
  mean = np.asarray(total, np.float64) / max(float(n), 1.0)
  std = np.sqrt(np.maximum(np.asarray(sq, np.float64) / max(float(n), 1.0) - mean * mean, 0.0))
  return mean, std


def channel_sums(values) -> dict[str, Any]:
  """(..., C) values -> {"n": values per channel, "channel_sum", "channel_sum_sq": (C,)}."""
  flat = np.asarray(values, np.float64).reshape(-1, np.shape(values)[-1])
  return {"n": flat.shape[0], "channel_sum": flat.sum(0), "channel_sum_sq": np.square(flat).sum(0)}


def combine_moments(shard_stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """`channel_sums` of several shards -> overall (every channel as one population) and
  per-channel mean and std: {latent_mean, latent_std, channel_mean, channel_std}."""
  n = sum(s["n"] for s in shard_stats)  # values per channel
  total = sum(np.asarray(s["channel_sum"], np.float64) for s in shard_stats)
  sq = sum(np.asarray(s["channel_sum_sq"], np.float64) for s in shard_stats)
  cmean, cstd = moments(n, total, sq)
  mean, std = moments(n * len(total), total.sum(), sq.sum())
  return dict(latent_mean=float(mean), latent_std=float(std),
              channel_mean=cmean.tolist(), channel_std=cstd.tolist())


def write_metadata(folder: str, info: Mapping[str, Any], shard_stats: list[dict]) -> dict:
  """Combines the shards' statistics into metadata.json: overall and per-channel mean and std."""
  meta = dict(info, records=[int(s["count"]) for s in shard_stats],
              **combine_moments(shard_stats))
  with open(os.path.join(folder, METADATA), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


class LatentRecords:
  """Random access to a latents folder: `records[i]` -> dict of numpy arrays."""

  def __init__(self, folder: str):
    self.folder = folder
    paths = sorted(glob.glob(os.path.join(folder, "part-*.array_record")))
    if not paths:
      raise FileNotFoundError(f"no latent shards (part-*.array_record) in {folder}")
    meta_path = os.path.join(folder, METADATA)
    self.metadata = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    self._readers = [array_record_module.ArrayRecordReader(p, "readahead_buffer_size:0")
                     for p in paths]
    self._offsets = np.cumsum([0] + [r.num_records() for r in self._readers])
    self._paths = paths

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} of {len(self)}")
    shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
    raw = self._readers[shard].read([index - int(self._offsets[shard])])[0]
    return serialization.msgpack_restore(raw)

  def indices_by_shape(self) -> dict[str, np.ndarray]:
    """Latent shape "T'xH'xW'" -> global indices of the records of that shape."""
    out: dict[str, list[int]] = {}
    for shard, path in enumerate(self._paths):
      side = path.replace(".array_record", ".shapes.json")
      if not os.path.exists(side):
        raise FileNotFoundError(f"{side} is missing; re-run `prepare --mode=latents`")
      for i, key in enumerate(json.load(open(side))):
        out.setdefault(key, []).append(int(self._offsets[shard]) + i)
    return {k: np.asarray(v, np.int64) for k, v in out.items()}

  def __getstate__(self):
    return {"folder": self.folder}

  def __setstate__(self, state):
    self.__init__(state["folder"])


class _Read:
  """index -> the record, with mean/logvar as float32 (picklable for Grain workers)."""

  def __init__(self, records: LatentRecords, indices: np.ndarray):
    self.records = records
    self.indices = indices

  def __call__(self, i: int) -> dict[str, Any]:
    rec = self.records[int(self.indices[i])]
    out = {k: v for k, v in rec.items() if not isinstance(v, str)}
    for k in ("mean", "logvar"):
      out[k] = np.asarray(out[k], np.float32)
    return out


def latent_dataset(folder: str, shapes: Mapping[str, tuple[int, float]], *, seed: int = 0,
                   shuffle: bool = True, num_epochs: int | None = None,
                   process_index: int = 0, process_count: int = 1
                   ) -> grain.IterDataset | Iterable[dict[str, Any]]:
  """Stage 2's batches from a latents folder.

  Args:
    folder: written by `prepare --mode=latents`.
    shapes: latent shape "T'xH'xW'" -> (this host's batch size, weight), one per bucket.
    seed: shuffles and the bucket mix.
    shuffle: shuffle records (a new order every epoch).
    num_epochs: passes over each shape's records; None repeats forever.
    process_index, process_count: this host's shard of every shape's records.

  Returns:
    Training (num_epochs None): an IterDataset of dicts of stacked arrays
    (mean, logvar (B, T', H', W', C), tokens, token_mask, key, gt_*) mixing
    the shapes by weight; `iter()` it for a checkpointable iterator. Every
    shape must have at least a batch of latents on this host.
    A finite pass (evaluation): every shape's batches one shape after
    another; shapes with less than a batch of latents are left out (with a
    warning), and it fails only when none is left.
  """
  records = LatentRecords(folder)
  by_shape = records.indices_by_shape()
  training = num_epochs is None
  streams, weights, missing = [], [], []
  for key, (batch, weight) in shapes.items():
    indices = by_shape.get(key, np.zeros((0,), np.int64))[process_index::process_count]
    if len(indices) < batch:
      missing.append(f"{key}: {len(indices)} latents on this host, a batch is {batch}")
      continue
    ds = grain.MapDataset.range(len(indices))
    if shuffle:
      ds = ds.shuffle(seed=seed + len(streams))
    ds = ds.repeat(num_epochs).map(_Read(records, indices)).batch(batch, drop_remainder=True)
    streams.append(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))
    weights.append(weight)
  if missing and (training or not streams):
    raise ValueError(
        f"too few latents in {folder} ({'; '.join(missing)}; it has shapes "
        f"{', '.join(sorted(by_shape)) or 'none'}): encode them with `prepare --mode=latents` "
        "under the same data.buckets")
  for m in missing:
    logging.warning("evaluating without latents of shape %s", m)
  if len(streams) == 1:
    return streams[0]
  if not training:
    return itertools.chain(*streams)
  return grain.IterDataset.mix(streams, weights)
