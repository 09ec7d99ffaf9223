"""Causal video building blocks: space-to-depth, convolutions, norms, a temporal transformer.

Everything here is causal in time and chunkable: a module that looks at past
frames takes a `cache` (None at the start of a clip) and returns the state the
next chunk needs, so a clip run in pieces gives the same result as the whole
clip run at once. At the start of a clip the past is the first frame repeated
("replicate padding"), so frame 0 is encoded alone and an image is a one-frame
video.

Why the convolutions are built from 2D ones: XLA's CPU 3D convolutions are
slow, 2D convolutions over the merged (B*T) frames and matmuls are fast (see
DESIGN.md). "3d" mode is a true causal kt x kh x kw convolution written as a sum
over its kt time taps of 2D convolutions; "2+1d" mode is a kh x kw 2D
convolution followed by a causal kt x 1 x 1 temporal one (one matmul over the
kt shifted frames concatenated on channels).

Shape legend: B batch, T frames, H height, W width, C channels, L tokens,
D width, N heads, K head dim.
"""

from __future__ import annotations

import math
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vidgen.models import attention
from vidgen.parallel import axes

Array = jax.Array
Dtype = Any

default_init = nn.initializers.lecun_normal()
zeros_init = nn.initializers.zeros
ones_init = nn.initializers.ones
FEATURE_MAP = (axes.BATCH, axes.FRAMES, axes.HEIGHT, axes.WIDTH, axes.EMBED)


def as_dtype(dtype: Any) -> jnp.dtype:
  """'float32' / 'bfloat16' / a numpy dtype -> numpy dtype."""
  return jnp.dtype(dtype)


# ---------------------------------------------------------------------------
# Causal space-to-depth.


def causal_space_to_depth(x: Array, ft: int, fh: int, fw: int, pad: bool = True) -> Array:
  """Folds ft consecutive frames and fh x fw pixels into channels, causally.

  With `pad` (the start of a clip) the front gets ft - 1 copies of the first
  frame, so output frame 0 holds input frame 0 only and output frame j sees
  input frames <= ft * j; T must be 1 + k * ft. Without `pad` (a later chunk
  of a clip) T must be a multiple of ft.

  Args:
    x: (B, T, H, W, C).
    ft, fh, fw: factors in time, height and width.
    pad: whether this is the start of a clip.

  Returns:
    (B, T', H / fh, W / fw, ft * fh * fw * C) with channels ordered (ft fh fw C).
  """
  _, t, h, w, _ = x.shape
  if pad:
    if (t - 1) % ft:
      raise ValueError(f"causal space-to-depth by {ft} in time needs 1 + k * {ft} frames "
                       f"at the start of a clip; got {t}")
    if ft > 1:
      x = jnp.concatenate([jnp.repeat(x[:, :1], ft - 1, axis=1), x], axis=1)
  elif t % ft:
    raise ValueError(f"causal space-to-depth by {ft} in time needs a multiple of {ft} frames "
                     f"in a chunk after the first; got {t}")
  if h % fh or w % fw:
    raise ValueError(f"space-to-depth by {fh}x{fw} needs height and width divisible by it; "
                     f"got {h}x{w}")
  return einops.rearrange(x, "b (t ft) (h fh) (w fw) c -> b t h w (ft fh fw c)",
                          ft=ft, fh=fh, fw=fw)


def causal_depth_to_space(x: Array, ft: int, fh: int, fw: int, drop: bool = True) -> Array:
  """Inverse of `causal_space_to_depth`: channels back to frames and pixels.

  Each input frame expands to ft frames; with `drop` (the start of a clip) the
  first ft - 1 frames, which mirror the encoder's padding, are dropped, so T
  latent-side frames give 1 + (T - 1) * ft frames.

  Args:
    x: (B, T, H, W, ft * fh * fw * C), channels ordered (ft fh fw C).

  Returns:
    (B, T * ft - (ft - 1 if drop else 0), H * fh, W * fw, C).
  """
  if x.shape[-1] % (ft * fh * fw):
    raise ValueError(f"depth-to-space by {ft}x{fh}x{fw}: {x.shape[-1]} channels are not a multiple")
  y = einops.rearrange(x, "b t h w (ft fh fw c) -> b (t ft) (h fh) (w fw) c", ft=ft, fh=fh, fw=fw)
  return y[:, ft - 1:] if drop else y


