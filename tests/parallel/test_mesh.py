"""Mesh sizing and the logical-axis rules tables."""

import jax
import pytest
from flax import linen as nn

from vidgen import configlib
from vidgen.parallel import axes, mesh, rules


@pytest.mark.parametrize("family", sorted(rules.FAMILIES))
def test_every_logical_name_has_exactly_one_rule(family):
  table = rules.get(family)
  names = [name for name, _ in table]
  assert sorted(names) == sorted(axes.ALL)
  for _, target in table:
    targets = target if isinstance(target, tuple) else (target,)
    assert all(t is None or t in axes.MESH_AXES for t in targets)


def test_unknown_family_names_the_known_ones():
  with pytest.raises(ValueError, match="vae"):
    rules.get("nope")


@pytest.mark.parametrize("sizes,n,want", [
    (dict(data=-1, fsdp=1, tensor=1, context=1), 8, (8, 1, 1, 1)),
    (dict(data=2, fsdp=-1, tensor=1, context=1), 8, (2, 4, 1, 1)),
    (dict(data=1, fsdp=2, tensor=2, context=2), 8, (1, 2, 2, 2)),
])
def test_mesh_shape_fills_the_free_axis(sizes, n, want):
  assert mesh.mesh_shape(configlib.ConfigDict(sizes), n) == want


@pytest.mark.parametrize("sizes,n,match", [
    (dict(data=-1, fsdp=-1, tensor=1, context=1), 8, "at most one"),
    (dict(data=-1, fsdp=3, tensor=1, context=1), 8, "do not divide"),
    (dict(data=2, fsdp=2, tensor=1, context=1), 8, "needs 4 devices"),
])
def test_bad_mesh_sizes_fail_clearly(sizes, n, match):
  with pytest.raises(ValueError, match=match):
    mesh.mesh_shape(configlib.ConfigDict(sizes), n)


def test_make_mesh_on_this_host_and_batch_sharding():
  m = mesh.make_mesh(configlib.mesh_config())
  assert m.axis_names == axes.MESH_AXES and m.size == jax.device_count()
  s = mesh.batch_sharding(m, rules.VAE, 5)
  assert s.spec[0] == ("data", "fsdp") and all(p is None for p in s.spec[1:])
  assert nn.logical_to_mesh_axes((axes.CONV_IN, axes.CONV_OUT), rules.VAE)[1] == "fsdp"
