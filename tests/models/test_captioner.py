"""The video-caption model: shapes, causality, decoding, and overfitting one batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import meta

from vidgen.models import captioner as cap
from vidgen.text import tokenizer as tokenizer_lib

V, L = 24, 8
EOS, PAD = tokenizer_lib.EOS_ID, tokenizer_lib.PAD_ID


def _model(**kw):
  return cap.Captioner(vocab_size=V, max_len=L, patch=(2, 8, 8), max_frames=4, max_height=4,
                       max_width=4, width=32, depth=1, decoder_depth=1, heads=2, **kw)


def _videos(n=4, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, 5, 16, 16, 3), minval=-1, maxval=1)


def _captions(n=4):
  """Distinct captions of different lengths: ids 3.., then EOS, then pads."""
  tokens = np.zeros((n, L), np.int32)
  for i in range(n):
    length = 3 + i % 3
    tokens[i, :length] = 3 + (np.arange(length) * (i + 1)) % (V - 3)
    tokens[i, length] = EOS
  return jnp.asarray(tokens), jnp.asarray(tokens != PAD)


@pytest.fixture(scope="module")
def trained():
  """A tiny captioner overfitted to 4 (video, caption) pairs."""
  model = _model()
  videos = _videos()
  tokens, mask = _captions()
  params = meta.unbox(model.init(jax.random.key(0), videos, tokens)["params"])
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    def loss_fn(p):
      per, _ = cap.loss(model.apply({"params": p}, videos, tokens), tokens, mask)
      return per.mean()
    loss, g = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  for _ in range(300):
    params, opt, loss = step(params, opt)
  return model, params, videos, tokens, mask, float(loss)


def test_logits_have_the_vocabulary_and_padding_frames_is_harmless():
  model = _model()
  videos = _videos(2)
  tokens, _ = _captions(2)
  logits = model.apply(model.init(jax.random.key(1), videos, tokens), videos, tokens)
  assert logits.shape == (2, L, V) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(cap.pad_frames(videos, 2)[:, 5], videos[:, 4])


def test_the_decoder_is_causal():
  model = _model()
  videos = _videos(1)
  tokens, _ = _captions(1)
  variables = model.init(jax.random.key(2), videos, tokens)
  a = model.apply(variables, videos, tokens)
  changed = tokens.at[:, 4].set(7)  # input position 5 reads token 4
  b = model.apply(variables, videos, changed)
  np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
  assert not np.allclose(a[:, 5:], b[:, 5:])


def test_a_video_beyond_the_position_tables_fails_naming_the_section():
  model = _model()
  tokens, _ = _captions(1)
  with pytest.raises(ValueError, match="captioner.max_frames"):
    model.init(jax.random.key(0), jnp.zeros((1, 10, 16, 16, 3)), tokens)


def test_the_tiny_model_overfits_and_greedy_and_beam_read_the_captions(trained):
  model, params, videos, tokens, mask, loss = trained
  assert loss < 0.05
  greedy = jax.jit(cap.greedy, static_argnums=(0, 3))(model, params, videos, L)
  np.testing.assert_array_equal(np.asarray(greedy), np.asarray(tokens))
  again = jax.jit(cap.greedy, static_argnums=(0, 3))(model, params, videos, L)
  np.testing.assert_array_equal(np.asarray(greedy), np.asarray(again))  # deterministic
  ids, logp = cap.beam(model, params, videos, L, beams=3)
  np.testing.assert_array_equal(np.asarray(ids), np.asarray(tokens))
  assert logp.shape == (4,) and np.all(np.asarray(logp) <= 0)


def test_beam_scores_at_least_as_high_as_greedy_on_an_untrained_model():
  model = _model()
  videos = _videos(3, seed=5)
  tokens, _ = _captions(3)
  params = meta.unbox(model.init(jax.random.key(3), videos, tokens)["params"])
  greedy = cap.greedy(model, params, videos, L)

  def logp_of(ids):
    logits = model.apply({"params": params}, videos, ids)
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits), ids[..., None], -1)[..., 0]
    upto = jnp.cumsum(ids == EOS, axis=1) - (ids == EOS) == 0  # tokens up to the first EOS
    return jnp.sum(jnp.where(upto, lp, 0), axis=1)

  ids, logp = cap.beam(model, params, videos, L, beams=4)
  np.testing.assert_allclose(logp, logp_of(ids), rtol=1e-4, atol=1e-4)
  assert np.all(np.asarray(logp) >= np.asarray(logp_of(greedy)) - 1e-4)


def test_captions_end_at_the_first_eos():
  ids = jnp.asarray([[5, 6, EOS, 7, 8], [EOS, 3, 3, 3, 3]])
  np.testing.assert_array_equal(cap._finish(ids), [[5, 6, EOS, 0, 0], [EOS, 0, 0, 0, 0]])


def _shape_video(colour, shape):
  """One 4x16x16 clip, pixels in [-1, 1]: a filled square or disc of `colour` on black."""
  yy, xx = np.mgrid[:16, :16]
  inside = ((yy >= 3) & (yy < 11) & (xx >= 3) & (xx < 11) if shape == "square" else
            (yy - 7) ** 2 + (xx - 7) ** 2 <= 16)
  frame = np.where(inside[..., None], np.asarray(colour, np.float32), 0.0)
  return jnp.asarray(np.broadcast_to(frame / 127.5 - 1.0, (1, 4, 16, 16, 3)))


def test_luma_chroma_separates_the_outline_from_the_colour():
  red, cyan = (220, 40, 40), (40, 200, 220)  # the data set's colours: same max(R, G, B)
  patch = (4, 8, 8)
  luma_rs, chroma_rs = cap.luma_chroma(_shape_video(red, "square"), patch)
  luma_cs, chroma_cs = cap.luma_chroma(_shape_video(cyan, "square"), patch)
  luma_rc, chroma_rc = cap.luma_chroma(_shape_video(red, "circle"), patch)
  assert luma_rs.shape == (1, 1, 2, 2, 4 * 8 * 8) and chroma_rs.shape == (1, 1, 2, 2, 3)
  np.testing.assert_allclose(luma_rs, luma_cs, atol=1e-6)  # form: blind to the colour
  assert not np.allclose(luma_rs, luma_rc)  # ... but not to the outline
  covered = np.asarray(chroma_rs).sum(-1) > 0  # every tubelet the object touches
  assert covered.all()
  # Chroma: the colour over its value whatever the share of the tubelet it covers.
  np.testing.assert_allclose(np.asarray(chroma_rs)[covered], np.tile([1, 40 / 220, 40 / 220], (4, 1)),
                             atol=1e-3)
  np.testing.assert_allclose(chroma_rc, chroma_rs, atol=1e-3)
  np.testing.assert_allclose(chroma_cs[0, 0, 0, 0], [40 / 220, 200 / 220, 1.0], atol=1e-3)
  black = cap.luma_chroma(-jnp.ones((1, 4, 16, 16, 3)), patch)[1]
  np.testing.assert_array_equal(black, 0.0)


def test_the_luma_chroma_stem_lets_colour_in_only_through_chroma():
  model = _model(stem="luma_chroma")
  red, cyan = _shape_video((220, 40, 40), "circle"), _shape_video((40, 200, 220), "circle")
  params = meta.unbox(model.init(jax.random.key(0), red, _captions(1)[0])["params"])
  encode = lambda p, v: model.apply({"params": p}, v, method=cap.Captioner.encode)
  assert params["patch_embed"]["kernel"].shape[0] == 2 * 8 * 8  # one channel: the value
  assert not np.allclose(encode(params, red), encode(params, cyan), atol=1e-3)
  blind = jax.tree.map(lambda x: x, params)
  blind["chroma_embed"] = jax.tree.map(jnp.zeros_like, params["chroma_embed"])
  np.testing.assert_allclose(encode(blind, red), encode(blind, cyan), atol=1e-5)
  # bfloat16 compute: the tubelet sums stay float32, so the memory stays close.
  half = _model(stem="luma_chroma", dtype=jnp.bfloat16)
  low = half.apply({"params": params}, red, method=cap.Captioner.encode)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), encode(params, red), atol=0.1)
  with pytest.raises(ValueError, match="RGB pixels"):
    model.init(jax.random.key(0), jnp.zeros((1, 4, 16, 16, 4)), _captions(1)[0])
  with pytest.raises(ValueError, match="patch or luma_chroma"):
    _model(stem="rgb").init(jax.random.key(0), red, _captions(1)[0])