# ---------------------------------------------------------------------------
# Small pieces.


def partitioned(init: Any, *names: str | None) -> Any:
  """`init` with logical axis names on the parameter it makes."""
  return nn.with_logical_partitioning(init, names)


def dense(features: int, dtype: Dtype, param_dtype: Dtype, name: str | None = None,
          names: tuple[str, str] = (axes.CONV_IN, axes.CONV_OUT),
          use_bias: bool = True) -> nn.Dense:
  """A Dense (a 1x1x1 convolution on feature maps) with logical axis names on its params."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=partitioned(default_init, *names),
      bias_init=partitioned(zeros_init, names[1]))


def conv2d_frames(x: Array, kernel: Array, strides: tuple[int, int] = (1, 1),
                  padding: Any = "SAME") -> Array:
  """A 2D convolution of every frame: (B, T, H, W, C) x (kh, kw, C, D) -> (B, T, H', W', D)."""
  b = x.shape[0]
  y = lax.conv_general_dilated(
      einops.rearrange(x, "b t h w c -> (b t) h w c"), kernel, strides, padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return einops.rearrange(y, "(b t) h w d -> b t h w d", b=b)


class GroupNorm(nn.Module):
  """GroupNorm with statistics per frame (over H, W and the group's channels).

  Never across time: that would let later frames change earlier ones and
  break causality and chunking. Statistics are computed in float32.

  Attributes:
    groups: number of channel groups; must divide C.
    epsilon: added to the variance.
    dtype: compute (output) dtype.
    param_dtype: dtype of scale and bias.
  """

  groups: int
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    # x: (B, T, H, W, C)
    c = x.shape[-1]
    if c % self.groups:
      raise ValueError(f"GroupNorm: {self.groups} groups do not divide {c} channels")
    scale = self.param("scale", partitioned(ones_init, axes.NORM), (c,), self.param_dtype)
    bias = self.param("bias", partitioned(zeros_init, axes.NORM), (c,), self.param_dtype)
    xg = einops.rearrange(x.astype(jnp.float32), "b t h w (g k) -> b t h w g k", g=self.groups)
    mean = jnp.mean(xg, axis=(2, 3, 5), keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=(2, 3, 5), keepdims=True)
    xg = (xg - mean) * lax.rsqrt(var + self.epsilon)
    y = einops.rearrange(xg, "b t h w g k -> b t h w (g k)")
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(self.dtype)


# ---------------------------------------------------------------------------
# Causal convolution.


def factorized_kernels(module: nn.Module, kernel: tuple[int, int, int], c: int,
                       features: int) -> tuple[Array, Array]:
  """The parameters of a (2+1)D convolution, declared on `module`.

  Returns (spatial (kh, kw, c, features), temporal (kt, features, features)).
  """
  kt, kh, kw = kernel
  spatial = module.param(
      "spatial_kernel", partitioned(default_init, None, None, axes.CONV_IN, axes.CONV_OUT),
      (kh, kw, c, features), module.param_dtype)
  temporal = module.param(
      "temporal_kernel", partitioned(default_init, None, axes.CONV_IN, axes.CONV_OUT),
      (kt, features, features), module.param_dtype)
  return spatial, temporal


def _causal_pad(x: Array, cache: Array | None, frames: int) -> Array:
  """Prepends `frames` past frames: the cache, or the first frame repeated at the start."""
  if cache is None:
    past = jnp.repeat(x[:, :1], frames, axis=1)
  else:
    if cache.shape[1] != frames:
      raise ValueError(f"cache holds {cache.shape[1]} frames, expected {frames}")
    past = cache.astype(x.dtype)
  return jnp.concatenate([past, x], axis=1)


def _last_frames(x: Array, n: int) -> Array:
  return x[:, x.shape[1] - n:]


class CausalConv3d(nn.Module):
  """A convolution causal in time, 'SAME' in space, stride 1.

  Output frame t sees input frames t - kt + 1 ... t. At the start of a clip
  (cache None) the missing past is the first frame repeated; otherwise it is
  the cache from the previous chunk.

  Attributes:
    features: output channels.
    kernel: (kt, kh, kw).
    mode: "3d" (a full kt x kh x kw kernel, computed as a sum over the kt time
      taps of 2D convolutions) or "2+1d" (a kh x kw spatial convolution, then a
      causal kt x 1 x 1 temporal one as one matmul over the concatenated taps).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  features: int
  kernel: tuple[int, int, int] = (3, 3, 3)
  mode: str = "2+1d"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: Array | None = None) -> tuple[Array, Array]:
    """x: (B, T, H, W, C) -> ((B, T, H, W, features), cache (B, kt - 1, H, W, C'))

    C' is C in "3d" mode (the last input frames) and `features` in "2+1d" mode
    (the last frames that entered the temporal convolution).
    """
    kt, kh, kw = self.kernel
    c = x.shape[-1]
    t = x.shape[1]
    bias = self.param("bias", partitioned(zeros_init, axes.CONV_OUT), (self.features,),
                      self.param_dtype)
    if self.mode == "3d":
      kernel = self.param(
          "kernel", partitioned(default_init, None, None, None, axes.CONV_IN, axes.CONV_OUT),
          (kt, kh, kw, c, self.features), self.param_dtype)
      x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
      xp = _causal_pad(x, cache, kt - 1)  # (B, T + kt - 1, H, W, C)
      y = sum(conv2d_frames(xp[:, i:i + t], kernel[i]) for i in range(kt))
      return y + bias, _last_frames(xp, kt - 1)
    if self.mode == "2+1d":
      spatial, temporal = factorized_kernels(self, self.kernel, c, self.features)
      x, spatial, temporal, bias = nn.dtypes.promote_dtype(
          x, spatial, temporal, bias, dtype=self.dtype)
      y = conv2d_frames(x, spatial)  # (B, T, H, W, D)
      yp = _causal_pad(y, cache, kt - 1)  # (B, T + kt - 1, H, W, D)
      taps = jnp.concatenate([yp[:, i:i + t] for i in range(kt)], axis=-1)  # (B, T, H, W, kt*D)
      out = jnp.einsum("bthwc,cd->bthwd", taps,
                       einops.rearrange(temporal, "kt c d -> (kt c) d"))
      return out + bias, _last_frames(yp, kt - 1)
    raise ValueError(f"CausalConv3d mode must be '2+1d' or '3d'; got {self.mode!r}")


