"""Per-host batches -> global arrays, and small cross-host agreements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import rules as rules_lib


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, rules: rules_lib.Rules,
                 keys: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
  """Each host's slice of the batch (leading axis) -> one global jax.Array per key.

  The global batch is the concatenation of the hosts' batches in process
  order; its leading axis is sharded over the batch mesh axes.
  """
  out = {}
  for k in (keys if keys is not None else local.keys()):
    x = np.asarray(local[k])
    if x.dtype == np.int64:
      x = x.astype(np.int32)
    sharding = mesh_lib.batch_sharding(mesh, rules, x.ndim)
    out[k] = jax.make_array_from_process_local_data(sharding, x)
  return out


def any_process(flag: bool) -> bool:
  """True on every process when `flag` is true on at least one (a collective)."""
  if jax.process_count() == 1:
    return bool(flag)
  flags = multihost_utils.process_allgather(np.array([flag], dtype=np.int32))
  return bool(np.asarray(flags).any())



def host_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array (the inverse of `global_batch`)."""
  if jax.process_count() == 1:
    return np.asarray(array)
  rows = {}
  for shard in array.addressable_shards:
    start = shard.index[0].start or 0
    if start not in rows:  # replicas along other mesh axes hold the same rows
      rows[start] = np.asarray(shard.data)
  return np.concatenate([rows[k] for k in sorted(rows)])


def gather_over_processes(values: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Every process's dict of floats or numpy arrays, in process order (each value keeps its
  shape; one allgather of all values as a single float row, float32 unless x64 is on)."""
  if jax.process_count() == 1:
    return [dict(values)]
  keys = sorted(values)
  shapes = [np.shape(values[k]) for k in keys]
  local = np.concatenate([np.ravel(np.asarray(values[k], np.float64)) for k in keys])
  rows = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, local.size)
  cuts = np.cumsum([int(np.prod(sh)) for sh in shapes])[:-1]
  return [{k: (float(p[0]) if sh == () else p.reshape(sh))
           for k, sh, p in zip(keys, shapes, np.split(row, cuts))} for row in rows]


def sum_over_processes(values: Mapping[str, Any]) -> dict[str, Any]:
  """Sums a dict of floats or numpy arrays over all processes (every process gets the sums)."""
  gathered = gather_over_processes(values)
  return {k: sum(g[k] for g in gathered) for k in values}
