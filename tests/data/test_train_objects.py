"""`data.shapes.train_num_objects`: the train split's object count, apart from the evaluation splits."""

import os

from vidgen import configlib
from vidgen.data import moving_shapes, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(tmp_path, train_objects):
  overrides = {"data.shapes.train_num_objects": train_objects,
               "data.data_dir": str(tmp_path / "data"),
               "data.build_sizes": dict(train=6, test=4, holdout=3)}
  return configlib.load(os.path.join(ROOT, "configs/shapes/data.py") + ":smoke", overrides)


def test_only_the_train_split_changes(tmp_path):
  config = _config(tmp_path, 2)
  assert config.data.shapes.num_objects == 1
  assert pipeline.shapes_config(config.data, "train").num_objects == 2
  for split in ("test", "holdout", None):
    assert pipeline.shapes_config(config.data, split).num_objects == 1
  train = moving_shapes.example(pipeline.shapes_config(config.data, "train"), "train", 0)
  test = moving_shapes.example(pipeline.shapes_config(config.data, "test"), "test", 0)
  assert len(train["objects"]) == 2 and " and " in train["caption"]
  assert len(test["objects"]) == 1
  # The on-demand sources are built with their split's config.
  assert pipeline.make_source(config.data, "train").cfg.num_objects == 2
  assert pipeline.make_source(config.data, "test").cfg.num_objects == 1


def test_zero_keeps_one_config_for_every_split(tmp_path):
  config = _config(tmp_path, 0)
  configs = {pipeline.shapes_config(config.data, s) for s in ("train", "test", "holdout")}
  assert len(configs) == 1


def test_build_writes_each_split_with_its_own_config(tmp_path):
  config = _config(tmp_path, 2)
  built = pipeline.build_shapes(config.data, dict(config.data.build_sizes))
  assert sorted(sorted(group.items()) for group, _ in built) == [
      [("holdout", 3), ("test", 4)], [("train", 6)]]
  config.unlock()
  config.data.source = "shapes_records"
  for split, objects, size in (("train", 2, 6), ("test", 1, 4), ("holdout", 1, 3)):
    source = pipeline.make_source(config.data, split)
    assert len(source) == size
    assert source.shapes.num_objects == objects
    for i in range(size):
      assert len(source[i]["objects"]["color"]) == objects