class ResBlock(nn.Module):
  """norm, silu, causal conv, norm, silu, causal conv, plus a skip (1x1 Dense if widths differ).

  Attributes:
    features: output width.
    kernel: (kt, kh, kw) of both convolutions.
    mode: "2+1d" or "3d" (see `CausalConv3d`).
    groups: GroupNorm groups.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  features: int
  kernel: tuple[int, int, int] = (3, 3, 3)
  mode: str = "2+1d"
  groups: int = 8
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: dict | None = None) -> tuple[Array, dict]:
    """x: (B, T, H, W, C) -> ((B, T, H, W, features), cache)"""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    conv = lambda name: CausalConv3d(self.features, self.kernel, self.mode, name=name, **kw)
    past = cache or {}
    h = nn.silu(GroupNorm(self.groups, name="norm_0", **kw)(x))
    h, c0 = conv("conv_0")(h, past.get("conv_0"))
    h = nn.silu(GroupNorm(self.groups, name="norm_1", **kw)(h))
    h, c1 = conv("conv_1")(h, past.get("conv_1"))
    skip = x if x.shape[-1] == self.features else dense(self.features, name="skip", **kw)(x)
    y = nn.with_logical_constraint(skip.astype(self.dtype) + h, FEATURE_MAP)
    return y, {"conv_0": c0, "conv_1": c1}


class Downsample(nn.Module):
  """Causal space-to-depth by (dt, dh, dw), then a Dense to `features` (LTX-Video style).

  Attributes:
    features: output width.
    factors: (dt, dh, dw).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  features: int
  factors: tuple[int, int, int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, start: bool = True) -> Array:
    """x: (B, T, H, W, C) -> (B, T', H / dh, W / dw, features); `start`: the clip's first chunk."""
    x = causal_space_to_depth(x, *self.factors, pad=start)
    return dense(self.features, self.dtype, self.param_dtype, name="proj")(x)


