"""Tests of vidgen.data.video_io: probe, decode, encode in every format, bad bytes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidgen.data import clips, video_io
from vidgen.data.clips import BadExample

# Minimum PSNR (dB) of an encode -> decode round trip of `make_frames` clips.
MIN_PSNR = {"mp4": 30.0, "webm": 30.0, "avi": 28.0, "gif": 28.0}


def test_available_encoders():
  enc = video_io.available_encoders()
  assert set(enc) == set(video_io.VIDEO_FORMATS)
  assert enc["mp4"] in ("libx264", "mpeg4")
  assert enc["webm"] in ("libvpx-vp9", "libvpx")
  assert enc["avi"] in ("mpeg4", "mjpeg")
  assert enc["gif"] == "gif"


@pytest.mark.parametrize("fmt", video_io.VIDEO_FORMATS)
@pytest.mark.parametrize("shape", [(12, 48, 64), (9, 33, 47)], ids=["even", "odd"])
def test_round_trip(fmt, shape, helpers):
  frames = helpers.make_frames(*shape, seed=3)
  data = video_io.encode(frames, 10.0, fmt)
  info = video_io.probe(data)
  assert info == clips.ClipInfo(num_frames=shape[0], fps=10.0, height=shape[1],
                                width=shape[2])
  assert video_io.probe(data, count_packets=True) == info
  out = video_io.decode(data)
  assert out.shape == frames.shape and out.dtype == np.uint8
  assert helpers.psnr(out, frames) > MIN_PSNR[fmt]
  assert helpers.frame_ids(out, frames) == list(range(shape[0]))
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)), atol=3)


@pytest.mark.parametrize("fps", [25.0, 29.97, 12.5])
def test_fps_survives(fps, helpers):
  data = video_io.encode(helpers.make_frames(4, 16, 16), fps, "mp4")
  assert video_io.probe(data).fps == pytest.approx(fps, rel=1e-4)


def test_faststart_puts_index_first(helpers):
  frames = helpers.make_frames(6, 16, 16)
  plain = video_io.encode(frames, 10.0, "mp4")
  fast = video_io.encode(frames, 10.0, "mp4", faststart=True)
  assert fast.index(b"moov") < fast.index(b"mdat")
  assert plain.index(b"moov") > plain.index(b"mdat")
  np.testing.assert_array_equal(video_io.decode(fast), video_io.decode(plain))
  with pytest.raises(ValueError, match="mp4"):
    video_io.encode(frames, 10.0, "webm", faststart=True)


@pytest.mark.parametrize("fmt", video_io.VIDEO_FORMATS)
def test_decode_returns_requested_indices_in_order(fmt, helpers):
  frames = helpers.make_frames(12, 32, 48, seed=1)
  data = video_io.encode(frames, 10.0, fmt)
  full = video_io.decode(data)
  indices = np.array([7, 2, 2, 0, 11, 7])
  got = video_io.decode(data, indices)
  np.testing.assert_array_equal(got, full[indices])  # same decoder: exact
  assert helpers.frame_ids(got, frames) == indices.tolist()
  assert video_io.decode(data, [3]).shape == (1, 32, 48, 3)
  assert video_io.decode(data, np.zeros(0, np.int64)).shape == (0, 32, 48, 3)


def test_decode_past_the_end_raises_too_few_frames(helpers):
  data = video_io.encode(helpers.make_frames(5, 16, 16), 10.0, "mp4")
  with pytest.raises(BadExample) as e:
    video_io.decode(data, [0, 5])
  assert e.value.reason == clips.TOO_FEW_FRAMES
  with pytest.raises(ValueError):
    video_io.decode(data, [-1])


@pytest.mark.parametrize("fmt", ["mp4", "gif", "png"])
@pytest.mark.parametrize("size", [(24, 32), (96, 128), (20, 50)], ids=["down", "up", "aspect"])
def test_decode_resizes_like_pil(fmt, size, helpers):
  frames = helpers.make_frames(1 if fmt == "png" else 6, 48, 64, seed=2)
  data = (video_io.encode_image(frames[0]) if fmt == "png"
          else video_io.encode(frames, 10.0, fmt))
  full = video_io.decode(data)
  got = video_io.decode(data, [0, 0], size=size)
  assert got.shape == (2, *size, 3)
  resample = Image.Resampling.BOX if size[0] < 48 else Image.Resampling.BILINEAR
  ref = np.asarray(Image.fromarray(full[0]).resize(size[::-1], resample))
  diff = np.abs(got[0].astype(int) - ref.astype(int))
  assert diff.mean() < 3.0, diff.mean()


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_images_are_one_frame_clips(fmt, helpers):
  frame = helpers.make_frames(1, 30, 40, seed=4)
  data = video_io.encode_image(frame[0], fmt)
  assert video_io.is_image(data)
  assert video_io.probe(data) == clips.ClipInfo(1, 0.0, 30, 40)
  out = video_io.decode(data, [0, 0])
  assert out.shape == (2, 30, 40, 3)
  if fmt == "png":
    np.testing.assert_array_equal(out[0], frame[0])
  else:
    assert helpers.psnr(out[:1], frame) > 30
  with pytest.raises(BadExample) as e:
    video_io.decode(data, [1])
  assert e.value.reason == clips.TOO_FEW_FRAMES


def test_write_video_picks_format_from_suffix(tmp_path, helpers):
  frames = helpers.make_frames(5, 16, 24)
  for suffix in (".mp4", ".webm", ".avi", ".gif", ".MP4"):
    path = tmp_path / f"v{suffix}"
    video_io.write_video(path, frames, 8.0)
    info = video_io.probe(path.read_bytes())
    assert (info.num_frames, info.height, info.width) == (5, 16, 24), suffix
  video_io.write_video(tmp_path / "still.png", frames[:1], 8.0)
  np.testing.assert_array_equal(
      video_io.decode((tmp_path / "still.png").read_bytes())[0], frames[0])
  with pytest.raises(ValueError, match="1 frame"):
    video_io.write_video(tmp_path / "still.jpg", frames, 8.0)
  with pytest.raises(ValueError, match="suffix"):
    video_io.write_video(tmp_path / "v.mov", frames, 8.0)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8, 3), np.float32),
    np.zeros((0, 8, 8, 3), np.uint8)])
def test_encode_rejects_bad_frames(bad):
  with pytest.raises(ValueError):
    video_io.encode(bad, 10.0, "mp4")


def test_encode_rejects_bad_fmt_and_fps(helpers):
  frames = helpers.make_frames(2, 8, 8)
  with pytest.raises(ValueError, match="format"):
    video_io.encode(frames, 10.0, "mkv")
  with pytest.raises(ValueError, match="fps"):
    video_io.encode(frames, 0.0, "mp4")


def _bad_inputs(helpers) -> dict[str, tuple[bytes, str]]:
  mp4 = video_io.encode(helpers.make_frames(8, 32, 32), 10.0, "mp4")
  png = video_io.encode_image(helpers.make_frames(1, 64, 64)[0])
  rng = np.random.default_rng(0)
  return {
      "empty": (b"", clips.ZERO_BYTE),
      "garbage": (rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), clips.CORRUPT),
      "text": (b"hello, I am not a video\n" * 20, clips.CORRUPT),
      "mp4_half": (mp4[: len(mp4) // 2], clips.CORRUPT),  # moov index lost
      "mp4_header_only": (mp4[:64], clips.CORRUPT),
      "png_half": (png[: len(png) // 2], clips.CORRUPT),
      "png_magic_only": (png[:8], clips.CORRUPT),
      "jpeg_magic_only": (b"\xff\xd8\xff\xe0" + b"\x00" * 10, clips.CORRUPT),
  }


@pytest.mark.parametrize("name", ["empty", "garbage", "text", "mp4_half",
                                  "mp4_header_only", "png_half", "png_magic_only",
                                  "jpeg_magic_only"])
def test_bad_bytes_raise_bad_example(name, helpers):
  data, reason = _bad_inputs(helpers)[name]
  # probe may accept a truncated PNG's header; decode must then fail.
  for fn in (video_io.probe, video_io.decode):
    if fn is video_io.probe and name == "png_half":
      continue
    with pytest.raises(BadExample) as e:
      fn(data)
    assert e.value.reason == reason, (fn.__name__, e.value)


def test_truncated_stream_never_pads(helpers):
  """A file cut after a header promising 24 frames: real frames or an error, never padding."""
  frames = helpers.noisy_frames(24, 48, 64, seed=10)
  whole = video_io.encode(frames, 10.0, "mp4", faststart=True)
  data = whole[: int(len(whole) * 0.6)]
  assert video_io.probe(data).num_frames == 24  # the header's promise
  counted = video_io.probe(data, count_packets=True).num_frames
  assert 2 < counted < 24

  # Frames before the cut decode, stopping early, and match the intact file.
  early = video_io.decode(data, [1, 0, 1])
  np.testing.assert_array_equal(early, video_io.decode(whole, [1, 0, 1]))

  # Asking for frames after the cut fails; it never returns made-up frames.
  for indices in ([0, 23], [counted + 1], np.arange(24)):
    with pytest.raises(BadExample) as e:
      video_io.decode(data, indices)
    assert e.value.reason in (clips.TOO_FEW_FRAMES, clips.CORRUPT)

  # Decoding everything gives only real frames (or an error), none black.
  try:
    got = video_io.decode(data)
  except BadExample as e:
    assert e.reason in (clips.TOO_FEW_FRAMES, clips.CORRUPT)
  else:
    assert len(got) < 24
    assert (got.reshape(len(got), -1).max(axis=1) > 0).all()
    assert helpers.psnr(got[:-1], video_io.decode(whole)[: len(got) - 1]) == float("inf")


@pytest.mark.parametrize("fmt", ["webm", "gif", "avi"])
def test_truncated_other_formats(fmt, helpers):
  frames = helpers.make_frames(16, 32, 32, seed=5)
  whole = video_io.encode(frames, 10.0, fmt)
  data = whole[: int(len(whole) * 0.6)]
  try:
    info = video_io.probe(data)
  except BadExample as e:
    assert e.reason == clips.CORRUPT
    return
  try:
    got = video_io.decode(data, np.arange(info.num_frames))
  except BadExample as e:
    assert e.reason in (clips.TOO_FEW_FRAMES, clips.CORRUPT)
    return
  assert len(got) == info.num_frames <= 16
  assert (got.reshape(len(got), -1).max(axis=1) > 0).all()
