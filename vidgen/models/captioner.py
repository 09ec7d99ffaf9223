"""The video-caption model (VCM): a video encoder and a caption decoder with cross-attention.

Video (B, T, H, W, C): pixels in [-1, 1] (C = 3) or VAE latents, by config.
It is cut into `patch` tubelets (the last frame repeated so T divides),
embedded, given learned factorised positions and run through `depth`
bidirectional encoder blocks -> memory (B, N, D).

Stems: `patch` embeds each tubelet's values with one linear map. `luma_chroma`
(RGB pixels only) splits colour from form, as codecs subsample chroma: the
linear map sees only the tubelet's value max(R, G, B) (colour-blind, full
resolution), and a second map adds the tubelet's one chroma vector
sum(RGB) / sum(value) over its pixels (in [0, 1] units; zero on black), which
says which colour is there but not its outline. Shape features then cannot
be learnt per colour in the stem, the shortcut that keeps a captioner from
naming colours and shapes it never saw together. The decoder embeds caption
tokens with learned positions and runs `decoder_depth` blocks of causal
self-attention, cross-attention to the memory and an MLP; logits come from
the token embedding (tied weights).

Teacher forcing: the decoder reads [START, y_0, ..., y_{L-2}] and predicts
y_0 .. y_{L-1}, the tokenizer's ids (vidgen.text.tokenizer: EOS ends every
caption, 0 pads). START is the pad id, as in T5. `greedy` and `beam` decode
with the whole prefix recomputed each step (captions are short), jitted with
a fixed length.

Shape legend: B batch, T frames, H, W, C, N video tokens, L caption tokens,
D width, V vocabulary, K beams.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen.models import attention, patches
from vidgen.models.layers import dense, partitioned
from vidgen.parallel import axes
from vidgen.text import tokenizer as tokenizer_lib
from vidgen.text.encoder import MLP, EncoderBlock, layer_norm

Array = jax.Array
Dtype = Any
START_ID = tokenizer_lib.PAD_ID


def pad_frames(video: Array, pt: int) -> Array:
  """Repeats the last frame so the frame count divides by `pt`."""
  extra = -video.shape[1] % pt
  if not extra:
    return video
  return jnp.concatenate([video, jnp.repeat(video[:, -1:], extra, axis=1)], axis=1)


class DecoderBlock(nn.Module):
  """x + causal self-attention, x + cross-attention to the video, x + MLP (pre-LN).

  Attributes:
    heads: attention heads.
    mlp_ratio: MLP hidden width / D.
    dtype, param_dtype: compute and parameter dtypes.
  """

  heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, memory: Array) -> Array:
    """x (B, L, D), memory (B, N, D) -> (B, L, D)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    length = x.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]  # 1 1 L L
    h = layer_norm("norm_self", **kw)(x)
    x = x + attention.Attention(self.heads, name="self_attn", **kw)(h, mask=causal)
    h = layer_norm("norm_cross", **kw)(x)
    x = x + attention.Attention(self.heads, name="cross_attn", **kw)(h, memory)
    h = layer_norm("norm_mlp", **kw)(x)
    return x + MLP(int(x.shape[-1] * self.mlp_ratio), name="mlp", **kw)(h)


