"""The causal video VAE (stage 1) and its 3D patch discriminator.

Continuous latents, KL-regularised, causal in time. The encoder folds pixels
and frames into channels (causal space-to-depth) instead of striding
convolutions, so most work happens at low resolution in cheap 2D convolutions
and matmuls; a causal sliding-window transformer at the bottleneck carries
long-range temporal context.

Compression: time x `time_factor` = patch[0] * prod(d[0] for d in down),
height x patch[1] * prod(d[1]), width x patch[2] * prod(d[1]) (x4, x8, x8 by
default). A clip has 1 + k * time_factor frames; latent frame 0 sees frame 0
only (an image is a one-frame clip), latent frame j sees frames <= j *
time_factor. Decoded frames before 1 + (j - 1) * time_factor do not depend on
latent frame j.

Chunking: `encode` and `decode` take a cache (None at the start of a clip) and
return the state the next chunk needs; the first encode chunk has
1 + m * time_factor frames, later ones m * time_factor; decode chunks are any
number of latent frames. `encode_chunked` / `decode_chunked` run a long clip
chunk by chunk with one jitted function per chunk kind, so memory is bounded
by the chunk. Caches are plain pytrees of arrays.

Shape legend: B batch, T frames, H height, W width, C channels, L tokens,
D width, N heads, K head dim.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta

from vidgen.models import layers
from vidgen.models.layers import (CausalConv3d, Downsample, GroupNorm, ResBlock,
                                  TemporalTransformer, Upsample, default_init, partitioned,
                                  zeros_init)
from vidgen.parallel import axes
from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import rules as rules_lib

Array = jax.Array
LOGVAR_RANGE = (-30.0, 20.0)


# ---------------------------------------------------------------------------
# Factors and shapes.


def _field(cfg_or_model: Any, name: str) -> Any:
  if isinstance(cfg_or_model, nn.Module):
    return getattr(cfg_or_model, name)
  return cfg_or_model[name]


def time_factor(cfg_or_model: Any) -> int:
  """Frames per latent frame (after the first): patch[0] * prod(d[0] for d in down)."""
  patch, down = _field(cfg_or_model, "patch"), _field(cfg_or_model, "down")
  return int(patch[0]) * math.prod(int(d[0]) for d in down)


def space_factors(cfg_or_model: Any) -> tuple[int, int]:
  """(height, width) pixels per latent pixel: patch[1 or 2] * prod(d[1] for d in down)."""
  patch, down = _field(cfg_or_model, "patch"), _field(cfg_or_model, "down")
  s = math.prod(int(d[1]) for d in down)
  return int(patch[1]) * s, int(patch[2]) * s


def space_factor(cfg_or_model: Any) -> int:
  """Pixels per latent pixel along height and width (they must agree; else see `space_factors`)."""
  fh, fw = space_factors(cfg_or_model)
  if fh != fw:
    raise ValueError(f"height and width factors differ ({fh} vs {fw}); use space_factors()")
  return fh


def check_clip_shape(cfg_or_model: Any, t: int, h: int, w: int, start: bool = True) -> None:
  """Raises ValueError unless a clip (a later chunk: `start=False`) of (T, H, W) can be encoded."""
  tf = time_factor(cfg_or_model)
  fh, fw = space_factors(cfg_or_model)
  if start and (t < 1 or (t - 1) % tf):
    raise ValueError(f"a clip must have 1 + k * {tf} frames (time factor {tf}; an image is 1 "
                     f"frame); got {t} frames")
  if not start and (t < 1 or t % tf):
    raise ValueError(f"a chunk after the first must have a multiple of {tf} frames; got {t}")
  if h % fh or w % fw or h < 1 or w < 1:
    raise ValueError(f"height and width must be multiples of {fh} and {fw} (the space factors); "
                     f"got {h}x{w}")


def latent_shape(cfg_or_model: Any, shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
  """(T, H, W) of a clip -> (T', H', W', C) of its latents; ValueError on a shape it cannot take."""
  t, h, w = shape
  check_clip_shape(cfg_or_model, t, h, w)
  tf = time_factor(cfg_or_model)
  fh, fw = space_factors(cfg_or_model)
  return 1 + (t - 1) // tf, h // fh, w // fw, int(_field(cfg_or_model, "latent_channels"))


# ---------------------------------------------------------------------------
# The posterior.


def kl(mean: Array, logvar: Array) -> Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) summed over every latent element: (B, ...) -> (B,)."""
  mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
  per = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return jnp.sum(per.reshape(per.shape[0], -1), axis=-1)


def sample(mean: Array, logvar: Array, rng: Array) -> Array:
  """A draw from N(mean, exp(logvar)) (reparameterised)."""
  eps = jax.random.normal(rng, mean.shape, jnp.float32)
  std = jnp.exp(0.5 * logvar.astype(jnp.float32))
  return (mean.astype(jnp.float32) + std * eps).astype(mean.dtype)


_sample = sample  # `VideoVAE.__call__` has an argument named `sample`


def perturb_latents(z: Array, rng: Array, scale: Array | float) -> Array:
  """z + scale * rms(z) * eps, eps ~ N(0, I); rms over the whole batch, without gradient.

  `scale` is a float or an array broadcasting against z (one per clip). The
  noise is relative to the latents' RMS, as a diffusion model's error on
  unit-scaled latents is.
  """
  zf = z.astype(jnp.float32)
  rms = jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(zf))))
  eps = jax.random.normal(rng, z.shape, jnp.float32)
  return (zf + scale * rms * eps).astype(z.dtype)


def add_latent_noise(z: Array, rng: Array, max_scale: float) -> Array:
  """`perturb_latents` with a scale tau ~ U(0, max_scale) drawn per clip.

  Trains a decoder that reads latents a little off the encoder's, which is
  what a diffusion model hands it (its x0 error on the shapes latents is about
  a third of their RMS). The scale carries no gradient: the latents cannot
  escape the noise by growing. The idea follows l-DeTok (Yang et al., 2025,
  "Latent denoising makes good visual tokenizers"), which noises latents in
  the tokenizer's training.
  """
  tau_rng, eps_rng = jax.random.split(rng)
  tau = jax.random.uniform(tau_rng, (z.shape[0],) + (1,) * (z.ndim - 1), jnp.float32,
                           0.0, max_scale)
  return perturb_latents(z, eps_rng, tau)


# ---------------------------------------------------------------------------
# Encoder and decoder.


class _Stack(nn.Module):
  """Fields shared by the encoder and the decoder (see `VideoVAE`)."""

  latent_channels: int
  patch: tuple[int, int, int]
  channels: tuple[int, ...]
  down: tuple[tuple[int, int], ...]
  blocks: int
  conv: str
  kernel: tuple[int, int, int]
  groups: int
  transformer_layers: int
  transformer_heads: int
  transformer_window: int
  transformer_mlp_ratio: float
  dtype: Any
  param_dtype: Any
  remat: bool = False

  def kw(self) -> dict:
    return dict(dtype=layers.as_dtype(self.dtype), param_dtype=layers.as_dtype(self.param_dtype))

  def res_block(self, features: int, name: str) -> ResBlock:
    cls = nn.remat(ResBlock) if self.remat else ResBlock
    return cls(features, self.kernel, self.conv, self.groups, name=name, **self.kw())

  def mid(self, x: Array, cache: dict, new: dict) -> Array:
    """ResBlock, temporal transformer (if any), ResBlock at the bottleneck width."""
    width = self.channels[-1]
    x, new["mid_block_0"] = self.res_block(width, "mid_block_0")(x, cache.get("mid_block_0"))
    if self.transformer_layers:
      x, new["mid_transformer"] = TemporalTransformer(
          self.transformer_layers, self.transformer_heads, self.transformer_window,
          self.transformer_mlp_ratio, name="mid_transformer", **self.kw())(
              x, cache.get("mid_transformer"))
    x, new["mid_block_1"] = self.res_block(width, "mid_block_1")(x, cache.get("mid_block_1"))
    return x

  def level_factors(self, i: int) -> tuple[int, int, int]:
    dt, ds = self.down[i]
    return int(dt), int(ds), int(ds)


class Encoder(_Stack):
  """Video -> posterior mean and log-variance (see `VideoVAE` for the attributes)."""

  @nn.compact
  def __call__(self, video: Array, cache: dict | None = None) -> tuple[tuple[Array, Array], dict]:
    """video (B, T, H, W, 3) -> ((mean, logvar) each (B, T', H', W', latent_channels), cache)"""
    kw = self.kw()
    start = cache is None
    cache = cache or {}
    new: dict = {}
    x = layers.causal_space_to_depth(video.astype(kw["dtype"]), *self.patch, pad=start)
    x = layers.dense(self.channels[0], name="conv_in", **kw)(x)  # (B, T, H, W, D0)
    for i, width in enumerate(self.channels):
      for j in range(self.blocks):
        name = f"level_{i}_block_{j}"
        x, new[name] = self.res_block(width, name)(x, cache.get(name))
      if i + 1 < len(self.channels):
        down = Downsample(self.channels[i + 1], self.level_factors(i), name=f"down_{i}", **kw)
        x = down(x, start)
    x = self.mid(x, cache, new)
    x = nn.silu(GroupNorm(self.groups, name="norm_out", **kw)(x))
    x, new["conv_out"] = CausalConv3d(2 * self.latent_channels, self.kernel, self.conv,
                                      name="conv_out", **kw)(x, cache.get("conv_out"))
    mean, logvar = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return (mean, jnp.clip(logvar, *LOGVAR_RANGE)), new


class Decoder(_Stack):
  """Latents -> video (see `VideoVAE` for the attributes)."""

  @nn.compact
  def __call__(self, z: Array, cache: dict | None = None) -> tuple[Array, dict]:
    """z (B, T', H', W', latent_channels) -> (video (B, T, H, W, 3), cache)"""
    kw = self.kw()
    start = cache is None
    cache = cache or {}
    new: dict = {}
    conv_in = CausalConv3d(self.channels[-1], self.kernel, self.conv, name="conv_in", **kw)
    x, new["conv_in"] = conv_in(z.astype(kw["dtype"]), cache.get("conv_in"))
    x = self.mid(x, cache, new)
    for i in reversed(range(len(self.channels))):
      for j in range(self.blocks):
        name = f"level_{i}_block_{j}"
        x, new[name] = self.res_block(self.channels[i], name)(x, cache.get(name))
      if i > 0:
        up = Upsample(self.channels[i - 1], self.level_factors(i - 1), name=f"up_{i - 1}", **kw)
        x = up(x, start)
    x = nn.silu(GroupNorm(self.groups, name="norm_out", **kw)(x))
    x = layers.dense(3 * math.prod(self.patch), name="conv_out", **kw)(x)
    video = layers.causal_depth_to_space(x, *self.patch, drop=start)
    return video.astype(jnp.float32), new


class VideoVAE(nn.Module):
  """The causal video VAE.

  Encoder: causal space-to-depth by `patch`, Dense to channels[0]; per level
  `blocks` ResBlocks then a Downsample (causal space-to-depth by down[i] and a
  Dense) to the next width; at the bottleneck ResBlock, temporal transformer,
  ResBlock; norm, silu, causal conv to 2 * latent_channels (mean, logvar).
  The decoder mirrors it and ends in a Dense to 3 * prod(patch) channels
  ("decoder/conv_out", no tanh) and causal depth-to-space by `patch`.

  Attributes:
    latent_channels: C of the latents.
    patch: (t, h, w) causal space-to-depth before the first layer.
    channels: width of each level.
    down: (time, space) factor, 1 or 2, between consecutive levels.
    blocks: ResBlocks per level.
    conv: "2+1d" or "3d" (see `layers.CausalConv3d`).
    kernel: (kt, kh, kw) of the convolutions.
    groups: GroupNorm groups (statistics per frame).
    transformer_layers: blocks of the bottleneck transformer; 0 switches it off.
    transformer_heads: its heads N.
    transformer_window: frames each latent frame attends to, itself included.
    transformer_mlp_ratio: its MLP hidden width / D.
    dtype: compute dtype name ("float32", "bfloat16", ...).
    param_dtype: parameter dtype name.
    remat: rematerialise the ResBlocks in the backward pass (saves memory).
  """

  latent_channels: int = 16
  patch: tuple[int, int, int] = (1, 2, 2)
  channels: tuple[int, ...] = (64, 128, 256)
  down: tuple[tuple[int, int], ...] = ((2, 2), (2, 2))
  blocks: int = 1
  conv: str = "2+1d"
  kernel: tuple[int, int, int] = (3, 3, 3)
  groups: int = 8
  transformer_layers: int = 2
  transformer_heads: int = 4
  transformer_window: int = 8
  transformer_mlp_ratio: float = 4.0
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False

  last_layer: ClassVar[tuple[str, str, str]] = ("decoder", "conv_out", "kernel")

  def setup(self):
    if len(self.down) != len(self.channels) - 1:
      raise ValueError(f"down needs one (time, space) pair per level transition: "
                       f"{len(self.channels)} channels, {len(self.down)} down pairs")
    if self.conv not in ("2+1d", "3d"):
      raise ValueError(f"conv must be '2+1d' or '3d'; got {self.conv!r}")
    if self.transformer_layers and self.channels[-1] % self.transformer_heads:
      raise ValueError(f"transformer: {self.transformer_heads} heads do not divide the "
                       f"bottleneck width {self.channels[-1]}")
    fields = dict(
        latent_channels=self.latent_channels, patch=tuple(self.patch),
        channels=tuple(self.channels), down=tuple(tuple(d) for d in self.down),
        blocks=self.blocks, conv=self.conv,
        kernel=tuple(self.kernel), groups=self.groups, transformer_layers=self.transformer_layers,
        transformer_heads=self.transformer_heads, transformer_window=self.transformer_window,
        transformer_mlp_ratio=self.transformer_mlp_ratio, dtype=self.dtype,
        param_dtype=self.param_dtype, remat=self.remat)
    self.encoder = Encoder(**fields)
    self.decoder = Decoder(**fields)

  def encode(self, video: Array, cache: dict | None = None) -> tuple[tuple[Array, Array], dict]:
    """video (B, T, H, W, 3) in [-1, 1] -> ((mean, logvar) (B, T', H', W', C) float32, cache).

    `cache` None: the start of a clip (T = 1 + k * time_factor); otherwise the
    cache from the previous chunk (T = m * time_factor).
    """
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f"encode expects (B, T, H, W, 3) video; got shape {video.shape}")
    check_clip_shape(self, *video.shape[1:4], start=cache is None)
    return self.encoder(video, cache)

  def decode(self, z: Array, cache: dict | None = None) -> tuple[Array, dict]:
    """z (B, T', H', W', C) -> (video (B, T, H, W, 3) float32, cache).

    `cache` None: the start of a clip, T = 1 + (T' - 1) * time_factor;
    otherwise T = T' * time_factor.
    """
    if z.ndim != 5 or z.shape[-1] != self.latent_channels:
      raise ValueError(f"decode expects (B, T, H, W, {self.latent_channels}) latents; "
                       f"got shape {z.shape}")
    return self.decoder(z, cache)

  def __call__(self, video: Array, rng: Array, sample: bool = True,
               latent_noise: float = 0.0) -> dict[str, Array]:
    """video (B, T, H, W, 3) -> dict(recon (B, T, H, W, 3), mean, logvar, z (B, T', H', W', C)).

    `latent_noise` > 0 decodes `z + tau * rms(z) * eps` instead of z, with tau
    drawn per clip from U(0, latent_noise) and rms(z) the batch's latent RMS
    (no gradient, so the encoder cannot outgrow the noise by scaling up): see
    `add_latent_noise`. `z` in the output is the latent before that noise.
    """
    (mean, logvar), _ = self.encode(video)
    z = _sample(mean, logvar, rng) if sample else mean
    noisy = add_latent_noise(z, jax.random.fold_in(rng, 1), latent_noise) if latent_noise else z
    recon, _ = self.decode(noisy)
    return dict(recon=recon, mean=mean, logvar=logvar, z=z)


def vae_from_config(vae_cfg: Any) -> VideoVAE:
  """The `vae` config section -> VideoVAE (model fields only; losses are the trainer's)."""
  tr = vae_cfg["transformer"]
  return VideoVAE(
      latent_channels=int(vae_cfg["latent_channels"]),
      patch=tuple(int(p) for p in vae_cfg["patch"]),
      channels=tuple(int(c) for c in vae_cfg["channels"]),
      down=tuple((int(d[0]), int(d[1])) for d in vae_cfg["down"]),
      blocks=int(vae_cfg["blocks"]),
      conv=str(vae_cfg["conv"]),
      kernel=tuple(int(k) for k in vae_cfg["kernel"]),
      groups=int(vae_cfg["groups"]),
      transformer_layers=int(tr["layers"]),
      transformer_heads=int(tr["heads"]),
      transformer_window=int(tr["window"]),
      transformer_mlp_ratio=float(tr["mlp_ratio"]),
      dtype=str(vae_cfg["dtype"]),
      param_dtype=str(vae_cfg["param_dtype"]),
  )


def init_params(model: VideoVAE, rng: Array, shape: tuple[int, ...] | None = None) -> Any:
  """Boxed params (with logical partitioning metadata), as `model.init(...)["params"]`.

  `shape` is the example clip (B, T, H, W, 3); by default the smallest video,
  (1, 1 + time_factor, fh, fw, 3). The params do not depend on it.
  """
  if shape is None:
    fh, fw = space_factors(model)
    shape = (1, 1 + time_factor(model), fh, fw, 3)
  video = jnp.zeros(shape, jnp.float32)
  init = jax.jit(lambda r, v: model.init({"params": r}, v, r, sample=False))
  return init(rng, video)["params"]


# ---------------------------------------------------------------------------
# Chunked encode and decode.


@functools.partial(jax.jit, static_argnums=0)
def encode_step(model: VideoVAE, params: Any, video: Array, cache: Any):
  """One jitted encode chunk: (video, cache or None at the start) -> ((mean, logvar), cache)."""
  return model.apply({"params": params}, video, cache, method=VideoVAE.encode)


@functools.partial(jax.jit, static_argnums=0)
def decode_step(model: VideoVAE, params: Any, z: Array, cache: Any):
  """One jitted decode chunk: (latents, cache or None at the start) -> (video, cache)."""
  return model.apply({"params": params}, z, cache, method=VideoVAE.decode)


def _pad_end(x: Array, frames: int) -> Array:
  """Appends copies of the last frame up to `frames` frames (causal: earlier outputs keep)."""
  extra = frames - x.shape[1]
  if extra <= 0:
    return x
  return jnp.concatenate([x, jnp.repeat(x[:, -1:], extra, axis=1)], axis=1)


def _sharded(mesh: jax.sharding.Mesh | None):
  """Under `mesh`, the steps shard each chunk: batch over data x fsdp, frames over context."""
  return contextlib.nullcontext() if mesh is None else mesh_lib.activate(mesh, rules_lib.VAE)


def encode_chunked(model: VideoVAE, params: Any, video: Array, chunk_frames: int,
                   mesh: jax.sharding.Mesh | None = None) -> tuple[Array, Array]:
  """Encodes a long clip `chunk_frames` latent frames at a time; same result as one `encode`.

  The first chunk has 1 + (chunk_frames - 1) * time_factor frames, later ones
  chunk_frames * time_factor (the last is padded at the end with its last
  frame and the extra latents dropped), so two jitted functions serve any
  length and peak memory is that of a chunk. With a `mesh`, every chunk's
  feature maps are sharded by the VAE's logical-axis rules, frames over the
  `context` axis (the causal convolutions exchange halo frames), so a chunk's
  memory is split over the context devices; params must be unboxed.

  Returns:
    (mean, logvar), each (B, T', H', W', C).
  """
  if chunk_frames < 1:
    raise ValueError(f"chunk_frames must be >= 1; got {chunk_frames}")
  params = meta.unbox(params)
  tf = time_factor(model)
  b, t, h, w, _ = video.shape
  check_clip_shape(model, t, h, w)
  total = 1 + (t - 1) // tf
  first = 1 + (chunk_frames - 1) * tf
  with _sharded(mesh):
    (mean, logvar), cache = encode_step(model, params, video[:, :first], None)
    means, logvars = [mean], [logvar]
    done = mean.shape[1]
    start = first
    while done < total:
      chunk = _pad_end(video[:, start:start + chunk_frames * tf], chunk_frames * tf)
      (mean, logvar), cache = encode_step(model, params, chunk, cache)
      keep = min(chunk_frames, total - done)
      means.append(mean[:, :keep])
      logvars.append(logvar[:, :keep])
      done += keep
      start += chunk_frames * tf
  return jnp.concatenate(means, axis=1), jnp.concatenate(logvars, axis=1)


def decode_chunked(model: VideoVAE, params: Any, z: Array, chunk_frames: int,
                   mesh: jax.sharding.Mesh | None = None) -> Array:
  """Decodes latents `chunk_frames` latent frames at a time; same result as one `decode`.

  With a `mesh`, each chunk is sharded as in `encode_chunked`.

  Returns:
    video (B, 1 + (T' - 1) * time_factor, H, W, 3).
  """
  if chunk_frames < 1:
    raise ValueError(f"chunk_frames must be >= 1; got {chunk_frames}")
  params = meta.unbox(params)
  tf = time_factor(model)
  total = z.shape[1]
  with _sharded(mesh):
    video, cache = decode_step(model, params, z[:, :chunk_frames], None)
    pieces = [video]
    done = min(chunk_frames, total)
    while done < total:
      chunk = _pad_end(z[:, done:done + chunk_frames], chunk_frames)
      video, cache = decode_step(model, params, chunk, cache)
      keep = min(chunk_frames, total - done)
      pieces.append(video[:, :keep * tf])
      done += keep
  return jnp.concatenate(pieces, axis=1)


# ---------------------------------------------------------------------------
# Discriminator.


class StridedConv(nn.Module):
  """A (2+1)D convolution with stride 2: kh x kw spatial, then kt x 1 x 1 temporal (not causal).

  Time is strided by 2 (zero padding, ceil(T / 2) frames out) when T > 1; a
  one-frame input keeps its frame and uses the same parameters.

  Attributes:
    features: output channels.
    kernel: (kt, kh, kw).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  features: int
  kernel: tuple[int, int, int] = (3, 4, 4)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x (B, T, H, W, C) -> (B, ceil(T / 2), ceil(H / 2), ceil(W / 2), features)"""
    kt, kh, kw = self.kernel
    c, t = x.shape[-1], x.shape[1]
    spatial, temporal = layers.factorized_kernels(self, self.kernel, c, self.features)
    bias = self.param("bias", partitioned(zeros_init, axes.CONV_OUT), (self.features,),
                      self.param_dtype)
    x, spatial, temporal, bias = nn.dtypes.promote_dtype(
        x, spatial, temporal, bias, dtype=self.dtype)
    y = layers.conv2d_frames(x, spatial, (2, 2), "SAME")  # (B, T, H/2, W/2, D)
    stride = 2 if t > 1 else 1
    t_out = -(-t // stride)
    lo = (kt - 1) // 2
    hi = max(0, (t_out - 1) * stride + kt - t - lo)
    yp = jnp.pad(y, ((0, 0), (lo, hi), (0, 0), (0, 0), (0, 0)))
    span = (t_out - 1) * stride + 1
    # (B, T', H', W', kt*D)
    taps = jnp.concatenate([yp[:, i:i + span:stride] for i in range(kt)], axis=-1)
    return jnp.einsum("bthwc,cd->bthwd", taps,
                      temporal.reshape(kt * self.features, self.features)) + bias


class PatchDiscriminator3D(nn.Module):
  """A 3D PatchGAN: strided (2+1)D convs, per-frame GroupNorm, leaky ReLU, 1-channel logits.

  Each level halves H and W (and T when T > 1); the first has no norm. Not
  causal. A one-frame clip (an image) works with the same parameters.

  Attributes:
    channels: width of each strided level.
    groups: GroupNorm groups (reduced to gcd(groups, width) where it does not divide).
    kernel: (kt, kh, kw) of the strided convolutions.
    dtype: compute dtype (name or dtype).
    param_dtype: parameter dtype (name or dtype).
  """

  channels: tuple[int, ...] = (32, 64, 128)
  groups: int = 8
  kernel: tuple[int, int, int] = (3, 4, 4)
  dtype: Any = "float32"
  param_dtype: Any = "float32"

  @nn.compact
  def __call__(self, video: Array) -> Array:
    """video (B, T, H, W, 3) -> logits (B, T', H / 2^n, W / 2^n, 1), n = len(channels)."""
    kw = dict(dtype=layers.as_dtype(self.dtype), param_dtype=layers.as_dtype(self.param_dtype))
    x = video.astype(kw["dtype"])
    for i, width in enumerate(self.channels):
      x = StridedConv(width, tuple(self.kernel), name=f"conv_{i}", **kw)(x)
      if i > 0:
        x = GroupNorm(math.gcd(self.groups, width), name=f"norm_{i}", **kw)(x)
      x = nn.leaky_relu(x, 0.2)
    out = self.param("out_kernel",
                     partitioned(default_init, None, None, axes.CONV_IN, axes.CONV_OUT),
                     (3, 3, x.shape[-1], 1), kw["param_dtype"])
    bias = self.param("out_bias", partitioned(zeros_init, axes.CONV_OUT), (1,), kw["param_dtype"])
    x, out, bias = nn.dtypes.promote_dtype(x, out, bias, dtype=kw["dtype"])
    return (layers.conv2d_frames(x, out) + bias).astype(jnp.float32)
