"""The video-caption model (VCM) as a trainer Task, and captioning with a trained one.

Parameters, one tree:
  captioner  the video encoder and caption decoder (trained)
  vae        the stage-1 VAE (frozen), only with `captioner.input = "latents"`:
             loaded from `vae.checkpoint` on a fresh start; videos are encoded
             to posterior means on the fly

A step: videos (uint8, from the data pipeline) -> [-1, 1] pixels or VAE
latents -> teacher-forced cross-entropy of the caption tokens, with
`captioner.token_dropout` of the decoder's input tokens replaced by UNK (word
dropout: the decoder leans on the video, not on the caption so far, which
is what lets it name colour-shape pairs it never saw together). Evaluation
adds greedy decoding: exact-match captions. Pictures: clips with their true
and greedy captions.

`VideoCaptioner` (below) captions uint8 videos with a trained model: the
recaptioning tool and the evaluation of generated videos use it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vidgen.data import pipeline
from vidgen.models import captioner as captioner_lib
from vidgen.models import vae as vae_lib
from vidgen.parallel import rules as rules_lib
from vidgen.text import tokenizer as tokenizer_lib
from vidgen.trainers import loop
from vidgen.trainers.vae import to_float

BATCH_KEYS = ("video", "tokens", "token_mask")


@dataclasses.dataclass(frozen=True)
class Models:
  """The captioner and, for latent input, the frozen VAE.

  Attributes:
    captioner: the Captioner module.
    vae: the VAE (None for pixel input).
    max_len: caption tokens.
    value_channel: pixels get a 4th channel, max(R, G, B) (HSV value): a
      colour-blind view of the frame for shape.
  """

  captioner: captioner_lib.Captioner
  vae: vae_lib.VideoVAE | None
  max_len: int
  value_channel: bool = False

  @classmethod
  def from_config(cls, config, vocab_size: int | None = None) -> "Models":
    if vocab_size is None:
      vocab_size = tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config)).vocab_size
    vae = vae_lib.vae_from_config(config.vae) if config.captioner.input == "latents" else None
    return cls(captioner_lib.captioner_from_config(config, vocab_size), vae,
               int(config.text.max_len), bool(config.captioner.value_channel))

  def inputs(self, params, video) -> jax.Array:
    """uint8 videos (B, T, H, W, 3) -> the encoder's input (pixels in [-1, 1] or latents)."""
    x = to_float(video)
    if self.vae is None:
      if self.value_channel:
        x = jnp.concatenate([x, jnp.max(x, axis=-1, keepdims=True)], axis=-1)
      return x
    (mean, _), _ = self.vae.apply({"params": params["vae"]}, x, method=self.vae.encode)
    return jax.lax.stop_gradient(mean)

  def logits(self, params, video, tokens, rng=None, token_dropout: float = 0.0) -> jax.Array:
    """Teacher-forced logits (B, L, V); with `rng`, decoder inputs drop to UNK (word dropout)."""
    inputs = captioner_lib.shift_right(tokens)
    if rng is not None and token_dropout > 0:
      drop = jax.random.bernoulli(rng, token_dropout, inputs.shape)
      drop = drop & (jnp.arange(inputs.shape[1]) > 0)  # the start token stays
      inputs = jnp.where(drop, tokenizer_lib.UNK_ID, inputs)
    cap = self.captioner
    memory = cap.apply({"params": params["captioner"]}, self.inputs(params, video),
                       method=cap.encode)
    return cap.apply({"params": params["captioner"]}, memory, inputs, method=cap.decode)

  def greedy(self, params, video) -> jax.Array:
    """Greedy caption ids (B, max_len)."""
    return captioner_lib.greedy(self.captioner, params["captioner"], self.inputs(params, video),
                                self.max_len)

  def beam(self, params, video, beams: int, alpha: float = 0.0) -> jax.Array:
    """Beam-search caption ids (B, max_len)."""
    return captioner_lib.beam(self.captioner, params["captioner"], self.inputs(params, video),
                              self.max_len, beams, alpha)[0]