class Captioner(nn.Module):
  """Video encoder + caption decoder.

  Attributes:
    vocab_size: V.
    max_len: longest caption in tokens (decoder positions).
    patch: (pt, ph, pw) tubelet of the video encoder.
    max_frames, max_height, max_width: position tables in tubelets.
    stem: `patch` or `luma_chroma` (module docstring).
    width: D.
    depth: encoder blocks.
    decoder_depth: decoder blocks.
    heads: attention heads.
    mlp_ratio: MLP hidden width / D.
    dtype, param_dtype: compute and parameter dtypes.
  """

  vocab_size: int
  max_len: int
  patch: tuple[int, int, int] = (4, 16, 16)
  max_frames: int = 16
  max_height: int = 16
  max_width: int = 16
  stem: str = "patch"
  width: int = 128
  depth: int = 2
  decoder_depth: int = 2
  heads: int = 4
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.patch_embed = dense(self.width, name="patch_embed", names=(None, axes.EMBED), **kw)
    if self.stem == "luma_chroma":
      self.chroma_embed = dense(self.width, name="chroma_embed", names=(None, axes.EMBED), **kw)
    elif self.stem != "patch":
      raise ValueError(f"captioner stem {self.stem!r}: must be patch or luma_chroma")
    self.positions = patches.Positions(self.width, self.max_frames, self.max_height,
                                       self.max_width, table_init="normal",
                                       param_dtype=self.param_dtype)
    self.encoder = [EncoderBlock(self.heads, self.mlp_ratio, name=f"enc_{i}", **kw)
                    for i in range(self.depth)]
    self.encoder_norm = layer_norm("enc_norm", **kw)
    self.embed = nn.Embed(self.vocab_size, self.width, param_dtype=self.param_dtype,
                          embedding_init=partitioned(nn.initializers.normal(0.02), axes.VOCAB,
                                                     axes.EMBED))
    self.token_pos = self.param("token_pos", partitioned(nn.initializers.normal(0.02), axes.TABLE,
                                                         axes.EMBED),
                                (self.max_len, self.width), self.param_dtype)
    self.decoder = [DecoderBlock(self.heads, self.mlp_ratio, name=f"dec_{i}", **kw)
                    for i in range(self.decoder_depth)]
    self.decoder_norm = layer_norm("dec_norm", **kw)

  def encode(self, video: Array) -> Array:
    """video (B, T, H, W, C) float -> memory (B, N, D)."""
    video = pad_frames(video, self.patch[0])
    if self.stem == "luma_chroma":  # sums over a tubelet's pixels: float32, then the compute dtype
      luma, chroma = luma_chroma(video.astype(jnp.float32), self.patch)
      x = self.patch_embed(luma.astype(self.dtype)) + self.chroma_embed(chroma.astype(self.dtype))
    else:
      x = self.patch_embed(patches.patchify(video.astype(self.dtype), self.patch))
    b, t, h, w, _ = x.shape
    patches.check_grid((t, h, w), self.max_frames, self.max_height, self.max_width,
                       section="captioner")
    tt, hh, ww = jnp.meshgrid(jnp.arange(t), jnp.arange(h), jnp.arange(w), indexing="ij")
    x = x + self.positions(tt, hh, ww).astype(self.dtype)  # B T' H' W' D
    x = x.reshape(b, t * h * w, self.width)
    x = nn.with_logical_constraint(x, (axes.BATCH, None, None))
    everything = jnp.ones((b, t * h * w), bool)
    for block in self.encoder:
      x = block(x, everything)
    return self.encoder_norm(x)

  def decode(self, memory: Array, inputs: Array) -> Array:
    """memory (B, N, D), decoder inputs (B, L) int32 -> logits (B, L, V) float32."""
    length = inputs.shape[1]
    if length > self.max_len:
      raise ValueError(f"captions of {length} tokens; the captioner takes at most {self.max_len}")
    x = (self.embed(inputs) + self.token_pos[None, :length]).astype(self.dtype)
    for block in self.decoder:
      x = block(x, memory)
    x = self.decoder_norm(x)
    return self.embed.attend(x.astype(self.param_dtype)).astype(jnp.float32)

  def __call__(self, video: Array, tokens: Array) -> Array:
    """Teacher-forced logits (B, L, V) for target tokens (B, L)."""
    return self.decode(self.encode(video), shift_right(tokens))


def luma_chroma(video: Array, patch: tuple[int, int, int]) -> tuple[Array, Array]:
  """RGB pixels (B, T, H, W, 3) in [-1, 1] -> the `luma_chroma` stem's inputs.

  Returns the tubelets of the value channel max(R, G, B) in [-1, 1]
  (B, T', H', W', pt*ph*pw) and one chroma vector per tubelet (B, T', H', W', 3):
  sum(RGB) / sum(value) over its pixels in [0, 1] units, so (1, 0.18, 0.18)
  for any red outline and zero where the tubelet is black.
  """
  if video.shape[-1] != 3:
    raise ValueError(f"the luma_chroma stem reads RGB pixels; got {video.shape[-1]} channels")
  rgb = patches.patchify((video + 1.0) / 2.0, patch)  # in [0, 1]
  rgb = rgb.reshape(rgb.shape[:-1] + (-1, 3))  # B T' H' W' P 3
  value = jnp.max(rgb, axis=-1)  # B T' H' W' P
  chroma = rgb.sum(axis=-2) / (value.sum(axis=-1, keepdims=True) + 1e-3)
  return value * 2.0 - 1.0, chroma


def shift_right(tokens: Array) -> Array:
  """Decoder inputs [START, y_0 .. y_{L-2}] for targets y (B, L)."""
  start = jnp.full(tokens.shape[:1] + (1,), START_ID, tokens.dtype)
  return jnp.concatenate([start, tokens[:, :-1]], axis=1)


def loss(logits: Array, tokens: Array, mask: Array) -> tuple[Array, dict[str, Array]]:
  """Per-caption mean cross-entropy (B,) over masked-in tokens, and token accuracy (B,)."""
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]  # B L
  m = mask.astype(jnp.float32)
  count = jnp.maximum(m.sum(axis=1), 1.0)
  right = (jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32)
  return (nll * m).sum(axis=1) / count, {"token_acc": (right * m).sum(axis=1) / count,
                                        "exact": jnp.all((right > 0) | ~mask, axis=1)}