class Upsample(nn.Module):
  """A Dense to features * dt * dh * dw, then causal depth-to-space.

  Attributes:
    features: output width.
    factors: (dt, dh, dw).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  features: int
  factors: tuple[int, int, int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, start: bool = True) -> Array:
    """x: (B, T, H, W, C) -> (B, T', H * dh, W * dw, features); `start` drops dt - 1 frames."""
    x = dense(self.features * math.prod(self.factors), self.dtype, self.param_dtype, name="proj")(x)
    return causal_depth_to_space(x, *self.factors, drop=start)


# ---------------------------------------------------------------------------
# Temporal transformer.


def rope(x: Array, pos: Array, base: float = 10_000.0) -> Array:
  """Rotary position embedding along T: x (L, T, N, K) rotated by angles of `pos` (T,)."""
  k = x.shape[-1]
  half = k // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = pos.astype(jnp.float32)[:, None] * freqs  # (T, K/2)
  cos = jnp.cos(angles)[:, None, :]  # (T, 1, K/2)
  sin = jnp.sin(angles)[:, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., :half], xf[..., half:2 * half]
  out = [x1 * cos - x2 * sin, x1 * sin + x2 * cos]
  if k % 2:
    out.append(xf[..., 2 * half:])
  return jnp.concatenate(out, axis=-1).astype(x.dtype)


class TemporalAttention(nn.Module):
  """Multi-head attention along time, causal with a sliding window, rotary positions.

  Query frame t attends keys of frames in (t - window, t]. Keys and values of
  the previous chunk's last window - 1 frames come in through the cache.

  Attributes:
    heads: N.
    window: frames a query sees, itself included.
    dtype: compute dtype (the softmax is float32).
    param_dtype: parameter dtype.
  """

  heads: int
  window: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, pos: Array, past: tuple[Array, Array, Array]
               ) -> tuple[Array, tuple[Array, Array]]:
    """x (L, T, D), pos (T,) absolute frame indices, past = (k, v, pos) of window - 1 frames
    ((L, window-1, N, K) twice and (window-1,), invalid slots at pos -1)
    -> (L, T, D), new (k, v) of the last window - 1 frames."""
    d = x.shape[-1]
    if d % self.heads:
      raise ValueError(f"transformer width {d} is not divisible by {self.heads} heads")
    n, k = self.heads, d // self.heads
    qkv_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                in_axis=0, out_axis=(1, 2))
    out_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                in_axis=(0, 1), out_axis=2)
    proj = lambda name: self.param(
        name, partitioned(qkv_init, axes.EMBED, axes.HEADS, axes.KV), (d, n, k), self.param_dtype)
    wq, wk, wv = proj("query"), proj("key"), proj("value")
    wo = self.param("out", partitioned(out_init, axes.HEADS, axes.KV, axes.EMBED), (n, k, d),
                    self.param_dtype)
    x, wq, wk, wv, wo = nn.dtypes.promote_dtype(x, wq, wk, wv, wo, dtype=self.dtype)
    q = rope(jnp.einsum("ltd,dnk->ltnk", x, wq), pos)
    kk = rope(jnp.einsum("ltd,dnk->ltnk", x, wk), pos)
    v = jnp.einsum("ltd,dnk->ltnk", x, wv)
    past_k, past_v, past_pos = past
    # S = T + window - 1 keys: the cached ones, then this chunk's.
    keys = jnp.concatenate([past_k.astype(kk.dtype), kk], axis=1)  # (L, S, N, K)
    values = jnp.concatenate([past_v.astype(v.dtype), v], axis=1)
    key_pos = jnp.concatenate([past_pos, pos])  # (S,)
    mask = ((key_pos[None, :] <= pos[:, None]) & (key_pos[None, :] > pos[:, None] - self.window)
            & (key_pos[None, :] >= 0))  # (T, S)
    out = attention.dot_product_attention(q, keys, values, mask)  # (L, T, N, K)
    y = jnp.einsum("ltnk,nkd->ltd", out, wo)
    m = self.window - 1
    return y, (_last_frames(keys, m), _last_frames(values, m))


