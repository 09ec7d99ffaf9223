import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen import configlib
from vidgen.diffusion import masks
from vidgen.text.tokenizer import EOS_ID, PAD_ID


def _known(weights, frames, batch=512, seed=0):
  fn = jax.jit(functools.partial(masks.sample_known, batch=batch, frames=frames, weights=weights))
  out = np.asarray(fn(jax.random.key(seed)))
  assert out.shape == (batch, frames) and out.dtype == bool
  return out


@pytest.mark.parametrize("frames", [2, 3, 8])
def test_always_one_unknown_frame(frames):
  weights = dict(configlib.diffusion_config().masks)  # every kind
  known = _known(weights, frames, batch=4096)
  assert (~known).any(axis=1).all()
  assert known.any(axis=1).mean() > 0.3


def test_images_have_nothing_known():
  assert not _known({"first": 1.0, "random": 1.0}, 1).any()


def test_each_kind():
  t = 6
  idx = np.arange(t)
  assert not _known({"none": 1.0}, t).any()
  np.testing.assert_array_equal(_known({"first": 1.0}, t), np.broadcast_to(idx == 0, (512, t)))
  np.testing.assert_array_equal(_known({"first_last": 1.0}, t),
                                np.broadcast_to((idx == 0) | (idx == t - 1), (512, t)))
  first_k = _known({"first_k": 1.0}, t)
  k = first_k.sum(axis=1)
  np.testing.assert_array_equal(first_k, idx[None] < k[:, None])  # a prefix
  assert set(k) == set(range(1, t))
  last_k = _known({"last_k": 1.0}, t)
  k = last_k.sum(axis=1)
  np.testing.assert_array_equal(last_k, idx[None] >= t - k[:, None])  # a suffix
  assert set(k) == set(range(1, t))
  assert abs(_known({"random": 1.0}, t).mean() - 0.5) < 0.05


def test_weights_are_respected():
  known = _known({"none": 3.0, "first": 1.0, "random": 0.0}, 4, batch=4000)
  assert abs(known[:, 0].mean() - 0.25) < 0.03
  assert not known[:, 1:].any()


def test_bad_weights():
  with pytest.raises(ValueError, match="first_last"):
    masks.sample_known(jax.random.key(0), 2, 4, {"middle": 1.0})
  with pytest.raises(ValueError, match="not all 0"):
    masks.sample_known(jax.random.key(0), 2, 4, {"none": 0.0})


@pytest.mark.parametrize("total,frames", [(16, 4), (9, 8), (5, 5), (12, 1), (64, 16)])
def test_fdm_subset(total, frames):
  fn = jax.jit(functools.partial(masks.fdm_subset, batch=256, total=total, frames=frames))
  idx = np.asarray(fn(jax.random.key(0)))
  assert idx.shape == (256, frames) and idx.dtype == np.int32
  assert (idx >= 0).all() and (idx < total).all()
  assert (np.diff(idx, axis=1) > 0).all()  # sorted and distinct
  if 1 < frames < total - 1:
    windows = (idx[:, -1] - idx[:, 0] == frames - 1)
    assert 0.3 < windows.mean() < 0.9  # windows, and sparse subsets (rarely windows too)
    assert len({tuple(r) for r in idx}) > 10


def test_fdm_subset_bad_sizes():
  with pytest.raises(ValueError, match="frames"):
    masks.fdm_subset(jax.random.key(0), 2, 4, 5)


def test_empty_caption_and_drop():
  tokens, mask = masks.empty_caption(2, 5)
  np.testing.assert_array_equal(tokens, [[EOS_ID] + [PAD_ID] * 4] * 2)
  np.testing.assert_array_equal(mask, [[True] + [False] * 4] * 2)
  assert tokens.dtype == jnp.int32 and mask.dtype == bool

  caps = jnp.array([[5, 6, 7, EOS_ID, 0], [8, EOS_ID, 0, 0, 0]] * 4, jnp.int32)
  cmask = caps != PAD_ID
  rng = jax.random.key(0)
  t, m, d = jax.jit(masks.drop_captions)(rng, caps, cmask, 0.0)
  np.testing.assert_array_equal(t, caps)
  np.testing.assert_array_equal(m, cmask)
  assert not np.asarray(d).any()
  t, m, d = masks.drop_captions(rng, caps, cmask, 1.0)
  empty_t, empty_m = masks.empty_caption(8, 5)
  np.testing.assert_array_equal(t, empty_t)
  np.testing.assert_array_equal(m, empty_m)
  assert np.asarray(d).all() and d.shape == (8,)
  _, _, d = masks.drop_captions(jax.random.key(1), jnp.zeros((4000, 3), jnp.int32),
                                jnp.ones((4000, 3), bool), 0.1)
  assert abs(float(jnp.mean(d)) - 0.1) < 0.02
