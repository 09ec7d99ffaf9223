"""The Video DiT: spatial, temporal, cross-attention and MLP blocks over latent patches.

Each block (`DiTBlock`) is, on tokens x:
  x += g1 * SpatialAttention(mod(LN(x), a1, b1))   tokens of the same clip and frame
  x += g2 * TemporalAttention(mod(LN(x), a2, b2))  same clip and (h, w); causal or full
  x += CrossAttention(LN(x), text)                  the clip's caption, masked by its length
  x += g3 * MLP(mod(LN(x), a3, b3))
where the shifts b, scales a and gates g come from the diffusion time of the
token's frame (adaLN-single, as PixArt-alpha: one time MLP for the whole
network plus a learned 9 x D table per block; everything starts at zero, so
a new block is the identity). Times are per frame: known (conditioning)
frames are at time 0 and clean.

With `rope`, spatial attention also rotates queries and keys by the tokens'
(h, w) and temporal attention by their true frame index (rotary positions,
RoPE), so attention can follow relative offsets (an object's motion) the same
way at every position; the learned absolute tables stay.

Temporal attention uses the frames' true indices: "causal" lets a frame see
frames of lower or equal index and every known frame (time exactly 0), so a
last frame given for interpolation or backward extension is visible while
generated frames stay causal among themselves; "full" sees all frames.

Two layouts (vidgen/models/patches.py): `__call__` takes a bucketed batch
(B, T, H, W, C) and attends within frames (B*T, H'W') and along positions
(B*H'W', T') with no clip-wide mask; `packed` takes NaViT rows with segment
ids and uses masked attention over each row. Both give the same output for
the same clip (tests/models/test_dit.py).

Shape legend: B batch, T frames, H height, W width, C channels, S = H'*W'
spatial tokens, L tokens, R packed rows, M clips per row, D width, N heads.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidgen import configlib
from vidgen.models import attention
from vidgen.models import patches as patches_lib
from vidgen.models.layers import dense, partitioned
from vidgen.parallel import axes
from vidgen.parallel import context as context_lib
from vidgen.text.encoder import MLP

Array = jax.Array
Dtype = Any

MOD_SLOTS = 9  # (shift, scale, gate) for spatial attention, temporal attention, MLP
TIME_FREQS = 256


def timestep_embedding(t: Array, dim: int = TIME_FREQS, max_period: float = 10_000.0) -> Array:
  """Sinusoidal features of 1000 * t (t in [0, 1]): (...,) -> (..., dim), float32."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def modulate(x: Array, shift: Array, scale: Array) -> Array:
  return x * (1.0 + scale) + shift


def _plain_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(name=name, use_scale=False, use_bias=False, epsilon=1e-6, dtype=dtype)


def _affine_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(name=name, epsilon=1e-6, dtype=dtype, param_dtype=param_dtype,
                      scale_init=partitioned(nn.initializers.ones, axes.NORM),
                      bias_init=partitioned(nn.initializers.zeros, axes.NORM))


# ---------------------------------------------------------------------------
# Attention masks. Bucketed geometry: frame (B, T') patch-frame indices and
# known (B, T'). Packed geometry adds per-token segment, t, h, w, known (R, L)
# and text_segment (R, M*Lt).


def _is_packed(geom: dict) -> bool:
  return "segment" in geom


def temporal_visible(q_frame: Array, k_frame: Array, k_known: Array, causal: bool) -> Array:
  """Whether a query frame sees a key frame: everything (full), or earlier/equal or known keys."""
  if not causal:
    return jnp.ones(jnp.broadcast_shapes(q_frame.shape, k_frame.shape), bool)
  return (k_frame <= q_frame) | k_known


def spatial_attention(attn: nn.Module, x: Array, geom: dict, chunk: int = 0) -> Array:
  attn = functools.partial(attn, rope=geom.get("rope_spatial"))
  if not _is_packed(geom):  # x (B, T, S, D): attend over S within each frame
    if chunk > 0:  # query blocks: long frames (720p: 3,600 tokens) without (S, S) logits
      return attn(x, attend=functools.partial(attention.chunked_attention, chunk=chunk))
    return attn(x)
  seg, t = geom["segment"], geom["t"]
  mask = (seg[:, :, None] == seg[:, None, :]) & (t[:, :, None] == t[:, None, :])
  return attn(x, mask=mask[:, None])  # (R, 1, L, L)


