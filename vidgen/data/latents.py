"""Cached VAE latents for stage 2: array_record shards written by `prepare --mode=latents`.

A latents folder holds
  part-<i>-of-<n>.array_record   one shard per writing process; one record per
                                 clip, msgpack of {mean, logvar (T', H', W', C)
                                 float16/float32, tokens, token_mask, caption,
                                 key, frames, height, width, gt_* when known}
  metadata.json                  the VAE it came from (folder, step, time and
                                 space factors, latent channels), the records
                                 per shard, and latent statistics (mean and
                                 std of the posterior means) for normalising
                                 latents in stage 2.
`LatentRecords` reads a folder back with random access (a Grain data source).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
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
    self._sum = 0.0
    self._sq = 0.0
    self._n = 0

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
    self._sum += float(mean.sum())
    self._sq += float(np.square(mean).sum())
    self._n += mean.size
    self._writer.write(serialization.msgpack_serialize(out))
    self.count += 1

  def stats(self) -> dict[str, float]:
    return {"sum": self._sum, "sum_sq": self._sq, "n": self._n}

  def close(self) -> None:
    self._writer.close()


def write_metadata(folder: str, info: Mapping[str, Any], shard_stats: list[dict]) -> dict:
  """Combines the shards' statistics into metadata.json."""
  n = sum(s["n"] for s in shard_stats)
  total = sum(s["sum"] for s in shard_stats)
  sq = sum(s["sum_sq"] for s in shard_stats)
  mean = total / max(n, 1)
  std = float(np.sqrt(max(sq / max(n, 1) - mean * mean, 0.0)))
  meta = dict(info, records=[int(s["count"]) for s in shard_stats],
              latent_mean=mean, latent_std=std)
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

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} of {len(self)}")
    shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
    raw = self._readers[shard].read([index - int(self._offsets[shard])])[0]
    return serialization.msgpack_restore(raw)

  def __getstate__(self):
    return {"folder": self.folder}

  def __setstate__(self, state):
    self.__init__(state["folder"])