def _exact(pred: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """bool (B,): the predicted ids equal the caption's (padding ignored)."""
  return jnp.all(jnp.where(mask, pred == tokens, pred == tokenizer_lib.PAD_ID), axis=1)


def grads(params, batch, rng, step, *, models: Models, token_dropout: float = 0.0):
  del step

  def total(cap_params):
    logits = models.logits({**params, "captioner": cap_params}, batch["video"], batch["tokens"],
                           rng, token_dropout)
    per, aux = captioner_lib.loss(logits, batch["tokens"], batch["token_mask"])
    loss = jnp.mean(per)
    return loss, dict(loss=loss, token_acc=jnp.mean(aux["token_acc"]),
                      teacher_exact=jnp.mean(aux["exact"].astype(jnp.float32)))

  g, metrics = jax.grad(total, has_aux=True)(params["captioner"])
  out = {k: (g if k == "captioner" else jax.tree.map(jnp.zeros_like, v)) for k, v in params.items()}
  return out, metrics


def evaluate(params, batch, rng, *, models: Models):
  """Sums over the batch: loss, token accuracy, exact greedy captions."""
  del rng
  tokens, mask = batch["tokens"], batch["token_mask"]
  per, aux = captioner_lib.loss(models.logits(params, batch["video"], tokens), tokens, mask)
  exact = _exact(models.greedy(params, batch["video"]), tokens, mask)
  return dict(loss=jnp.sum(per), token_acc=jnp.sum(aux["token_acc"]),
              exact=jnp.sum(exact.astype(jnp.float32)),
              count=jnp.asarray(per.shape[0], jnp.float32))


def init_params(models: Models, rng) -> dict[str, Any]:
  """Fresh (boxed) params {captioner[, vae]} (they do not depend on the video size)."""
  r_cap, r_vae = jax.random.split(rng)
  video = jnp.zeros((1,) + tuple(models.captioner.patch) + (3,), jnp.uint8)  # one tubelet
  if models.vae is not None:
    tf, sf = vae_lib.time_factor(models.vae), vae_lib.space_factor(models.vae)
    video = jnp.zeros((1, 1 + tf, sf * models.captioner.patch[1],
                       sf * models.captioner.patch[2], 3), jnp.uint8)
  out = {}
  if models.vae is not None:
    out["vae"] = models.vae.init(r_vae, to_float(video), r_vae)["params"]
    x = jax.eval_shape(lambda p: models.inputs({"vae": p}, video), out["vae"])
    x = jnp.zeros(x.shape, x.dtype)
  else:
    x = models.inputs({}, video)
  tokens = jnp.zeros((1, models.max_len), jnp.int32)
  out["captioner"] = models.captioner.init(r_cap, x, tokens)["params"]
  return out


def make_task(config, for_inference: bool = False, vocab_size: int | None = None
              ) -> loop.Task:
  """The captioner as a Task; `for_inference`: to restore a trained model.

  `vocab_size`: the caption vocabulary without reading the tokenizer file
  (vidgen.aot; the pictures then need the file when they are drawn).
  """
  latent = config.captioner.input == "latents"
  if latent and not config.vae.checkpoint and not for_inference:
    raise ValueError("captioner.input=latents needs a trained VAE: set vae.checkpoint")
  if not for_inference:
    pipeline.ensure_tokenizer(config)
  models = Models.from_config(config, vocab_size)
  tokenizer = functools.cache(lambda: tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config)))
  greedy_jit = jax.jit(models.greedy)

  def pretrained(params):
    from vidgen.trainers import vae as vae_task  # pylint: disable=g-import-not-at-top
    _, vae_params, vae_step = loop.restore_for_inference(config, vae_task.make_task(config),
                                                         config.vae.checkpoint)
    logging.info("captioner: VAE of step %d from %s", vae_step, config.vae.checkpoint)
    return dict(params, vae=vae_params["vae"])

  def pictures(params, batch, rng):
    del rng
    from vidgen import viz  # pylint: disable=g-import-not-at-top
    n = min(4, np.shape(batch["video"])[0])
    video = np.asarray(batch["video"][:n])
    pred = np.asarray(greedy_jit(params, jnp.asarray(video)))
    captions = [f"true: {tokenizer().decode(t)} | greedy: {tokenizer().decode(p)}"
                for t, p in zip(np.asarray(batch["tokens"][:n]), pred)]
    return {"captions": np.asarray(viz.contact_sheet(list(video), captions))}

  return loop.Task(
      name="captioner", rules=rules_lib.TRANSFORMER, batch_keys=BATCH_KEYS,
      init=functools.partial(init_params, models),
      grads=functools.partial(grads, models=models,
                              token_dropout=float(config.captioner.token_dropout)),
      evaluate=functools.partial(evaluate, models=models), pictures=pictures,
      frozen=("vae",) if latent else (), pretrained=pretrained if latent else None)


@dataclasses.dataclass
class VideoCaptioner:
  """Captions uint8 videos with a trained captioner (jitted per video shape).

  Attributes:
    models: the modules.
    params: the trained params.
    tokenizer: the tokenizer it trained with.
    beams: 1 for greedy decoding, else beam search with that many beams.
  """

  models: Models
  params: Any
  tokenizer: tokenizer_lib.Tokenizer
  beams: int = 1

  @classmethod
  def restore(cls, config, directory: str, step: int | None = None, beams: int = 1
              ) -> tuple["VideoCaptioner", int]:
    task = make_task(config, for_inference=True)
    _, params, step = loop.restore_for_inference(config, task, directory, step)
    tokenizer = tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config))
    return cls(Models.from_config(config, tokenizer.vocab_size), params, tokenizer, beams), step

  @functools.cached_property
  def _ids(self):
    if self.beams > 1:
      return jax.jit(functools.partial(self.models.beam, beams=self.beams))
    return jax.jit(self.models.greedy)

  def ids(self, videos: np.ndarray) -> np.ndarray:
    """uint8 (B, T, H, W, 3) -> caption ids (B, max_len)."""
    return np.asarray(self._ids(self.params, jnp.asarray(videos)))

  def __call__(self, videos: np.ndarray) -> list[str]:
    """uint8 (B, T, H, W, 3) -> captions."""
    return [self.tokenizer.decode(ids) for ids in self.ids(videos)]
