import glob
import os

import pytest

from vidgen import configlib
from vidgen.models import dit as dit_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True))


def test_there_are_configs():
  assert any(p.endswith(os.path.join("shapes", "data.py")) for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_config_file_loads_and_validates(path):
  config = configlib.load(path)
  assert config.task in configlib.TASKS
  assert config.is_locked


def test_smoke_argument_is_typed():
  config = configlib.load(os.path.join(ROOT, "configs/shapes/data.py:smoke,objects=2"))
  assert config.data.shapes.num_objects == 2
  assert config.data.build_sizes.train == 64


def test_parse_arg_types_and_bare_flags():
  arg = configlib.parse_arg("n=3,x=0.5,name=B/2,on", n=1, x=1.0, name="S", on=False)
  assert (arg.n, arg.x, arg.name, arg.on) == (3, 0.5, "B/2", True)
  assert isinstance(arg.x, float)


@pytest.mark.parametrize("arg,match", [
    ("bogus=1", "unknown config argument 'bogus'"),
    ("n=three", "'n': expected int"),
    ("on=maybe", "'on': expected a bool"),
    ("n", "'n' needs a value"),
])
def test_parse_arg_rejects_with_the_key(arg, match):
  with pytest.raises(configlib.ConfigError, match=match):
    configlib.parse_arg(arg, n=1, on=False)


@pytest.mark.parametrize("overrides,match", [
    ({"data.nope": 1}, "unknown config key 'data.nope'"),
    ({"data.num_workers": -1}, "'data.num_workers' = -1: must be >= 0"),
    ({"data.buckets": "16x64:8"}, "'data.buckets'.*bad bucket '16x64:8'"),
    ({"data.source": "webdataset:x"}, "'data.source'.*unknown source kind"),
    ({"data.max_bad_fraction": 1.5}, "'data.max_bad_fraction'"),
    ({"data.shapes.holdout": (("pink", "circle"),)}, "'data.shapes.holdout'"),
    ({"data.shapes.num_objects": 3}, "'data.shapes.num_objects' = 3: must be 1 or 2"),
    ({"data.shapes.train_num_objects": 3},
     r"'data.shapes.train_num_objects' = 3: must be 0 \(num_objects\), 1 or 2"),
    ({"data.num_workers": "two"}, "'data.num_workers'"),
])
def test_bad_values_fail_at_load_time_naming_the_key(overrides, match):
  with pytest.raises(configlib.ConfigError, match=match):
    configlib.load(os.path.join(ROOT, "configs/shapes/data.py"), overrides)


def test_unknown_key_inside_a_config_file_is_caught(tmp_path):
  path = tmp_path / "typo.py"
  path.write_text(
      "from vidgen import configlib\n"
      "def get_config(arg=None):\n"
      "  c = configlib.base_config()\n"
      "  c.data.num_wokers = 4\n"
      "  return c\n")
  with pytest.raises(configlib.ConfigError, match="unknown config key 'data.num_wokers'"):
    configlib.load(str(path))


def test_wrong_type_inside_a_config_file_is_caught(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text(
      "from vidgen import configlib\n"
      "def get_config(arg=None):\n"
      "  c = configlib.base_config()\n"
      "  c.text.max_len = 'long'\n"
      "  return c\n")
  with pytest.raises(configlib.ConfigError, match="'max_len'.*cannot be casted"):
    configlib.load(str(path))


@pytest.mark.parametrize("name,width,patch", [
    ("tiny", 64, (1, 2, 2)), ("S/2", 384, (1, 2, 2)), ("B/4", 768, (1, 4, 4)),
    ("L/2x2x2", 1024, (2, 2, 2)), ("XL/2", 1152, (1, 2, 2)),
])
def test_variants_table(name, width, patch):
  variant, got_patch = configlib.parse_variant(name)
  assert variant.width == width and got_patch == patch
  assert variant.width % variant.heads == 0


def test_unknown_variant_lists_the_known_ones():
  with pytest.raises(configlib.ConfigError, match="tiny, mini, S, B, L, XL"):
    configlib.parse_variant("M/2")


DIT_SMOKE = os.path.join(ROOT, "configs/shapes/dit.py:smoke")


def test_dit_size_overrides_only_the_sizes_set():
  config = configlib.load(DIT_SMOKE, {"dit.variant": "mini/1x1x1"})
  assert configlib.dit_size(config.dit) == (configlib.VARIANTS["mini"], (1, 1, 1))
  config = configlib.load(DIT_SMOKE,
                          {"dit.variant": "mini/1x1x1", "dit.depth": 6, "dit.width": 192})
  variant, patch = configlib.dit_size(config.dit)
  assert (variant.width, variant.depth, variant.heads, patch) == (192, 6, 4, (1, 1, 1))
  assert variant.mlp_ratio == configlib.VARIANTS["mini"].mlp_ratio
  model = dit_lib.dit_from_config(config)
  assert (model.width, model.depth, model.heads, tuple(model.patch)) == (192, 6, 4, (1, 1, 1))


def test_dit_heads_must_divide_the_overridden_width():
  with pytest.raises(configlib.ConfigError, match="'dit.width' = 198 and 'dit.heads' = 4"):
    configlib.load(DIT_SMOKE, {"dit.variant": "mini", "dit.width": 198})
  with pytest.raises(configlib.ConfigError, match="'dit.depth'.*>= 0"):
    configlib.load(DIT_SMOKE, {"dit.depth": -1})
