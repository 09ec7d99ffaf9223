"""The device mesh `('data', 'fsdp', 'tensor', 'context')` and shardings on it.

Sizes come from the config's `mesh` section; one axis may be -1 and takes
the devices left over. On TPU/GPU `mesh_utils.create_device_mesh` orders the
devices so the innermost axes (tensor, context) ride the fastest links.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vidgen.parallel import axes
from vidgen.parallel import rules as rules_lib


def mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, ...]:
  """Resolves `mesh.{data,fsdp,tensor,context}` (one may be -1) for `num_devices`."""
  sizes = [int(mesh_config[a]) for a in axes.MESH_AXES]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(axes.MESH_AXES, sizes))}")
  fixed = math.prod(s for s in sizes if s != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(
          f"mesh: {num_devices} devices do not divide by the fixed axes "
          f"{dict(zip(axes.MESH_AXES, sizes))} (product {fixed})")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"mesh {dict(zip(axes.MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
        f"the job has {num_devices}")
  return tuple(sizes)


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.array(devices).reshape(shape)  # CPU and unknown topologies
  return Mesh(grid, axes.MESH_AXES)


def logical_sharding(mesh: Mesh, rules: rules_lib.Rules, *names: str | None) -> NamedSharding:
  """The NamedSharding of an array whose dimensions carry logical `names`."""
  spec = nn.logical_to_mesh_axes(names, rules)
  return NamedSharding(mesh, spec)


def tree_shardings(mesh: Mesh, rules: rules_lib.Rules, logical_specs: Any,
                   shapes: Any = None) -> Any:
  """Logical PartitionSpecs (from `nn.get_partition_spec`) -> NamedShardings.

  With `shapes` (a matching tree of arrays or ShapeDtypeStructs), a dimension
  whose size its mesh axes do not divide (a 12-channel conv on fsdp 16) is
  replicated instead, and logged: jit cannot place an array split unevenly.
  """
  shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, rules)
  if shapes is None:
    return shardings

  def fit(path, shape, sharding):
    spec = tuple(sharding.spec) + (None,) * (len(shape.shape) - len(sharding.spec))
    kept = tuple(ax if size % axis_size(mesh, ax) == 0 else None
                 for size, ax in zip(shape.shape, spec))
    if kept == spec:
      return sharding
    logging.info("%s %s: replicated where %s does not divide it", jax.tree_util.keystr(path),
                 tuple(shape.shape), P(*spec))
    return NamedSharding(mesh, P(*kept), memory_kind=sharding.memory_kind)

  return jax.tree_util.tree_map_with_path(fit, shapes, shardings)


def axis_size(mesh: Mesh, axis: str | tuple[str, ...] | None) -> int:
  """Devices along a PartitionSpec entry (None: 1)."""
  if axis is None:
    return 1
  return math.prod(int(mesh.shape[a]) for a in (axis if isinstance(axis, tuple) else (axis,)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, rules: rules_lib.Rules, ndim: int) -> NamedSharding:
  """Leading axis over the batch mesh axes, the rest unsharded."""
  return logical_sharding(mesh, rules, axes.BATCH, *([None] * (ndim - 1)))


@contextlib.contextmanager
def activate(mesh: Mesh, rules: rules_lib.Rules):
  """Mesh and logical-axis rules in scope, so activation constraints resolve while tracing."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield
