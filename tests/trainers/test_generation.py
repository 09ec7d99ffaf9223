"""Generation with a random tiny stage-2 model: every mode keeps its given frames, long videos."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from vidgen import configlib
from vidgen.diffusion import long_video, modes
from vidgen.trainers import dit as dit_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIT_CONFIG = os.path.join(ROOT, "configs/shapes/dit.py")
LEN = 8  # caption tokens


@pytest.fixture(scope="module")
def model():
  config = configlib.load(DIT_CONFIG + ":smoke")
  config.unlock()
  config.text.max_len = LEN
  config.lock()
  models = dit_task.Models.from_config(config, vocab_size=32)
  params = meta.unbox(dit_task.init_params(models, LEN, jax.random.key(0)))
  c = params["latent"]["scale"].shape[0]
  params["latent"] = {"shift": jnp.linspace(-0.5, 0.5, c), "scale": jnp.full((c,), 0.5)}
  # The DiT's zero-initialised output layers would predict 0 everywhere: move every weight.
  leaves, tree = jax.tree.flatten(params["dit"])
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params["dit"] = jax.tree.unflatten(
      tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 32, (2, LEN)), jnp.int32)
  mask = jnp.arange(LEN)[None] < jnp.asarray([[5], [8]])
  gen = dit_task.Generator.from_config(config, models, steps=2, cfg=2.0)
  return config, gen, params, tokens, mask


def _rng_video(frames, seed, h=32, w=32):
  return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


def test_the_default_window_is_the_longest_training_bucket(model):
  _, gen, *_ = model
  assert gen.window == 2  # smoke buckets 5x32x32 and 5x16x48: 2 latent frames each
  assert gen.scheme == "autoregressive" and gen.time_factor == 4


@pytest.mark.parametrize("mode", ["i2v", "extend", "extend_back", "interpolate", "stitch"])
def test_every_mode_keeps_its_given_latent_frames_exactly(model, mode):
  _, gen, params, tokens, mask = model
  gen = dataclasses.replace(gen, window=0)  # one window: the modes alone
  images = [_rng_video(1, 1)[0], _rng_video(1, 2)[0]][:modes.INPUTS[mode][0]]
  videos = [_rng_video(9, 3), _rng_video(9, 4)][:modes.INPUTS[mode][1]]
  canvas = modes.build(mode, 13, 32, 32, time_factor=4, images=images, videos=videos)
  known_x0, known = gen.canvas_latents(params, canvas, 2)
  assert known.any() and not known.all()
  noise = jax.random.normal(jax.random.key(1), known_x0.shape)
  z = gen.sample_latents(params, tokens, mask, noise, known_x0, known)
  np.testing.assert_array_equal(np.asarray(z)[:, known], np.asarray(known_x0)[:, known])
  assert not np.allclose(np.asarray(z)[:, ~known], np.asarray(known_x0)[:, ~known])
  video = gen.decode_video(params, z)
  assert video.shape == (2, 13, 32, 32, 3) and video.dtype == np.uint8


def test_i2v_decodes_the_first_frame_as_the_vae_round_trip_of_the_image(model):
  _, gen, params, tokens, mask = model
  image = _rng_video(1, 5)[0]
  canvas = modes.build("i2v", 9, 32, 32, time_factor=4, images=[image])
  video = gen.generate(params, tokens, mask, (9, 32, 32), jax.random.key(2), canvas=canvas)
  round_trip = gen.decode(params, gen.encode(params, jnp.asarray(image)[None, None]))
  np.testing.assert_array_equal(video[:, 0], np.broadcast_to(np.asarray(round_trip)[0, 0],
                                                              video[:, 0].shape))


def test_the_same_seed_gives_the_same_video_and_another_seed_another(model):
  _, gen, params, tokens, mask = model
  a = gen.generate(params, tokens, mask, (9, 32, 32), jax.random.key(7))
  b = gen.generate(params, tokens, mask, (9, 32, 32), jax.random.key(7))
  c = gen.generate(params, tokens, mask, (9, 32, 32), jax.random.key(8))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_an_unseen_size_runs_and_one_beyond_the_tables_fails_naming_them(model):
  _, gen, params, tokens, mask = model
  video = gen.generate(params, tokens, mask, (5, 48, 80), jax.random.key(0))  # never trained
  assert video.shape == (2, 5, 48, 80, 3)
  with pytest.raises(ValueError, match="position tables"):
    gen.generate(params, tokens, mask, (5, 32, 8 * 2 * 9), jax.random.key(0))  # 9 > 8 columns
  brute = dataclasses.replace(gen, scheme="brute_force")
  with pytest.raises(ValueError, match="position tables"):
    brute.generate(params, tokens, mask, (1 + 4 * 16, 32, 32), jax.random.key(0))  # 17 > 16


@pytest.mark.parametrize("scheme", long_video.SCHEMES)
def test_long_videos_follow_the_plan_of_every_scheme(model, scheme):
  _, gen, params, tokens, mask = model
  gen = dataclasses.replace(gen, scheme=scheme, window=3, context=1)
  calls = []
  video = gen.generate(params, tokens, mask, (1 + 4 * 8, 32, 32), jax.random.key(3),
                       progress=lambda i, step: calls.append(step))
  plan = gen.plan(9)
  assert video.shape == (2, 33, 32, 32, 3)
  assert calls == list(plan.steps)
  assert len(plan.steps) == (1 if scheme == "brute_force" else len(calls)) and len(calls) >= 1
  if scheme != "brute_force":
    assert len(calls) > 1 and all(len(s.frames) == 3 for s in calls)


def test_a_long_extension_keeps_the_given_frames(model):
  _, gen, params, tokens, mask = model
  gen = dataclasses.replace(gen, window=3, context=1)
  canvas = modes.build("extend", 25, 32, 32, time_factor=4, context=2, videos=[_rng_video(9, 6)])
  known_x0, known = gen.canvas_latents(params, canvas, 2)
  assert known.tolist() == [True, True] + [False] * 5
  noise = jax.random.normal(jax.random.key(4), known_x0.shape)
  z = gen.sample_latents(params, tokens, mask, noise, known_x0, known)
  np.testing.assert_array_equal(np.asarray(z)[:, :2], np.asarray(known_x0)[:, :2])
  assert gen.plan(7, known).known == (0, 1)


def test_a_loop_is_a_clip_then_a_transition_made_on_its_latents_and_decoded_as_a_cycle(model):
  _, gen, params, tokens, mask = model
  gen = dataclasses.replace(gen, window=3, context=1)
  n, g = gen.loop_lengths(16, 1)  # 16 frames: latent frames 1..4 of a cycle
  assert (n, g) == (4, 1)
  noise = jax.random.normal(jax.random.key(6), (2, n, 4, 4, 4))
  bridge_noise = jax.random.normal(jax.random.key(7), (2, 2 + g, 4, 4, 4))
  z = np.asarray(gen.loop_latents(params, tokens, mask, noise, bridge_noise, 1))
  # The clip is the text-to-video pass of the same noise; the transition is new latents.
  np.testing.assert_array_equal(z[:, :n], np.asarray(gen.sample_latents(params, tokens, mask,
                                                                        noise)))
  assert z.shape == (2, n + g, 4, 4, 4) and not np.allclose(z[:, n:], z[:, n - 1:n])
  video = gen.decode_loop(params, jnp.asarray(z))
  assert video.shape == (2, 16, 32, 32, 3)
  # Each frame is decoded after the ones it follows on repeat: the clip's first
  # frames after the transition's last two latent frames, not after latent frame 0.
  cycle = np.asarray(gen.decode_video(params, jnp.asarray(np.concatenate([z[:, 3:], z[:, 1:]],
                                                                         1))))
  np.testing.assert_array_equal(video, cycle[:, 5:])
  plain = np.asarray(gen.decode_video(params, jnp.asarray(z)))
  assert not np.array_equal(video[:, :4], plain[:, 1:5])


def test_a_loop_with_a_temporal_patch_fails_clearly():
  config = configlib.load(DIT_CONFIG + ":smoke,variant=tiny/2x2x2")
  patched = dit_task.Generator.from_config(config, dit_task.Models.from_config(config,
                                                                              vocab_size=32))
  with pytest.raises(ValueError, match="temporal patch 1"):
    patched.loop_lengths(16, 1)


def test_guidance_on_the_given_frames_changes_the_sample_but_not_the_given_frames(model):
  _, gen, params, tokens, mask = model
  canvas = modes.build("i2v", 9, 32, 32, time_factor=4, images=[_rng_video(1, 9)[0]])
  known_x0, known = gen.canvas_latents(params, canvas, 2)
  noise = jax.random.normal(jax.random.key(5), known_x0.shape)
  plain = gen.sample_latents(params, tokens, mask, noise, known_x0, known)
  framed = dataclasses.replace(gen, cfg_frames=2.0)
  guided = framed.sample_latents(params, tokens, mask, noise, known_x0, known)
  np.testing.assert_array_equal(np.asarray(guided)[:, 0], np.asarray(known_x0)[:, 0])
  assert not np.allclose(np.asarray(guided), np.asarray(plain))


def test_max_span_keeps_windows_within_the_trained_clip_length(model):
  _, gen, *_ = model
  wide = dataclasses.replace(gen, scheme="hierarchical", window=3)
  assert wide.span == 16 and max(s.frames[-1] - s.frames[0] for s in wide.plan(12).steps) > 2
  narrow = dataclasses.replace(wide, max_span=3)
  assert narrow.span == 3
  assert all(s.frames[-1] - s.frames[0] < 3 for s in narrow.plan(12).steps)


def test_a_negative_prompt_replaces_the_empty_caption_in_guidance(model):
  _, gen, params, tokens, mask = model
  from vidgen.diffusion import masks  # pylint: disable=g-import-not-at-top
  noise = jax.random.normal(jax.random.key(3), (2, 2, 4, 4, params["latent"]["scale"].shape[0]))
  sample = lambda g, negative=None: np.asarray(
      g.sample_latents(params, tokens, mask, noise, negative=negative))
  plain = sample(gen)
  np.testing.assert_array_equal(plain, sample(gen, masks.empty_caption(*tokens.shape)))
  # The caption as its own negative: guidance adds scale x 0, the conditional model alone.
  np.testing.assert_allclose(sample(gen, (tokens, mask)),
                             sample(dataclasses.replace(gen, cfg=1.0)), atol=1e-6)
  other = jnp.flip(tokens, axis=0), jnp.flip(mask, axis=0)
  assert not np.allclose(sample(gen, other), plain, atol=1e-3)


def test_negative_prompts_come_from_one_flag_or_a_file_of_one_per_prompt(tmp_path):
  from absl.app import UsageError  # pylint: disable=g-import-not-at-top
  from vidgen.sample import read_negatives  # pylint: disable=g-import-not-at-top
  assert read_negatives(3, "", None) == ["", "", ""]
  assert read_negatives(2, " a red circle ", None) == ["a red circle"] * 2
  path = tmp_path / "negatives.txt"
  path.write_text("a red circle\n\na blue square\n")
  assert read_negatives(3, "", str(path)) == ["a red circle", "", "a blue square"]
  with pytest.raises(UsageError, match="3 lines for 2 prompts"):
    read_negatives(2, "", str(path))
  with pytest.raises(UsageError, match="not both"):
    read_negatives(3, "a circle", str(path))
