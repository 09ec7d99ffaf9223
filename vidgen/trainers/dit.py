"""Stage 2: the Video DiT and the text encoder on VAE latents, as a trainer Task.

Parameters, one tree (so a checkpoint holds everything sampling needs):
  dit     the Video DiT (trained)
  text    the text encoder (trained, or frozen by `text.encoder.trainable`)
  vae     the stage-1 VAE (frozen; loaded from `vae.checkpoint` on a fresh start)
  latent  {"shift": (C,), "scale": (C,)}: the DiT sees (z - shift) * scale (frozen;
          `dit.latent_norm`: "scalar" one 1 / std for every channel and no shift,
          "channel" each channel's mean and 1 / std; `dit.latent_scale` fixes a
          scalar scale; from the cached latents' metadata, else measured on
          training batches)

A step: latents (cached posterior mean and log-variance, or encoded on the
fly by the frozen VAE) -> a posterior sample times the scale -> for clips
longer than `diffusion.fdm.frames` latent frames, a sorted FDM subset of
frames at their true indices -> known-frame masks (`diffusion.masks`) and
caption dropout -> the diffusion loss on the unknown frames
(vidgen.diffusion.flow.loss).

`Generator` turns prompts into videos (classifier-free guidance, known
frames, any shape within the position tables); the trainer's pictures, the
demo and `vidgen.sample` use it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vidgen.data import buckets as buckets_lib
from vidgen.data import latents as latents_lib
from vidgen.data import pipeline
from vidgen.diffusion import flow, long_video, masks, modes, samplers
from vidgen.eval import metrics as eval_metrics
from vidgen.models import dit as dit_lib
from vidgen.models import patches as patches_lib
from vidgen.models import vae as vae_lib
from vidgen.parallel import multihost
from vidgen.parallel import rules as rules_lib
from vidgen.text import encoder as encoder_lib
from vidgen.text import tokenizer as tokenizer_lib
from vidgen.trainers import loop
from vidgen.trainers import vae as vae_task
from vidgen.trainers.vae import to_float, to_uint8

LATENT_KEYS = ("mean", "logvar", "tokens", "token_mask")
VIDEO_KEYS = ("video", "tokens", "token_mask")


@dataclasses.dataclass(frozen=True)
class Models:
  """The modules of stage 2 and the noise process.

  Attributes:
    dit: the Video DiT.
    text: the text encoder.
    vae: the (frozen) VAE.
    diffusion: flow.RectifiedFlow or flow.DDPM.
  """

  dit: dit_lib.VideoDiT
  text: encoder_lib.TextEncoder
  vae: vae_lib.VideoVAE
  diffusion: Any

  @classmethod
  def from_config(cls, config, vocab_size: int | None = None) -> "Models":
    if vocab_size is None:
      vocab_size = tokenizer_lib.Tokenizer(pipeline.tokenizer_path(config)).vocab_size
    return cls(
        dit=dit_lib.dit_from_config(config),
        text=encoder_lib.encoder_from_config(config.text, vocab_size, config.dit.dtype,
                                             config.dit.param_dtype),
        vae=vae_lib.vae_from_config(config.vae),
        diffusion=flow.from_config(config.diffusion))

  def latent_grid(self, shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Pixel (T, H, W) -> latent (T', H', W', C)."""
    return vae_lib.latent_shape(self.vae, shape)

  def tokens_per_clip(self, latent_thw: tuple[int, int, int]) -> int:
    return math.prod(patches_lib.grid_shape(latent_thw, self.dit.patch))

  def encode_text(self, params, tokens, mask):
    emb, mask = self.text.apply({"params": params["text"]}, tokens, mask)
    return emb, mask


def _latents(models: Models, params, batch, rng) -> jax.Array:
  """Scaled posterior samples (B, T', H', W', C), no gradient."""
  if "mean" in batch:
    mean, logvar = batch["mean"], batch["logvar"]
  else:
    vae = models.vae
    (mean, logvar), _ = vae.apply({"params": params["vae"]}, to_float(batch["video"]),
                                  method=vae.encode)
  z = vae_lib.sample(mean.astype(jnp.float32), logvar.astype(jnp.float32), rng)
  return jax.lax.stop_gradient(normalize_latents(params, z))