def _finish(tokens: Array) -> Array:
  """Pads every position after the first EOS (B, L)."""
  eos = tokens == tokenizer_lib.EOS_ID
  after = jnp.cumsum(eos, axis=1) - eos > 0
  return jnp.where(after, tokenizer_lib.PAD_ID, tokens)


def _no_pad(scores: Array) -> Array:
  """Scores (..., V) with the pad id ruled out: a caption ends with EOS, never with a pad."""
  return scores.at[..., tokenizer_lib.PAD_ID].set(-1e9)


def greedy(model: Captioner, params: Any, video: Array, length: int) -> Array:
  """Greedy captions (B, length) int32: ids up to and including EOS, then pads."""
  memory = model.apply({"params": params}, video, method=Captioner.encode)
  b = video.shape[0]

  def step(i, tokens):
    logits = model.apply({"params": params}, memory, shift_right(tokens), method=Captioner.decode)
    nxt = jnp.argmax(_no_pad(logits[:, i]), axis=-1).astype(jnp.int32)
    return tokens.at[:, i].set(nxt)

  tokens = jax.lax.fori_loop(0, length, step, jnp.zeros((b, length), jnp.int32))
  return _finish(tokens)


def beam(model: Captioner, params: Any, video: Array, length: int, beams: int = 4,
         alpha: float = 0.0) -> tuple[Array, Array]:
  """Beam search: (captions (B, length) int32, log-probabilities (B,)) of the best beam.

  Finished beams (EOS emitted) keep their score and only extend with pads;
  the score is log p / ((5 + n) / 6) ** alpha (GNMT length penalty; alpha 0:
  plain log-probability), n the caption's length.
  """
  memory = model.apply({"params": params}, video, method=Captioner.encode)
  b = video.shape[0]
  memory = jnp.repeat(memory, beams, axis=0)  # B*K N D
  neg = jnp.float32(-1e9)
  tokens = jnp.zeros((b, beams, length), jnp.int32)
  logp = jnp.where(jnp.arange(beams)[None] == 0, 0.0, neg) * jnp.ones((b, 1))  # B K
  done = jnp.zeros((b, beams), bool)

  def step(i, carry):
    tokens, logp, done = carry
    logits = model.apply({"params": params}, memory, shift_right(tokens.reshape(b * beams, -1)),
                         method=Captioner.decode)[:, i]
    lp = _no_pad(jax.nn.log_softmax(logits)).reshape(b, beams, -1)  # B K V
    vocab = lp.shape[-1]
    pad_only = jnp.where(jnp.arange(vocab) == tokenizer_lib.PAD_ID, 0.0, neg)  # V
    lp = jnp.where(done[..., None], pad_only, lp)
    total = (logp[..., None] + lp).reshape(b, beams * vocab)
    top, idx = jax.lax.top_k(total, beams)  # B K
    src, tok = idx // vocab, (idx % vocab).astype(jnp.int32)
    tokens = jnp.take_along_axis(tokens, src[..., None], axis=1).at[:, :, i].set(tok)
    done = jnp.take_along_axis(done, src, axis=1) | (tok == tokenizer_lib.EOS_ID)
    return tokens, top, done

  tokens, logp, done = jax.lax.fori_loop(0, length, step, (tokens, logp, done))
  n = jnp.sum(tokens != tokenizer_lib.PAD_ID, axis=-1).astype(jnp.float32)
  score = logp / ((5.0 + n) / 6.0) ** alpha
  best = jnp.argmax(score, axis=1)  # B
  pick = lambda a: jnp.take_along_axis(a, best[:, None, None] if a.ndim == 3 else best[:, None],
                                       axis=1)[:, 0]
  return _finish(pick(tokens)), pick(logp)


def captioner_from_config(config: Any, vocab_size: int) -> Captioner:
  """The Captioner `config.captioner` describes (decoder positions: text.max_len)."""
  c = config.captioner
  return Captioner(
      vocab_size=int(vocab_size), max_len=int(config.text.max_len),
      patch=tuple(int(p) for p in c.patch), max_frames=int(c.max_frames),
      max_height=int(c.max_height), max_width=int(c.max_width),
      stem=str(c.get("stem", "patch")), width=int(c.width), depth=int(c.depth),
      decoder_depth=int(c.decoder_depth), heads=int(c.heads),
      mlp_ratio=float(c.mlp_ratio), dtype=jnp.dtype(c.dtype),
      param_dtype=jnp.dtype(c.param_dtype))
