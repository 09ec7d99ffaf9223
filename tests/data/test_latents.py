"""Cached latents: per-record shapes, stage 2's per-shape batches, the mix and its state."""

import numpy as np
import pytest

from vidgen.data import latents


def _write(folder, counts):
  writer = latents.LatentWriter(str(folder))
  stats = []
  for shape, n in counts.items():
    for i in range(n):
      mean = np.full(shape + (4,), len(stats), np.float32)
      writer.add({"mean": mean, "logvar": np.zeros_like(mean),
                  "tokens": np.arange(6, dtype=np.int32), "token_mask": np.ones(6, bool),
                  "key": np.int64(len(stats))})
      stats.append(i)
  writer.close()
  latents.write_metadata(str(folder), {}, [dict(writer.stats(), count=writer.count)])


def test_records_group_by_shape(tmp_path):
  _write(tmp_path, {(2, 4, 4): 5, (1, 2, 6): 3})
  by_shape = latents.LatentRecords(str(tmp_path)).indices_by_shape()
  assert {k: list(v) for k, v in by_shape.items()} == {"2x4x4": [0, 1, 2, 3, 4],
                                                      "1x2x6": [5, 6, 7]}


def test_training_mixes_shapes_and_resumes_exactly(tmp_path):
  _write(tmp_path, {(2, 4, 4): 5, (1, 2, 6): 3})
  shapes = {"2x4x4": (2, 1.0), "1x2x6": (2, 1.0)}
  it = iter(latents.latent_dataset(str(tmp_path), shapes, seed=3))
  first = [next(it) for _ in range(4)]
  state = it.get_state()
  want = [next(it)["key"].tolist() for _ in range(6)]
  assert {b["mean"].shape[1:4] for b in first} | {(2, 4, 4)} == {(2, 4, 4), (1, 2, 6)}
  again = iter(latents.latent_dataset(str(tmp_path), shapes, seed=3))
  again.set_state(state)
  assert [next(again)["key"].tolist() for _ in range(6)] == want


def test_too_few_latents_fail_for_training_and_are_left_out_of_evaluation(tmp_path):
  _write(tmp_path, {(2, 4, 4): 4})
  shapes = {"2x4x4": (2, 1.0), "1x2x6": (2, 1.0)}
  with pytest.raises(ValueError, match="1x2x6: 0 latents"):
    latents.latent_dataset(str(tmp_path), shapes)
  batches = list(latents.latent_dataset(str(tmp_path), shapes, num_epochs=1, shuffle=False))
  assert [b["key"].tolist() for b in batches] == [[0, 1], [2, 3]]


def test_metadata_holds_overall_and_per_channel_moments(tmp_path):
  rng = np.random.default_rng(0)
  writer = latents.LatentWriter(str(tmp_path))
  means = [rng.normal(loc=[0.0, 2.0, -1.0], scale=[1.0, 0.5, 3.0], size=(2, 3, 3, 3))
           for _ in range(6)]
  for i, mean in enumerate(means):
    writer.add({"mean": mean.astype(np.float32), "logvar": np.zeros_like(mean, np.float32),
                "tokens": np.arange(4, dtype=np.int32), "token_mask": np.ones(4, bool),
                "key": np.int64(i)})
  writer.close()
  # Two shards' statistics combine as one population.
  half = dict(writer.stats(), count=writer.count)
  meta = latents.write_metadata(str(tmp_path), {}, [half, half])
  values = np.stack(means).astype(np.float32).astype(np.float64)
  flat = values.reshape(-1, 3)
  np.testing.assert_allclose(meta["channel_mean"], flat.mean(0), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(meta["channel_std"], flat.std(0), rtol=1e-6)
  np.testing.assert_allclose(meta["latent_std"], values.std(), rtol=1e-6)
  assert latents.LatentRecords(str(tmp_path)).metadata["channel_std"] == meta["channel_std"]
