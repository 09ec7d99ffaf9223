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