def normalize_latents(params, z: jax.Array) -> jax.Array:
  """VAE latents (..., C) -> the DiT's: (z - shift) * scale, per channel."""
  lat = params["latent"]
  return (z - lat["shift"]) * lat["scale"]


def denormalize_latents(params, z: jax.Array) -> jax.Array:
  """The DiT's latents (..., C) -> the VAE's: z / scale + shift."""
  lat = params["latent"]
  return z / lat["scale"] + lat["shift"]


def _conditioning(models: Models, cfg, z, rng):
  """(z, frame_index, known) after the FDM subset and the known-frame masks."""
  b, t = z.shape[:2]
  sub_rng, mask_rng = jax.random.split(rng)
  frames = int(cfg.fdm.frames)
  if 0 < frames < t:
    frame_index = masks.fdm_subset(sub_rng, b, t, frames)  # B F
    z = jnp.take_along_axis(z, frame_index[:, :, None, None, None], axis=1)
  else:
    frame_index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
  pt = models.dit.patch[0]
  known = masks.sample_known(mask_rng, b, z.shape[1] // pt, dict(cfg.masks))
  return z, frame_index, jnp.repeat(known, pt, axis=1)


def loss_terms(params, batch, rng, *, models: Models, cfg):
  """Per-clip losses (B,) and aux of one batch; `cfg` is the config's `diffusion` section."""
  lat_rng, cond_rng, drop_rng, loss_rng = jax.random.split(rng, 4)
  z = _latents(models, params, batch, lat_rng)
  z, frame_index, known = _conditioning(models, cfg, z, cond_rng)
  tokens, tmask, _ = masks.drop_captions(drop_rng, batch["tokens"], batch["token_mask"],
                                         cfg.caption_dropout)
  text, tmask = models.encode_text(params, tokens, tmask)

  def model_fn(x_t, t_frames):
    return models.dit.apply({"params": params["dit"]}, x_t, t_frames, text, tmask, frame_index)

  n_tokens = models.tokens_per_clip(z.shape[1:4])
  per_clip, aux = flow.loss(models.diffusion, model_fn, z, known, loss_rng, n_tokens)
  return per_clip, dict(aux, known_frac=jnp.mean(known.astype(jnp.float32), axis=1))


def grads(params, batch, rng, step, *, models: Models, cfg, trainable: tuple[str, ...]):
  """Gradients of the mean loss for the `trainable` groups; zeros for the frozen ones."""
  del step

  def total(train_params):
    per_clip, aux = loss_terms({**params, **train_params}, batch, rng, models=models, cfg=cfg)
    loss = jnp.mean(per_clip)
    return loss, dict(loss=loss, x0_mse=jnp.mean(aux["x0_mse"]),
                      known_frac=jnp.mean(aux["known_frac"]))

  g, metrics = jax.grad(total, has_aux=True)({k: params[k] for k in trainable})
  out = {k: g[k] if k in g else jax.tree.map(jnp.zeros_like, v) for k, v in params.items()}
  return out, metrics


def evaluate(params, batch, rng, *, models: Models, cfg):
  """Sums of the validation loss (fixed rng: the same times and noise every evaluation)."""
  per_clip, aux = loss_terms(params, batch, rng, models=models, cfg=cfg)
  return dict(loss=jnp.sum(per_clip), x0_mse=jnp.sum(aux["x0_mse"]),
              count=jnp.asarray(per_clip.shape[0], jnp.float32))


# ---------------------------------------------------------------------------
# Generation.


@dataclasses.dataclass(frozen=True)
class Generator:
  """Prompts (and given frames) -> videos with a trained stage-2 model.

  A video of T' latent frames is made in one window when T' <= `window` (or
  `window` is 0, or the scheme is brute_force), else by a Flexible Diffusion
  Modeling plan of windows (vidgen.diffusion.long_video); given frames (a
  modes.Canvas) are encoded by the VAE and held fixed. Plans count patch
  frames (latent frames / the DiT's temporal patch); positions are relative
  to each window's first frame.

  Attributes:
    models: the stage-2 modules.
    sampler: euler | heun (flow), ddim | dpm++2m (ddpm).
    steps: sampler steps.
    cfg: classifier-free guidance scale on the text (1: no guidance).
    cfg_frames: guidance scale on the given frames (1: none; else three
      model calls per step, samplers.guided_frames).
    shift: flow time-grid shift (0: none).
    window: latent frames per sampler call for long videos (0: all at once).
    scheme: long_video scheme for videos longer than the window.
    context: conditioning frames per window (autoregressive, long_range;
      None: half the window).
    max_span: latent frames a window may span (long_range and hierarchical
      reach back that far; None: the position table). Set it to the clip
      length the DiT trained on: positions beyond it were never trained.
  """

  models: Models
  sampler: str = "euler"
  steps: int = 30
  cfg: float = 4.0
  cfg_frames: float = 1.0
  shift: float = 0.0
  window: int = 0
  scheme: str = "autoregressive"
  context: int | None = None
  max_span: int | None = None

  @classmethod
  def from_config(cls, config, models: Models | None = None, **overrides) -> "Generator":
    s = config.diffusion.sample
    models = models or Models.from_config(config)
    kw = dict(sampler=s.sampler, steps=int(s.steps), cfg=float(s.cfg),
              cfg_frames=float(s.cfg_frames), shift=float(s.shift),
              window=int(s.window) or default_window(config, models), scheme=s.scheme,
              context=int(s.context) or None, max_span=int(s.max_span) or None)
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return cls(models, **kw)

  @property
  def time_factor(self) -> int:
    return vae_lib.time_factor(self.models.vae)

  def check_shape(self, latent_thw: tuple[int, int, int]) -> None:
    """Raises ValueError, naming the limits, for a window outside the position tables."""
    d = self.models.dit
    t, h, w = latent_thw
    if self.window and self.scheme != "brute_force":
      t = min(t, self.window)
    patches_lib.check_grid(patches_lib.grid_shape((t, h, w), d.patch), d.max_frames,
                           d.max_height, d.max_width)

  @functools.partial(jax.jit, static_argnums=(0,))
  def latents(self, params, tokens, token_mask, noise, known_x0=None, known=None,
              frame_index=None, negative=None):
    """Scaled latents (B, T', H', W', C) from noise of that shape: one window (jitted per shape).

    `negative`: (tokens, mask) of negative prompts (B, Lt), the caption that
    guidance steers away from in place of the empty one; None: the empty caption.
    """
    m = self.models
    text, tmask = m.encode_text(params, tokens, token_mask)
    b, lt = tokens.shape
    if negative is None:
      negative = masks.empty_caption(b, lt)
    null_text, null_mask = m.encode_text(params, *negative)

    def model_fn(x_t, t_frames, cond):
      emb, mask = (text, tmask) if cond else (null_text, null_mask)
      return m.dit.apply({"params": params["dit"]}, x_t, t_frames, emb, mask, frame_index)

    if known is not None and self.cfg_frames != 1:
      fn = samplers.guided_frames(model_fn, m.diffusion, self.cfg, self.cfg_frames, known,
                                  known_x0, noise)
    else:
      fn = samplers.guided(model_fn, self.cfg)
    return samplers.sample(m.diffusion, fn, noise, sampler=self.sampler, steps=self.steps,
                           known_x0=known_x0, known=known, shift=self.shift)

  @functools.partial(jax.jit, static_argnums=(0,))
  def encode(self, params, video):
    """uint8 videos (B, T, H, W, 3) -> scaled posterior means (B, T', H', W', C)."""
    vae = self.models.vae
    (mean, _), _ = vae.apply({"params": params["vae"]}, to_float(video), method=vae.encode)
    return normalize_latents(params, mean)

  @functools.partial(jax.jit, static_argnums=(0,))
  def decode(self, params, z):
    """Scaled latents -> uint8 videos (B, T, H, W, 3)."""
    vae = self.models.vae
    y, _ = vae.apply({"params": params["vae"]}, denormalize_latents(params, z),
                   method=vae.decode)
    return to_uint8(y)

  def decode_video(self, params, z) -> np.ndarray:
    """Like `decode`, but latents longer than the window are decoded a window at a time."""
    chunk = self.window or z.shape[1]
    if z.shape[1] <= chunk:
      return np.asarray(self.decode(params, z))
    y = vae_lib.decode_chunked(self.models.vae, params["vae"],
                               denormalize_latents(params, z), chunk)
    return np.asarray(to_uint8(y))

  def plan(self, latent_frames: int, known: np.ndarray | None = None) -> long_video.Plan:
    """The plan (in patch frames) for a video of `latent_frames` latent frames."""
    pt = self.models.dit.patch[0]
    if latent_frames % pt:
      raise ValueError(f"{latent_frames} latent frames do not split into temporal patches "
                       f"of {pt}")
    n = latent_frames // pt
    given = () if known is None else tuple(int(i) for i in np.flatnonzero(
        np.asarray(known, bool).reshape(n, pt).all(axis=1)))
    window = self.window // pt if self.window else n
    if self.scheme == "brute_force" or n <= window:
      return long_video.make_plan("brute_force", n, n, known=given)
    return long_video.make_plan(self.scheme, n, window, known=given, context=self.context,
                                max_span=self.span)

  @property
  def span(self) -> int:
    """Largest span (in patch frames) of a window's frames: max_span, else the position table."""
    table = self.models.dit.max_frames
    return min(self.max_span // self.models.dit.patch[0], table) if self.max_span else table

  def sample_latents(self, params, tokens, token_mask, noise, known_x0=None, known=None,
                     progress=None, negative=None) -> jax.Array:
    """Scaled latents (B, T', H', W', C) of any length from noise of that shape.

    Args:
      params, tokens, token_mask, negative: as `latents`.
      noise: (B, T', H', W', C) starting noise of the whole video.
      known_x0: (B, T', H', W', C) scaled latents of the given frames.
      known: bool (T',) given latent frames (a temporal patch counts as given
        only when all its frames are).
      progress: called with (step index, long_video.Step) after each window.
    """
    b, t = noise.shape[:2]
    pt = self.models.dit.patch[0]
    plan = self.plan(t, known)
    self.check_shape(noise.shape[1:4] if len(plan.steps) <= 1 else
                     (plan.window * pt,) + tuple(noise.shape[2:4]))
    if known_x0 is None:
      known_x0 = jnp.zeros_like(noise)
    grouped = lambda x: x.reshape((b, -1, pt) + x.shape[2:])  # B T/pt pt H W C

    def window_fn(x_win, cond, pos, i):
      frames = np.asarray(plan.steps[i].frames)
      w = len(frames) * pt
      lat = lambda x: x.reshape((b, w) + x.shape[3:])
      frame_index = (pos[:, None] * pt + np.arange(pt)).reshape(-1)
      out = self.latents(params, tokens, token_mask, lat(grouped(noise)[:, frames]), lat(x_win),
                         jnp.broadcast_to(jnp.repeat(jnp.asarray(cond), pt), (b, w)),
                         jnp.broadcast_to(jnp.asarray(frame_index, jnp.int32), (b, w)),
                         negative)
      return grouped(out)

    z = long_video.run(plan, window_fn, grouped(jnp.asarray(known_x0, noise.dtype)),
                       progress=progress)
    return jnp.reshape(z, noise.shape)

  def loop_lengths(self, frames: int, context: int) -> tuple[int, int]:
    """(n, g) of a loop of `frames` pixel frames (modes.loop_lengths) with this window.

    Raises ValueError for a DiT with a temporal patch above 1: the cycle
    starts at latent frame 1, which is not a patch boundary.
    """
    pt = self.models.dit.patch[0]
    if pt != 1:
      raise ValueError(f"loop needs a DiT with temporal patch 1 (the cycle starts at latent "
                       f"frame 1); this one has {pt}")
    return modes.loop_lengths(frames, self.window, self.time_factor, context)

  def loop_latents(self, params, tokens, token_mask, noise, bridge_noise, context: int = 1,
                   negative=None) -> jax.Array:
    """Scaled latents (B, n + g, H', W', C) of a loop (modes.loop_lengths): z, then g more.

    `noise` (B, n, ...) makes a text-to-video clip z; `bridge_noise`
    (B, 2 context + g, ...) makes the transition, one window generated
    between z's last `context` latent frames and its latent frames
    1 .. context, on z's own latents (a pixel round trip through the VAE
    moves a still clip by more than its frame-to-frame flicker). The
    loop is latent frames 1 .. n + g - 1 (`decode_loop`). `negative`: as
    `latents`, for both passes.
    """
    c = context
    g = bridge_noise.shape[1] - 2 * c
    z = self.sample_latents(params, tokens, token_mask, noise, negative=negative)
    gap = jnp.zeros((z.shape[0], g) + z.shape[2:], z.dtype)
    known_x0 = jnp.concatenate([z[:, z.shape[1] - c:], gap, z[:, 1:1 + c]], axis=1)
    bridge = self.sample_latents(params, tokens, token_mask, bridge_noise, known_x0,
                                 modes.loop_known(g, c), negative=negative)
    return jnp.concatenate([z, bridge[:, c:c + g]], axis=1)

  def decode_loop(self, params, z, warm: int = 2) -> np.ndarray:
    """uint8 (B, f (L - 1), H, W, 3) pixels of the cycle z[:, 1:] of `loop_latents`' z (B, L, ...).

    Decoded as a cycle: the causal decoder first reads the cycle's last
    `warm` latent frames (their pixels are dropped), so latent frame 1 is
    decoded after the frames it follows on repeat, as every other frame is.
    """
    warm = min(warm, z.shape[1] - 1)
    pixels = self.decode_video(params, jnp.concatenate([z[:, z.shape[1] - warm:], z[:, 1:]], 1))
    return pixels[:, 1 + self.time_factor * (warm - 1):]

  def generate(self, params, tokens, token_mask, shape: tuple[int, int, int], rng,
               canvas=None, progress=None, negative=None) -> np.ndarray:
    """uint8 (B, T, H, W, 3) videos of pixel `shape` (T, H, W); `canvas`: the given frames.

    `negative`: as `latents`.
    """
    lt, lh, lw, c = self.models.latent_grid(shape)
    self.check_shape((lt, lh, lw))
    noise = jax.random.normal(rng, (tokens.shape[0], lt, lh, lw, c), jnp.float32)
    known_x0, known = self.canvas_latents(params, canvas, tokens.shape[0])
    z = self.sample_latents(params, tokens, token_mask, noise, known_x0, known, progress,
                            negative)
    return self.decode_video(params, z)

  def canvas_latents(self, params, canvas, batch: int):
    """(known_x0 (B, T', H', W', C), known (T',)) of given frames, or (None, None).

    `canvas`: a modes.Canvas for every video of the batch, a sequence of B
    canvases with the same given frames, or None.
    """
    if canvas is None:
      return None, None
    canvases = [canvas] * batch if isinstance(canvas, modes.Canvas) else list(canvas)
    given = canvases[0].given
    if len(canvases) != batch or any(not np.array_equal(c.given, given) for c in canvases):
      raise ValueError(f"need {batch} canvases with the same given frames")
    if not given.any():
      return None, None
    pixels = np.stack([c.pixels for c in canvases])
    return self.encode_video(params, pixels), canvases[0].latent_known(self.time_factor)

  def encode_video(self, params, video) -> jax.Array:
    """Like `encode`, but videos longer than the window are encoded a window at a time."""
    n = modes.latent_frames(video.shape[1], self.time_factor)
    if not self.window or n <= self.window:
      return self.encode(params, jnp.asarray(video))
    mean, _ = vae_lib.encode_chunked(self.models.vae, params["vae"], to_float(jnp.asarray(video)),
                                     self.window)
    return normalize_latents(params, mean)


# ---------------------------------------------------------------------------
# Data and the task.


def default_window(config, models: Models) -> int:
  """Latent frames of the longest clip shape of data.buckets (what the DiT trained on)."""
  return max(models.latent_grid(b.shape)[0]
             for b in buckets_lib.parse_buckets(config.data.buckets))


def uses_cached_latents(config) -> bool:
  return bool(config.dit.latents)


def latent_shapes(config, models: Models, process_count: int) -> dict[str, tuple[int, float]]:
  """Latent shape "T'xH'xW'" -> (per-host batch, weight) for each bucket of data.buckets."""
  out = {}
  bks = buckets_lib.parse_buckets(config.data.buckets)
  for b, size in zip(bks, pipeline.per_host_sizes(bks, process_count)):
    key = latents_lib.shape_key(models.latent_grid(b.shape)[:3])
    out[key] = (size, float(b.weight))
  return out


def data_factory(config, models: Models):
  """A loop data factory: cached latents when `dit.latents` is set, else videos."""
  if not uses_cached_latents(config):
    return None  # the loop's default video pipeline

  def make(config, train=True, num_workers=None, process_index=0, process_count=1):
    del num_workers
    folder = config.dit.latents if train else (config.dit.eval_latents or config.dit.latents)
    return latents_lib.latent_dataset(
        folder, latent_shapes(config, models, process_count), seed=config.data.seed,
        shuffle=train, num_epochs=None if train else 1, process_index=process_index,
        process_count=process_count)

  return make


def latent_normalization(config, models: Models, params, vae_setup: loop.Setup
                         ) -> dict[str, jax.Array]:
  """params["latent"], {"shift": (C,), "scale": (C,)}, from `dit.latent_norm` and the moments
  of the posterior means: the cached latents' metadata, else a few encoded training batches.

  `vae_setup`: the mesh the VAE params were restored onto (`loop.restore_for_inference`),
  on which every host encodes its own batches when the moments are measured."""
  mode = config.dit.get("latent_norm", "scalar")
  channels = int(models.dit.channels)
  if mode == "scalar" and config.dit.latent_scale:  # fixed by the config: nothing to measure
    return {"shift": jnp.zeros((channels,), jnp.float32),
            "scale": jnp.full((channels,), float(config.dit.latent_scale), jnp.float32)}
  key = "latent_std" if mode == "scalar" else "channel_std"
  meta = {}
  if uses_cached_latents(config):
    meta = latents_lib.LatentRecords(config.dit.latents).metadata
  if not meta.get(key):
    # Each host encodes batches of its own data shards; the sums are combined
    # over hosts (as prepare's metadata are), so every host normalises alike.
    data = iter(pipeline.dataset_from_config(config, train=True, num_workers=0,
                                             process_index=jax.process_index(),
                                             process_count=jax.process_count()))
    encode = vae_task.host_encoder(vae_setup, models.vae)
    means = np.concatenate([encode(params, next(data)["video"])[0].reshape(-1, channels)
                            for _ in range(4)])  # batches of different buckets' shapes
    meta = latents_lib.combine_moments(
        multihost.gather_over_processes(latents_lib.channel_sums(means)))
  mean, std = meta.get("channel_mean"), meta[key]
  std = np.maximum(np.broadcast_to(np.asarray(std, np.float64), (channels,)), 1e-6)
  if mode == "scalar":
    shift, scale = np.zeros(channels), np.full(channels, 1.0 / float(std[0]))
  else:
    shift, scale = np.asarray(mean, np.float64), 1.0 / std
  return {"shift": jnp.asarray(shift, jnp.float32), "scale": jnp.asarray(scale, jnp.float32)}


def init_params(models: Models, max_len: int, rng) -> dict[str, Any]:
  """Fresh (boxed) params {dit, text, vae, latent} of stage 2; captions of `max_len` tokens."""
  tf, sf = vae_lib.time_factor(models.vae), vae_lib.space_factor(models.vae)
  pt, ph, pw = models.dit.patch
  r_dit, r_text, r_vae = jax.random.split(rng, 3)
  z = jnp.zeros((1, pt, ph, pw, models.dit.channels), jnp.float32)
  tokens = jnp.zeros((1, max_len), jnp.int32)
  mask = jnp.ones((1, max_len), bool)
  emb = jnp.zeros((1, max_len, models.text.width), jnp.float32)
  return {
      "dit": models.dit.init(r_dit, z, jnp.ones((1, pt)), emb, mask)["params"],
      "text": models.text.init(r_text, tokens, mask)["params"],
      "vae": models.vae.init(r_vae, jnp.zeros((1, 1 + tf, sf, sf, 3)), r_vae)["params"],
      "latent": {"shift": jnp.zeros((models.dit.channels,), jnp.float32),
                 "scale": jnp.ones((models.dit.channels,), jnp.float32)},
  }


def make_task(config, for_inference: bool = False, vocab_size: int | None = None
              ) -> loop.Task:
  """Stage 2 as a Task; `for_inference`: to restore a trained model (no VAE checkpoint needed).

  `vocab_size`: the text encoder's vocabulary without reading the tokenizer
  file (vidgen.aot compiles the step without any file).
  """
  if not config.vae.checkpoint and not for_inference:
    raise ValueError("stage 2 needs a trained VAE: set vae.checkpoint to its workdir "
                     "(python -m vidgen.train --config=configs/shapes/vae.py --workdir=W)")
  if not for_inference:
    pipeline.ensure_tokenizer(config)  # sampling must use the tokenizer it trained with
  models = Models.from_config(config, vocab_size)
  cfg = config.diffusion
  frozen = ("vae", "latent") + (() if config.text.encoder.trainable else ("text",))
  trainable = tuple(k for k in ("dit", "text") if k not in frozen)
  init = functools.partial(init_params, models, int(config.text.max_len))

  def pretrained(params):
    vae_setup, vae_params, vae_step = loop.restore_for_inference(
        config, vae_task.make_task(config), config.vae.checkpoint)
    params = dict(params, vae=vae_params["vae"])
    params["latent"] = latent_normalization(config, models, params, vae_setup)
    logging.info("stage 2: VAE of step %d from %s; latents normalized per %s: shift %s, scale %s",
                 vae_step, config.vae.checkpoint, config.dit.get("latent_norm", "scalar"),
                 np.round(np.asarray(params["latent"]["shift"]), 3),
                 np.round(np.asarray(params["latent"]["scale"]), 3))
    if config.text.encoder.checkpoint:
      _, warm, _ = loop.restore_for_inference(config, dataclasses.replace(task, pretrained=None),
                                              config.text.encoder.checkpoint)
      params["text"] = warm["text"]
    return params

  generator = Generator.from_config(config, models, steps=min(int(cfg.sample.steps), 20))

  def pictures(params, batch, rng):
    n = min(4, np.shape(batch["tokens"])[0])
    tokens, tmask = jnp.asarray(batch["tokens"][:n]), jnp.asarray(batch["token_mask"][:n])
    if "video" in batch:
      reference = np.asarray(batch["video"][:n])
    else:
      reference = np.asarray(generator.decode(
          params, normalize_latents(params, jnp.asarray(batch["mean"][:n]))))
    shape = reference.shape[1:4]
    videos = generator.generate(params, tokens, tmask, shape, rng)
    return {"samples": eval_metrics.side_by_side(reference, videos), "sample_video": videos[0]}

  task = loop.Task(
      name="dit", rules=rules_lib.TRANSFORMER,
      batch_keys=LATENT_KEYS if uses_cached_latents(config) else VIDEO_KEYS,
      init=init, grads=functools.partial(grads, models=models, cfg=cfg, trainable=trainable),
      evaluate=functools.partial(evaluate, models=models, cfg=cfg),
      pictures=pictures, frozen=frozen, pretrained=pretrained,
      data=None if for_inference else data_factory(config, models))
  return task
