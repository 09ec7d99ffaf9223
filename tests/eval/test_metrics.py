"""PSNR / SSIM conventions on video batches, the Mean aggregator and side-by-side grids."""

import json

import jax
import numpy as np
import pytest

from vidgen.eval import metrics

B, T, H, W = 2, 3, 24, 24


def smooth_clips(seed=0, shape=(B, T, H, W, 3)):
  """Float clips in [0.1, 0.9]: smooth gradients (SSIM is meaningful on them)."""
  rng = np.random.default_rng(seed)
  b, t, h, w, c = shape
  yy, xx = np.mgrid[:h, :w] / max(h, w)
  phase = rng.uniform(0, 2 * np.pi, (b, t, 1, 1, c))
  return (0.5 + 0.4 * np.sin(4 * yy[..., None] + 3 * xx[..., None] + phase)).astype(np.float32)


def numpy_psnr(a, b, max_val):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
  return 10 * np.log10(max_val**2 / mse)


def numpy_ssim_frame(a, b, max_val):
  """Wang et al. 2004 SSIM of one (H, W, C) frame: 11-tap Gaussian (sigma 1.5),
  valid filtering, mean over pixels and channels (the dm_pix / tf.image
  convention), written independently of dm_pix."""
  x = np.arange(11) - 5
  g = np.exp(-0.5 * (x / 1.5) ** 2)
  g /= g.sum()

  def blur(z):
    z = np.lib.stride_tricks.sliding_window_view(z, 11, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(z, 11, axis=1) @ g

  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mu_a, mu_b = blur(a), blur(b)
  s_aa = blur(a * a) - mu_a**2
  s_bb = blur(b * b) - mu_b**2
  s_ab = blur(a * b) - mu_a * mu_b
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / (
      (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
  return ssim_map.mean()


def noisy(a, sigma, seed=1):
  rng = np.random.default_rng(seed)
  return np.clip(a + rng.normal(0, sigma, a.shape), 0, 1).astype(np.float32)


def test_psnr_matches_numpy_per_clip_mse():
  a = smooth_clips(0)
  b = noisy(a, 0.05)
  np.testing.assert_allclose(metrics.psnr(a, b), numpy_psnr(a, b, 1.0), rtol=1e-4)
  # max_val scales floats; uint8 is read as [0, 255] whatever max_val says.
  np.testing.assert_allclose(
      metrics.psnr(a * 255, b * 255, max_val=255.0), numpy_psnr(a, b, 1.0), rtol=1e-4)
  a8, b8 = (np.round(a * 255).astype(np.uint8), np.round(b * 255).astype(np.uint8))
  np.testing.assert_allclose(metrics.psnr(a8, b8), numpy_psnr(a8, b8, 255.0), rtol=1e-4)
  np.testing.assert_allclose(metrics.psnr(a8, b8, max_val=7.0), numpy_psnr(a8, b8, 255.0),
                             rtol=1e-4)
  # Mixed: uint8 originals against float reconstructions in [0, 1].
  np.testing.assert_allclose(metrics.psnr(a8, b8.astype(np.float32) / 255),
                             numpy_psnr(a8, b8, 255.0), rtol=1e-4)


def test_psnr_is_from_the_clip_mse_not_the_mean_of_frame_psnrs():
  a = np.full((1, 2, 16, 16, 1), 0.5, np.float32)
  b = a.copy()
  b[0, 0] += 0.001  # frame 0 nearly perfect: 60 dB
  b[0, 1] += 0.1  # frame 1: 20 dB
  clip = float(metrics.psnr(a, b)[0])
  frame_mean = np.mean([10 * np.log10(1 / 0.001**2), 10 * np.log10(1 / 0.1**2)])
  assert clip == pytest.approx(10 * np.log10(1 / ((0.001**2 + 0.1**2) / 2)), rel=1e-4)
  assert clip < frame_mean - 15


def test_psnr_of_identical_clips_is_inf():
  a = smooth_clips(0)
  b = a.copy()
  b[1] = noisy(a[1], 0.1)
  p = np.asarray(metrics.psnr(a, b))
  assert p.shape == (B,)
  assert np.isinf(p[0]) and p[0] > 0
  assert np.isfinite(p[1])


def test_ssim_identical_is_one_and_matches_numpy_reference():
  a = smooth_clips(2)
  np.testing.assert_allclose(metrics.ssim(a, a), np.ones(B), atol=1e-5)
  b = noisy(a, 0.08)
  want = [np.mean([numpy_ssim_frame(a[i, t], b[i, t], 1.0) for t in range(T)])
          for i in range(B)]
  got = np.asarray(metrics.ssim(a, b))
  assert got.shape == (B,)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The clip value is the mean of its frames' values.
  per_frame = [numpy_ssim_frame(a[0, t], b[0, t], 1.0) for t in range(T)]
  assert np.ptp(per_frame) > 0.0
  # max_val and uint8 conventions.
  np.testing.assert_allclose(metrics.ssim(a * 255, b * 255, max_val=255.0), got, rtol=1e-4)
  a8, b8 = (np.round(a * 255).astype(np.uint8), np.round(b * 255).astype(np.uint8))
  np.testing.assert_allclose(metrics.ssim(a8, b8), metrics.ssim(a8 / 255.0, b8 / 255.0),
                             rtol=1e-5)


def test_more_noise_lowers_ssim_and_psnr_monotonically():
  a = smooth_clips(3, (1, 2, H, W, 3))
  levels = [0.01, 0.03, 0.1, 0.3]
  noisy_batch = np.concatenate([noisy(a, s, seed=4) for s in levels])
  ref = np.repeat(a, len(levels), axis=0)
  s = np.asarray(metrics.ssim(ref, noisy_batch))
  p = np.asarray(metrics.psnr(ref, noisy_batch))
  assert np.all(np.diff(s) < 0), s
  assert np.all(np.diff(p) < 0), p
  assert s[0] > 0.95 and s[-1] < 0.5


def test_ssim_agrees_with_skimage():
  metrics_module = pytest.importorskip("skimage.metrics")
  a = smooth_clips(5)
  b = noisy(a, 0.05)
  want = [np.mean([metrics_module.structural_similarity(
      a[i, t], b[i, t], data_range=1.0, channel_axis=-1, gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False) for t in range(T)]) for i in range(B)]
  np.testing.assert_allclose(metrics.ssim(a, b), want, atol=1e-4)


def test_jit_and_bad_inputs():
  a = smooth_clips(0)
  b = noisy(a, 0.05)
  np.testing.assert_allclose(jax.jit(metrics.psnr)(a, b), metrics.psnr(a, b), rtol=1e-6)
  with pytest.raises(ValueError, match="B, T, H, W, C"):
    metrics.psnr(a[0], b[0])
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.ssim(a, b[:, :2])
  with pytest.raises(ValueError, match="at least 11"):
    metrics.ssim(a[:, :, :8, :8], b[:, :, :8, :8])
  with pytest.raises(ValueError, match="uint8 or float"):
    metrics.psnr(a.astype(np.int32), b.astype(np.int32))


def test_mean_aggregates_clips_and_caps_infinite_psnr():
  mean = metrics.Mean()
  assert mean.result() == {"psnr": None, "ssim": None, "count": 0}
  mean.add([float("inf"), 30.0], [1.0, 0.8])
  mean.add([20.0], [0.5])
  result = mean.result()
  assert result["count"] == 3
  assert result["psnr"] == pytest.approx((metrics.PSNR_CAP + 30 + 20) / 3)
  assert result["ssim"] == pytest.approx((1.0 + 0.8 + 0.5) / 3)
  json.dumps(result, allow_nan=False)
  other = metrics.Mean()
  other.add([40.0], [0.9])
  mean.merge(other)
  assert mean.result()["count"] == 4
  assert mean.result()["psnr"] == pytest.approx((metrics.PSNR_CAP + 30 + 20 + 40) / 4)
  with pytest.raises(ValueError):
    mean.add([1.0, 2.0], [1.0])


def test_mean_update_equals_per_clip_metrics():
  a = smooth_clips(0)
  b = noisy(a, 0.05)
  mean = metrics.Mean()
  mean.update(a[:1], b[:1])
  mean.update(a[1:], b[1:])
  got = mean.result()
  assert got["count"] == B
  assert got["psnr"] == pytest.approx(float(np.mean(metrics.psnr(a, b))), rel=1e-5)
  assert got["ssim"] == pytest.approx(float(np.mean(metrics.ssim(a, b))), rel=1e-5)
  assert metrics.reconstruction_metrics(a, a)["psnr"] == metrics.PSNR_CAP


def test_side_by_side_layout():
  rng = np.random.default_rng(0)
  orig = rng.integers(100, 256, (3, 16, 10, 12, 3), dtype=np.uint8)
  recon = rng.integers(100, 256, (3, 16, 10, 12, 3), dtype=np.uint8)
  g, h, w = metrics.GAP, 10, 12
  grid = metrics.side_by_side(orig, recon, max_clips=2, max_frames=8)
  n, k = 2, 8
  assert grid.dtype == np.uint8
  assert grid.shape == (2 * n * h + 3 * n * g, k * w + (k + 1) * g, 3)
  idx = metrics.frame_indices(16, 8)
  assert idx[0] == 0 and idx[-1] == 15 and len(idx) == 8
  # Clip 1's reconstruction row, frame column 3.
  y = g + (h + g) * 2 + g + (h + g)
  x = g + 3 * (w + g)
  np.testing.assert_array_equal(grid[y:y + h, x:x + w], recon[1, idx[3]])
  np.testing.assert_array_equal(grid[g:g + h, g:g + w], orig[0, 0])
  # Gaps are gray; frames never are (values >= 100).
  assert np.all(grid[:g] == metrics.GAP_VALUE)
  assert np.all(grid[:, x - g:x] == metrics.GAP_VALUE)
  # Fewer frames than max_frames: all of them; floats in [0, 1] accepted.
  short = metrics.side_by_side(orig[:1, :3] / 255.0, recon[:1, :3] / 255.0)
  assert short.shape == (2 * h + 3 * g, 3 * w + 4 * g, 3)
  np.testing.assert_array_equal(short[g:g + h, g:g + w], orig[0, 0])
  with pytest.raises(ValueError):
    metrics.side_by_side(orig, recon[:, :4])
