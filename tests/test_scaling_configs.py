"""configs/scaling/dit.py: every variant loads and validates; bad arguments name themselves."""

from __future__ import annotations

import os

import pytest

from vidgen import configlib
from vidgen.bench import flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "scaling", "dit.py")


def _load(arg: str = ""):
  return configlib.load(f"{CONFIG}:{arg}" if arg else CONFIG)


@pytest.mark.parametrize("name", list(configlib.VARIANTS))
@pytest.mark.parametrize("patch", ["2", "2x2x2"])
def test_every_variant_loads_and_validates(name, patch):
  config = _load(f"variant={name}/{patch}")
  assert config.task == "dit"
  assert config.dit.variant == f"{name}/{patch}"
  for section in ("data", "text", "mesh", "optim", "train", "vae", "dit", "diffusion"):
    assert section in config, section
  # 61x256x256 video -> 16x32x32 latents (VAE time x4, space x8) -> the patch grid.
  pt = 2 if patch == "2x2x2" else 1
  assert (config.dit.max_frames, config.dit.max_height, config.dit.max_width) == (16 // pt, 16, 16)
  assert config.data.buckets == "61x256x256:64"


def test_default_and_smoke_load():
  config = _load()
  assert config.dit.variant == "B/2"
  smoke = _load("variant=XL/2x2x2,smoke")
  assert smoke.dit.variant == "tiny/2x2x2"
  assert smoke.train.steps == 4
  t, h, w = (int(x) for x in smoke.data.buckets.split(":")[0].split("x"))
  assert (1 + (t - 1) // 4) % 2 == 0 and (h // 8, w // 8) == (4, 4)


def test_size_arguments_set_the_position_tables():
  config = _load("variant=S/2x2x2,frames=29,height=512,width=384,batch=8,remat=dots")
  assert (config.dit.max_frames, config.dit.max_height, config.dit.max_width) == (4, 32, 24)
  assert config.data.buckets == "29x512x384:8"
  assert config.dit.remat == "dots"


def test_a_wrong_variant_fails_naming_it():
  with pytest.raises(configlib.ConfigError, match="unknown variant 'Q/2'"):
    _load("variant=Q/2")
  with pytest.raises(configlib.ConfigError, match="unknown variant 'S/2x2'"):
    _load("variant=S/2x2")


def test_bad_sizes_and_options_fail_naming_them():
  with pytest.raises(configlib.ConfigError, match="'frames' = 60"):
    _load("frames=60")
  with pytest.raises(configlib.ConfigError, match="'frames' = 17.*patches of 2"):
    _load("variant=S/2x2x2,frames=17")
  with pytest.raises(configlib.ConfigError, match="'height' = 100"):
    _load("height=100")
  with pytest.raises(configlib.ConfigError, match="dit.remat"):
    _load("remat=sometimes")
  with pytest.raises(configlib.ConfigError, match="unknown config argument 'size'"):
    _load("size=3")
  with pytest.raises(configlib.ConfigError, match="'dit.pos_init' = 'fourier'.*sincos or normal"):
    configlib.load(CONFIG, {"dit.pos_init": "fourier"})


def test_bench_flops_counts_the_configs_model():
  """The model the config builds is the one bench.flops counts (scanned, remat'd, bf16)."""
  config = _load("variant=S/2,frames=17,height=128,width=128,remat=full")
  latents = (5, 16, 16)
  assert flops.exact_params(config, latents) == flops.params_analytic(config, latents)
  figures = flops.config_flops(config, latents, batch=64)
  assert figures["tokens_per_clip"] == 5 * 8 * 8
  assert figures["recompute_flops"] > 0 and figures["dtype"] == "bfloat16"


PODS = os.path.join(ROOT, "configs", "scaling", "pods.py")


def _pod_module():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("pods_under_test", PODS)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("pod", list(_pod_module().PODS))
def test_every_pod_config_names_its_topology_and_a_mesh_of_its_chips(pod):
  """The mesh multiplies to the topology's chips and the clip's frames split over context."""
  config = configlib.load(f"{PODS}:pod={pod}")
  chips = 1
  for n in config.topology.split(":")[1].split("x"):
    chips *= int(n)
  mesh = dict(config.mesh)
  assert min(mesh.values()) >= 1
  assert mesh["data"] * mesh["fsdp"] * mesh["tensor"] * mesh["context"] == chips
  assert config.dit.max_frames % mesh["context"] == 0  # latent frames per context shard
  batch = int(config.data.buckets.split(":")[1])
  assert batch % (mesh["data"] * mesh["fsdp"]) == 0
  assert config.dit.latents  # pod configs train on cached latents


def test_pod_parameter_counts_match_their_billing():
  """XL/2 is about 700M parameters, the 720p model 1B+, the 1080p model 3B+ (analytic count)."""
  counts = {}
  for pod in ("xl2-v5p32", "h2-720p-v5p128", "g2-1080p-v5p512"):
    config = configlib.load(f"{PODS}:pod={pod}")
    counts[pod] = flops.params_analytic(config)[0]
  assert 6.5e8 < counts["xl2-v5p32"] < 8e8, counts
  assert counts["h2-720p-v5p128"] > 1e9 and counts["g2-1080p-v5p512"] > 3e9, counts


def test_unknown_pod_names_the_known_ones():
  with pytest.raises(configlib.ConfigError, match="xl2-v5p32"):
    configlib.load(f"{PODS}:pod=nope")