def temporal_attention(attn: nn.Module, x: Array, geom: dict, causal: bool,
                       context_attention: str = "ulysses") -> Array:
  if not _is_packed(geom):  # x (B, T, S, D) -> (B, S, T, D): attend over T at each position
    frame, known = geom["frame"], geom["known"]
    visible = lambda q, k, k_known: temporal_visible(q, k, k_known, causal)
    xs = jnp.swapaxes(x, 1, 2)
    rope = geom.get("rope_temporal")
    if context_lib.context_size() > 1 and context_attention == "ring":
      y = attn(xs, attend=lambda q, k, v, mask, scale: context_lib.ring(
          q, k, v, frame, frame, known, visible, scale), rope=rope)
    else:
      attend = None
      if context_lib.context_size() > 1:  # frames sharded over context: all-to-all to heads
        attend = lambda q, k, v, mask, scale: context_lib.ulysses(
            q, k, v, mask, scale, leading=(axes.BATCH, None))
      mask = visible(frame[:, :, None], frame[:, None, :], known[:, None, :])
      y = attn(xs, mask=mask[:, None, None], attend=attend, rope=rope)  # mask (B, 1, 1, T, T)
    return nn.with_logical_constraint(jnp.swapaxes(y, 1, 2), (axes.BATCH, axes.FRAMES, None, None))
  seg, t, h, w, known = (geom[k] for k in ("segment", "t", "h", "w", "known"))
  same = lambda a: a[:, :, None] == a[:, None, :]
  mask = same(seg) & same(h) & same(w) & temporal_visible(
      t[:, :, None], t[:, None, :], known[:, None, :], causal)
  return attn(x, mask=mask[:, None], rope=geom.get("rope_temporal"))


def cross_attention(attn: nn.Module, x: Array, text: Array, text_mask: Array, geom: dict
                    ) -> Array:
  if not _is_packed(geom):  # x (B, T, S, D), text (B, Lt, D)
    b, t, s, d = x.shape
    y = attn(x.reshape(b, t * s, d), text, mask=text_mask[:, None, None, :])
    return y.reshape(b, t, s, d)
  mask = (geom["segment"][:, :, None] == geom["text_segment"][:, None, :]) & text_mask[:, None, :]
  return attn(x, text, mask=mask[:, None])


# ---------------------------------------------------------------------------
# Blocks.


class DiTBlock(nn.Module):
  """Spatial attention, temporal attention, text cross-attention and MLP (see the module doc).

  Attributes:
    heads: N.
    mlp_ratio: MLP hidden width / D.
    causal: temporal attention causal (else full).
    qk_norm: RMS-normalise queries and keys.
    dtype: compute dtype.
    param_dtype: parameter dtype.
    context_attention: temporal attention when frames are sharded over the
      `context` mesh axis: "ulysses" | "ring" (vidgen/parallel/context.py).
    attention_chunk: spatial attention in blocks of this many queries (0: one block).
    scanned: return (x, None) for `nn.scan`.
  """

  heads: int
  mlp_ratio: float = 4.0
  causal: bool = True
  qk_norm: bool = True
  context_attention: str = "ulysses"
  attention_chunk: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  scanned: bool = False

  @nn.compact
  def __call__(self, x: Array, mod: Array, text: tuple[Array, Array], geom: dict):
    """x (B, T, S, D) or (R, L, D); mod (..., 9, D) broadcastable against x's token axes."""
    d = x.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    table = self.param("modulation", partitioned(nn.initializers.zeros, axes.TABLE, axes.EMBED),
                       (MOD_SLOTS, d), self.param_dtype)
    m = mod + table.astype(mod.dtype)
    shift_s, scale_s, gate_s, shift_t, scale_t, gate_t, shift_m, scale_m, gate_m = (
        m[..., i, :] for i in range(MOD_SLOTS))
    attn = lambda name: attention.Attention(self.heads, self.qk_norm, name=name, **kw)

    h = modulate(_plain_norm("norm_spatial", self.dtype)(x), shift_s, scale_s)
    x = x + gate_s * spatial_attention(attn("spatial"), h, geom, self.attention_chunk)
    h = modulate(_plain_norm("norm_temporal", self.dtype)(x), shift_t, scale_t)
    x = x + gate_t * temporal_attention(attn("temporal"), h, geom, self.causal,
                                        self.context_attention)
    h = _affine_norm("norm_cross", **kw)(x)
    x = x + cross_attention(attn("cross"), h, text[0], text[1], geom)
    h = modulate(_plain_norm("norm_mlp", self.dtype)(x), shift_m, scale_m)
    x = x + gate_m * MLP(int(d * self.mlp_ratio), name="mlp", **kw)(h)
    x = x.astype(self.dtype)
    return (x, None) if self.scanned else x


REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # recompute the rest
    # Keep the same matmul outputs in host memory instead of HBM (TPU and GPU
    # have a pinned host memory space; copies overlap with compute).
    "offload": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}


class VideoDiT(nn.Module):
  """The Video DiT over latent clips, conditioned on text embeddings and per-frame times.

  Attributes:
    channels: latent channels C.
    patch: (pt, ph, pw).
    width: D.
    depth: blocks.
    heads: N.
    mlp_ratio: MLP hidden width / D.
    max_frames: position table rows in patch frames (largest frame index + 1).
    max_height: position table rows in patch rows.
    max_width: position table rows in patch columns.
    causal: temporal attention causal (else full).
    qk_norm: RMS-normalise queries and keys.
    remat: "none" | "full" | "dots" | "offload" (see `REMAT_POLICIES`).
    context_attention: "ulysses" | "ring", temporal attention across the
      `context` mesh axis (vidgen/parallel/context.py).
    attention_chunk: spatial attention in blocks of this many queries (0: one
      block), so a long frame's (S, S) logits never exist at once.
    scan_layers: `nn.scan` over blocks (stacked params, one compiled block).
    pos_init: start of the learned position tables, "sincos" | "normal"
      (`patches.Positions`).
    pooled_text: add the caption's pooled embedding to the time embedding, so
      adaLN is conditioned on the caption as well as cross-attention (a
      global signal that small models pick up quickly; SD3 does the same).
    rope: rotary positions in self-attention: (h, w) in spatial attention,
      the true frame index in temporal attention (`attention.rope_tables`).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """

  channels: int
  patch: tuple[int, int, int] = (1, 2, 2)
  width: int = 64
  depth: int = 2
  heads: int = 2
  mlp_ratio: float = 4.0
  max_frames: int = 16
  max_height: int = 32
  max_width: int = 32
  causal: bool = True
  qk_norm: bool = True
  remat: str = "none"
  context_attention: str = "ulysses"
  attention_chunk: int = 0
  scan_layers: bool = False
  pos_init: str = "sincos"
  pooled_text: bool = True
  rope: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def patch_values(self) -> int:
    return int(math.prod(self.patch)) * self.channels

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = self.width
    self.embed = dense(d, name="patch_embed", names=(axes.CONV_IN, axes.EMBED), **kw)
    self.positions = patches_lib.Positions(d, self.max_frames, self.max_height, self.max_width,
                                           table_init=self.pos_init, param_dtype=self.param_dtype)
    self.time_in = dense(d, names=(axes.CONV_IN, axes.EMBED), **kw)
    self.time_out = dense(d, names=(axes.EMBED, axes.MLP), **kw)
    self.time_mod = nn.Dense(
        MOD_SLOTS * d, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=partitioned(nn.initializers.zeros, axes.EMBED, axes.MLP),
        bias_init=partitioned(nn.initializers.zeros, axes.MLP))
    self.text_in = dense(d, names=(axes.CONV_IN, axes.EMBED), **kw)
    self.text_out = dense(d, names=(axes.EMBED, axes.MLP), **kw)
    if self.pooled_text:
      self.text_pool = dense(d, names=(axes.CONV_IN, axes.EMBED), **kw)
    self.final_table = self.param(
        "final_modulation", partitioned(nn.initializers.zeros, axes.TABLE, axes.EMBED),
        (2, d), self.param_dtype)
    self.final_norm = _plain_norm("final_norm", self.dtype)
    self.unembed = nn.Dense(
        self.patch_values, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=partitioned(nn.initializers.zeros, axes.EMBED, axes.CONV_OUT),
        bias_init=partitioned(nn.initializers.zeros, axes.CONV_OUT))
    context_lib.check_mode(self.context_attention)
    block_kw = dict(heads=self.heads, mlp_ratio=self.mlp_ratio, causal=self.causal,
                    qk_norm=self.qk_norm, context_attention=self.context_attention,
                    attention_chunk=self.attention_chunk, **kw)
    block = DiTBlock
    if self.remat != "none":
      if self.remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {self.remat!r}; known: none, "
                         f"{', '.join(REMAT_POLICIES)}")
      block = nn.remat(block, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan_layers)
    if self.scan_layers:
      self.blocks = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=self.depth,
          metadata_params={nn.PARTITION_NAME: axes.LAYERS})(scanned=True, name="blocks",
                                                             **block_kw)
    else:
      self.blocks = [block(name=f"block_{i}", **block_kw) for i in range(self.depth)]

  # -- shared pieces ---------------------------------------------------------

  def _time(self, times: Array, pooled: Array | None = None) -> tuple[Array, Array]:
    """(...,) times -> time embedding (..., D) and block modulation (..., 9, D).

    `pooled` (broadcastable to (..., D)): the caption's pooled embedding, added
    to the time embedding so that adaLN carries the caption too.
    """
    emb = self.time_out(nn.silu(self.time_in(timestep_embedding(times).astype(self.dtype))))
    if pooled is not None:
      emb = emb + pooled
    mod = self.time_mod(nn.silu(emb))
    return emb, mod.reshape(*mod.shape[:-1], MOD_SLOTS, self.width)

  def _text(self, text: Array) -> Array:
    return self.text_out(nn.gelu(self.text_in(text.astype(self.dtype)), approximate=True))

  def _pool(self, text: Array, text_mask: Array) -> Array | None:
    """(..., Lt, Dt) text, (..., Lt) mask -> (..., D): projected masked mean (None: off)."""
    if not self.pooled_text:
      return None
    m = text_mask.astype(jnp.float32)[..., None]
    mean = (text.astype(jnp.float32) * m).sum(-2) / jnp.maximum(m.sum(-2), 1.0)
    return self.text_pool(mean.astype(self.dtype))

  def _add_rope(self, geom: dict, spatial: tuple[Array, Array], temporal: tuple[Array]) -> None:
    """With `rope`, puts the rotary tables of spatial (h, w) and temporal (frame) positions,
    shaped to broadcast against the queries, into `geom`."""
    if self.rope:
      k = self.width // self.heads
      geom["rope_spatial"] = attention.rope_tables(spatial, k)
      geom["rope_temporal"] = attention.rope_tables(temporal, k)

  def _run_blocks(self, x: Array, mod: Array, text: tuple[Array, Array], geom: dict) -> Array:
    if self.scan_layers:
      x, _ = self.blocks(x, mod, text, geom)
      return x
    for block in self.blocks:
      x = block(x, mod, text, geom)
    return x

  def _out(self, x: Array, emb: Array) -> Array:
    shift, scale = (self.final_table[i].astype(emb.dtype) + emb for i in range(2))
    return self.unembed(modulate(self.final_norm(x), shift, scale))

  # -- layouts ---------------------------------------------------------------

  def __call__(self, z: Array, times: Array, text: Array, text_mask: Array,
               frame_index: Array | None = None) -> Array:
    """Bucketed batch.

    Args:
      z: (B, T, H, W, C) noisy latents (known frames clean).
      times: (B, T) diffusion time of each latent frame in [0, 1]; 0 marks a known frame.
      text: (B, Lt, Dt) text embeddings; text_mask (B, Lt) bool.
      frame_index: (B, T) int true latent frame indices (default 0..T-1), for
        sparse frame sets.

    Returns:
      (B, T, H, W, C): the prediction (velocity, noise or v, per the diffusion).
    """
    b, t, h, w, c = z.shape
    if c != self.channels:
      raise ValueError(f"latents have {c} channels, the DiT was built for {self.channels}")
    gt, gh, gw = patches_lib.grid_shape((t, h, w), self.patch)
    patches_lib.check_grid((gt, gh, gw), self.max_frames, self.max_height, self.max_width)
    pt = self.patch[0]
    if frame_index is None:
      frame_index = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    frame = frame_index[:, ::pt] // pt  # (B, T') patch-frame indices
    frame_times = times[:, ::pt]  # (B, T'); a patch frame's latent frames share one time
    tokens = patches_lib.patchify(z.astype(self.dtype), self.patch).reshape(b, gt, gh * gw, -1)
    hh, ww = jnp.meshgrid(jnp.arange(gh), jnp.arange(gw), indexing="ij")
    pos = self.positions(frame[:, :, None], hh.reshape(1, 1, -1), ww.reshape(1, 1, -1))
    x = self.embed(tokens) + pos.astype(self.dtype)  # (B, T', S, D)
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.FRAMES, None, None))
    pooled = self._pool(text, text_mask)
    emb, mod = self._time(frame_times, None if pooled is None else pooled[:, None])
    # emb (B, T', D), mod (B, T', 9, D)
    geom = {"frame": frame, "known": frame_times == 0}
    # Rotary tables (S, 1, K/2) for queries (B, T', S, N, K), (B, 1, T', 1, K/2) for (B, S, T', N, K).
    self._add_rope(geom, (hh.reshape(-1, 1), ww.reshape(-1, 1)), (frame[:, None, :, None],))
    x = self._run_blocks(x, mod[:, :, None], (self._text(text), text_mask), geom)
    out = self._out(x, emb[:, :, None])  # (B, T', S, P)
    out = patches_lib.unpatchify(out.reshape(b, gt, gh, gw, -1), self.patch)
    return out.astype(jnp.float32)

  def packed(self, tokens: Array, segment: Array, t: Array, h: Array, w: Array, times: Array,
             text: Array, text_mask: Array) -> Array:
    """Packed (NaViT) rows.

    Args:
      tokens: (R, L, P) patch values (patches.pack of patchified latents).
      segment: (R, L) clip id within the row (1, 2, ...; 0 pads).
      t, h, w: (R, L) patch-grid indices (t: the true patch-frame index).
      times: (R, L) diffusion time of each token's frame (0: known).
      text: (R, M, Lt, Dt) text embeddings of the row's clips by segment - 1;
        text_mask (R, M, Lt).

    Returns:
      (R, L, P) predictions (padding tokens hold garbage; `patches.unpack` drops them).
    """
    r, m, lt, _ = text.shape
    x = self.embed(tokens.astype(self.dtype)) + self.positions(t, h, w).astype(self.dtype)
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, None))
    pooled = self._pool(text, text_mask)  # (R, M, D): one per clip of the row
    if pooled is not None:  # each token takes its clip's; padding (segment 0) the first
      pooled = jnp.take_along_axis(pooled, jnp.maximum(segment - 1, 0)[..., None], axis=1)
    emb, mod = self._time(times, pooled)  # (R, L, D), (R, L, 9, D)
    text_segment = jnp.broadcast_to(jnp.arange(1, m + 1, dtype=jnp.int32)[:, None], (m, lt))
    geom = {"segment": segment, "t": t, "h": h, "w": w, "known": times == 0,
            "text_segment": jnp.broadcast_to(text_segment.reshape(1, m * lt), (r, m * lt))}
    self._add_rope(geom, (h[..., None], w[..., None]), (t[..., None],))  # tables (R, L, 1, K/2)
    text_flat = self._text(text.reshape(r, m * lt, -1))
    x = self._run_blocks(x, mod, (text_flat, text_mask.reshape(r, m * lt)), geom)
    return self._out(x, emb).astype(jnp.float32)


def dit_from_config(config: Any) -> VideoDiT:
  """The DiT `config.dit` describes, for latents of `config.vae.latent_channels` channels."""
  cfg = config.dit
  variant, patch = configlib.dit_size(cfg)
  return VideoDiT(
      channels=int(config.vae.latent_channels), patch=patch, width=variant.width,
      depth=variant.depth, heads=variant.heads, mlp_ratio=variant.mlp_ratio,
      max_frames=int(cfg.max_frames), max_height=int(cfg.max_height),
      max_width=int(cfg.max_width), causal=cfg.temporal == "causal", qk_norm=bool(cfg.qk_norm),
      remat=cfg.remat, context_attention=cfg.get("context_attention", "ulysses"),
      attention_chunk=int(cfg.get("attention_chunk", 0)),
      scan_layers=bool(cfg.scan_layers), pos_init=cfg.get("pos_init", "sincos"),
      pooled_text=bool(cfg.get("pooled_text", True)), rope=bool(cfg.get("rope", False)),
      dtype=jnp.dtype(cfg.dtype),
      param_dtype=jnp.dtype(cfg.param_dtype))
