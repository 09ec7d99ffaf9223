"""Conditioning modes: where each mode's given frames go and which latent frames they fix."""

from __future__ import annotations

import numpy as np
import pytest

from vidgen.diffusion import modes
from vidgen.eval.metrics import loop_jump

TF = 4  # the VAE's time factor in these tests


def _video(frames, h=8, w=8, offset=0):
  """uint8 (T, H, W, 3) whose frame t is filled with the value 10 * (t + offset) + 5."""
  values = (10 * (np.arange(frames) + offset) + 5).astype(np.uint8)
  return np.broadcast_to(values[:, None, None, None], (frames, h, w, 3)).copy()


def _frame_values(canvas):
  return canvas.pixels[:, 0, 0, 0].astype(int).tolist()


def test_latent_known_follows_the_causal_vae_layout():
  given = np.zeros(9, bool)
  given[0] = True
  assert modes.latent_known(given, TF).tolist() == [True, False, False]
  given[1:4] = True  # latent 1 needs pixels 1..4: one short
  assert modes.latent_known(given, TF).tolist() == [True, False, False]
  given[4] = True
  assert modes.latent_known(given, TF).tolist() == [True, True, False]
  with pytest.raises(ValueError, match="1 \\+ k \\* 4"):
    modes.latent_known(np.ones(8, bool), TF)


def test_t2v_gives_nothing():
  canvas = modes.build("t2v", 9, 8, 8, time_factor=TF)
  assert not canvas.given.any() and not canvas.latent_known(TF).any()


def test_i2v_puts_the_image_first_and_fills_the_rest_with_it():
  image = _video(1)[0]
  canvas = modes.build("i2v", 9, 8, 8, time_factor=TF, images=[image])
  assert canvas.given.tolist() == [True] + [False] * 8
  assert canvas.latent_known(TF).tolist() == [True, False, False]
  assert (canvas.pixels == image).all()


@pytest.mark.parametrize("keep,frames_kept", [(1, 1), (2, 5), (3, 9)])
def test_extend_keeps_the_tail_of_the_video(keep, frames_kept):
  video = _video(11)
  canvas = modes.build("extend", 17, 8, 8, time_factor=TF, context=keep, videos=[video])
  known = canvas.latent_known(TF)
  assert known.tolist() == [True] * keep + [False] * (5 - keep)
  assert canvas.given.sum() == frames_kept
  assert _frame_values(canvas)[:frames_kept] == [10 * t + 5 for t in range(11 - frames_kept, 11)]


def test_extend_with_a_short_video_keeps_what_it_has():
  canvas = modes.build("extend", 17, 8, 8, time_factor=TF, context=3, videos=[_video(6)])
  assert canvas.latent_known(TF).tolist() == [True, True, False, False, False]


def test_extend_back_puts_the_head_of_the_video_at_the_end_and_fills_backwards():
  video = _video(10)
  canvas = modes.build("extend_back", 17, 8, 8, time_factor=TF, context=2, videos=[video])
  assert canvas.latent_known(TF).tolist() == [False, False, False, True, True]
  values = _frame_values(canvas)
  assert values[9:] == [10 * t + 5 for t in range(8)]
  assert values[:9] == [5] * 9  # filled with the next given frame (the video's first)


def test_extend_back_from_a_single_frame_holds_it():
  canvas = modes.build("extend_back", 9, 8, 8, time_factor=TF, videos=[_video(1)])
  assert canvas.latent_known(TF).tolist() == [False, False, True]


def test_interpolate_gives_the_first_frame_and_the_last_latent_frame():
  a, b = _video(1)[0], _video(1, offset=3)[0]
  canvas = modes.build("interpolate", 13, 8, 8, time_factor=TF, images=[a, b])
  assert canvas.latent_known(TF).tolist() == [True, False, False, True]
  values = _frame_values(canvas)
  assert values[0] == 5 and values[9:] == [35] * 4 and values[1:9] == [35] * 8