class TransformerBlock(nn.Module):
  """Pre-LN block: x + attention(LN(x)), then x + MLP(LN(x)).

  Attributes:
    heads: N.
    window: attention window in frames.
    mlp_ratio: MLP hidden width / D.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  heads: int
  window: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, pos: Array, past: tuple[Array, Array, Array]
               ) -> tuple[Array, tuple[Array, Array]]:
    """x (L, T, D) -> (L, T, D), new (k, v) cache (see `TemporalAttention`)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: nn.LayerNorm(
        name=name, scale_init=partitioned(ones_init, axes.NORM),
        bias_init=partitioned(zeros_init, axes.NORM), **kw)
    d = x.shape[-1]
    attn = TemporalAttention(self.heads, self.window, name="attn", **kw)
    h, kv = attn(norm("norm_attn")(x), pos, past)
    x = x + h
    h = norm("norm_mlp")(x)
    h = dense(int(d * self.mlp_ratio), name="mlp_in", names=(axes.EMBED, axes.MLP), **kw)(h)
    h = dense(d, name="mlp_out", names=(axes.MLP, axes.EMBED), **kw)(nn.gelu(h))
    return x + h, kv


class TemporalTransformer(nn.Module):
  """Causal sliding-window transformer along time at every (h, w) position (the TECO idea).

  Tokens are the H x W positions of a feature map; each attends only to its
  own position in the current and the previous window - 1 frames. Rotary
  embeddings use the absolute frame index, carried in the cache as an offset,
  so chunked runs match whole-clip runs.

  Cache: dict(offset=() int32 index of the chunk's first frame,
  pos=(window-1,) int32 frame index of each cached slot (-1: empty),
  layers=tuple of (k, v), each (B*H*W, window-1, N, K), one per layer).

  Attributes:
    layers: number of blocks.
    heads: N.
    window: frames a query sees, itself included.
    mlp_ratio: MLP hidden width / D.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  layers: int
  heads: int
  window: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, cache: dict | None = None) -> tuple[Array, dict]:
    """x (B, T, H, W, D) -> ((B, T, H, W, D), cache)"""
    b, t, h, w, d = x.shape
    if d % self.heads:
      raise ValueError(f"transformer width {d} is not divisible by {self.heads} heads")
    m = self.window - 1
    tokens = einops.rearrange(x, "b t h w d -> (b h w) t d")  # (L, T, D)
    if cache is None:
      offset = jnp.zeros((), jnp.int32)
      past_pos = jnp.full((m,), -1, jnp.int32)
      empty = jnp.zeros((tokens.shape[0], m, self.heads, d // self.heads), self.dtype)
      past_layers = ((empty, empty),) * self.layers
    else:
      offset, past_pos, past_layers = cache["offset"], cache["pos"], cache["layers"]
    pos = offset + jnp.arange(t, dtype=jnp.int32)  # (T,)
    new_layers = []
    for i in range(self.layers):
      past_k, past_v = past_layers[i]
      tokens, kv = TransformerBlock(self.heads, self.window, self.mlp_ratio, dtype=self.dtype,
                                    param_dtype=self.param_dtype, name=f"block_{i}")(
                                        tokens, pos, (past_k, past_v, past_pos))
      new_layers.append(kv)
    new_pos = _last_frames(jnp.concatenate([past_pos, pos])[None], m)[0]
    y = einops.rearrange(tokens, "(b h w) t d -> b t h w d", b=b, h=h, w=w)
    y = nn.with_logical_constraint(y, FEATURE_MAP)
    return y, {"offset": offset + t, "pos": new_pos, "layers": tuple(new_layers)}
