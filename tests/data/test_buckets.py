import collections

import numpy as np
import pytest

from vidgen.data import buckets as buckets_lib
from vidgen.data import clips

BUCKETS = buckets_lib.parse_buckets("16x64x64:8@2,8x48x80:8@1,1x64x64:32")


def test_parse_round_trip_and_defaults():
  assert [str(b) for b in BUCKETS] == ["16x64x64:8@2", "8x48x80:8@1", "1x64x64:32@1"]
  assert BUCKETS[1].shape == (8, 48, 80) and BUCKETS[1].batch_size == 8


@pytest.mark.parametrize("spec", ["", "16x64:8", "16x64x64", "0x64x64:8", "16x64x64:8@0",
                                  "16x64x64:8,16x64x64:4"])
def test_parse_rejects(spec):
  with pytest.raises(ValueError):
    buckets_lib.parse_buckets(spec)


def _assign(num_frames, h, w, fps=8.0, sampling=clips.Sampling(), seed=0):
  info = clips.ClipInfo(num_frames=num_frames, fps=fps, height=h, width=w)
  return buckets_lib.assign(info, BUCKETS, sampling, np.random.default_rng(seed))


def test_nearest_aspect_and_duration_it_can_fill():
  assert _assign(40, 360, 360) == 0  # square, long enough for 16
  assert _assign(40, 360, 640) == 1  # wide: nearest aspect is 48x80
  assert _assign(12, 360, 360) == 1  # too short for 16 frames, fits 8
  assert _assign(1, 512, 512) == 2  # an image is a one-frame clip
  assert _assign(1, 300, 500) == 2  # ... whatever its aspect
  assert _assign(5, 64, 64) == 2  # a video too short for any video bucket


def test_longest_duration_among_equal_aspects():
  grid = buckets_lib.parse_buckets("8x64x64:4,16x64x64:4,32x64x64:4,16x64x112:4")
  info = lambda t: clips.ClipInfo(num_frames=t, fps=8, height=90, width=90)
  rng = np.random.default_rng(0)
  assert [buckets_lib.assign(info(t), grid, clips.Sampling(), rng) for t in (9, 20, 99)] == [0, 1, 2]
  # stride 2 needs 31 stored frames for 16 sampled ones
  assert _assign(30, 360, 360, sampling=clips.Sampling(stride=2)) == 1
  assert _assign(31, 360, 360, sampling=clips.Sampling(stride=2)) == 0
  # target fps: 24 fps stored, 8 fps sampled = stride 3
  assert _assign(46, 360, 360, fps=24.0, sampling=clips.Sampling(fps=8.0)) == 0
  assert _assign(45, 360, 360, fps=24.0, sampling=clips.Sampling(fps=8.0)) == 1


def test_too_short_for_every_bucket_is_a_counted_skip():
  only_video = buckets_lib.parse_buckets("16x64x64:8")
  info = clips.ClipInfo(num_frames=5, fps=8, height=64, width=64)
  with pytest.raises(clips.BadExample) as e:
    buckets_lib.assign(info, only_video, clips.Sampling(), np.random.default_rng(0))
  assert e.value.reason == clips.TOO_FEW_FRAMES


def test_free_choice_follows_the_weights():
  rng = np.random.default_rng(0)
  counts = collections.Counter(
      buckets_lib.assign(None, BUCKETS, clips.Sampling(), rng) for _ in range(4000))
  shares = np.array([counts[i] for i in range(3)]) / 4000
  np.testing.assert_allclose(shares, [0.5, 0.25, 0.25], atol=0.03)


@pytest.mark.parametrize("info,fps,frames", [
    (clips.ClipInfo(100, 30.0, 10, 10), 8.0, 16),
    (clips.ClipInfo(16, 8.0, 10, 10), 0.0, 16),
    (clips.ClipInfo(40, 25.0, 10, 10), 12.5, 8),
])
def test_frame_indices_span_and_spacing(info, fps, frames):
  sampling = clips.Sampling(fps=fps, random_start=True)
  for seed in range(20):
    idx = clips.sample_frame_indices(info, frames, sampling, np.random.default_rng(seed))
    assert len(idx) == frames and idx[0] >= 0 and idx[-1] < info.num_frames
    assert (np.diff(idx) >= 1).all()
    step = sampling.step(info.fps)
    np.testing.assert_allclose(np.diff(idx).mean(), step, atol=1.0 / frames + 1e-9)


def test_fixed_start_is_the_first_frame():
  idx = clips.sample_frame_indices(clips.ClipInfo(50, 8, 4, 4), 4,
                                   clips.Sampling(stride=3, random_start=False),
                                   np.random.default_rng(0))
  np.testing.assert_array_equal(idx, [0, 3, 6, 9])


@pytest.mark.parametrize("src,out", [((30, 40), (16, 16)), ((40, 30), (24, 48)),
                                      ((8, 8), (32, 16)), ((64, 64), (64, 64))])
def test_resize_and_crop_gives_the_bucket_shape(src, out):
  video = np.random.default_rng(0).integers(0, 255, (3, *src, 3), dtype=np.uint8)
  got = clips.resize_and_crop(video, *out)
  assert got.shape == (3, *out, 3) and got.dtype == np.uint8
  if src == out:
    np.testing.assert_array_equal(got, video)


def test_resize_keeps_content_centred():
  # A wide frame whose left and right thirds differ: the centre crop keeps the middle.
  frame = np.zeros((1, 30, 90, 3), np.uint8)
  frame[:, :, 30:60] = 200
  got = clips.resize_and_crop(frame, 20, 20)
  assert got.min() >= 190