def test_stitch_gives_a_tail_and_a_head():
  a, b = _video(9), _video(9, offset=12)
  canvas = modes.build("stitch", 17, 8, 8, time_factor=TF, context=1, videos=[a, b])
  assert canvas.latent_known(TF).tolist() == [True, False, False, False, True]
  values = _frame_values(canvas)
  assert values[0] == 85 and values[13:] == [125, 135, 145, 155]


def test_inputs_are_cropped_and_resized_to_the_output():
  image = np.zeros((20, 40, 3), np.uint8)
  image[:, 10:30] = 200  # the centre 20x20 square survives a centre crop to 1:1
  canvas = modes.build("i2v", 5, 8, 8, time_factor=TF, images=[image])
  assert canvas.pixels.shape == (5, 8, 8, 3)
  assert (canvas.pixels[0] == 200).all()


@pytest.mark.parametrize("mode,images,videos,context,frames,match", [
    ("i2v", 0, 0, 1, 9, "takes 1 image"),
    ("stitch", 0, 1, 1, 9, "takes 0 image\\(s\\) and 2 video"),
    ("extend", 0, 1, 3, 9, "leaves 0 of 3"),
    ("t2v", 0, 0, 1, 8, "1 \\+ k \\* 4"),
    ("nope", 0, 0, 1, 9, "unknown mode"),
    ("extend", 0, 1, 0, 9, "context must be >= 1"),
])
def test_bad_requests_fail_clearly(mode, images, videos, context, frames, match):
  with pytest.raises(ValueError, match=match):
    modes.build(mode, frames, 8, 8, time_factor=TF, context=context,
                images=[_video(1)[0]] * images, videos=[_video(9)] * videos)


def test_loop_lengths_cover_the_cycle_and_fail_clearly():
  # 32 frames (or 33 = 1 + 4 * 8): latent frames 1..5 of a clip of 6, then 3 new ones.
  assert modes.loop_lengths(32, window=5, time_factor=TF, context=1) == (6, 3)
  assert modes.loop_lengths(33, window=5, time_factor=TF, context=1) == (6, 3)
  assert modes.loop_lengths(16, window=5, time_factor=TF, context=1) == (2, 3)
  assert modes.loop_lengths(16, window=0, time_factor=TF, context=2) == (3, 2)  # no window
  assert modes.loop_known(3, 1).tolist() == [True, False, False, False, True]
  with pytest.raises(ValueError, match="more than 2 x context"):
    modes.loop_lengths(16, window=2, time_factor=TF, context=1)
  with pytest.raises(ValueError, match="multiple of 4"):
    modes.loop_lengths(18, window=5, time_factor=TF, context=1)


def test_loop_jump_compares_the_wrap_with_the_median_step():
  ramp = _video(5)  # steps of 10, wrap of 40
  assert loop_jump(ramp)["ratio"] == pytest.approx(4.0)
  cycle = np.concatenate([ramp, ramp[::-1][1:-1]])  # 5 15 25 35 45 35 25 15: wrap 10
  result = loop_jump(cycle)
  assert result["median_step"] == pytest.approx(10) and result["ratio"] == pytest.approx(1.0)


def test_check_video_reads_long_videos_chunk_by_chunk():
  from vidgen.data import moving_shapes as ms  # pylint: disable=g-import-not-at-top
  from vidgen.sample import check_video  # pylint: disable=g-import-not-at-top
  cfg = ms.ShapesConfig(height=64, width=64, frames=65, num_objects=1)
  objects = ms.sample_objects(cfg, "test", 0)
  prompt = ms.caption(objects)
  video = ms.render(objects, 65, 64, 64)
  steady = check_video(video, prompt, chunk=17)
  assert steady["check"]["color"] and steady["every_chunk"]["color"]
  assert steady["chunks"]["color"] == 1.0
  other = next(c for c in ms.COLOR_NAMES if c != objects[0].color)
  changed = ms.render([ms.ShapeObject(**{**vars(objects[0]), "color": other})], 65, 64, 64)
  video[40:] = changed[40:]  # the object turns another colour for the last chunks
  drifting = check_video(video, prompt, chunk=17)
  assert not drifting["every_chunk"]["color"] and 0 < drifting["chunks"]["color"] < 1
  assert "chunks" not in check_video(video[:17], prompt, chunk=17)
