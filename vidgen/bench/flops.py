"""Video DiT size, FLOPs and activation memory: analytic, cross-checked against the model and XLA.

    python -m vidgen.bench.flops [--variants=tiny,S,B,L,XL] [--patch=1x2x2]
        [--frames=16 --height=32 --width=32] [--batch=1] [--text_len=32] [--channels=16]
        [--dtype=bfloat16] [--remat=none|full|dots|offload] [--xla_check] [--xla_train]
        [--residuals] [--xla_depth=auto|full] [--dit_width=0 --dit_depth=0 --dit_heads=0]

`--frames/--height/--width` are in LATENT units (16x32x32 latents are 256x256
pixels with an 8x spatial VAE, and 61 video frames with the default 4x causal
temporal VAE). Prints one JSON line per variant on stdout (logs go to stderr):

  {"bench": "dit_flops", "variant", "patch", "latents", "grid", "tokens_per_clip",
   "batch", "params", "params_analytic", "text_encoder_params",
   "text_encoder_params_analytic", "forward_flops", "dit_forward_flops",
   "text_encoder_forward_flops", "recompute_flops", "train_flops_per_step",
   "activation_memory_bytes_estimate", "flops_breakdown", ...,
   "params_match", ..., with --xla_check: "xla_forward_flops", "xla_method",
   "analytic_over_xla", "xla_compile_s"; with --xla_train: "xla_train_flops",
   "xla_train_method", "train_analytic_over_xla"; with --residuals:
   "jax_residual_bytes", "estimate_over_residuals"}

Library (what bench.train_step imports for MFU):
  `dit_flops(variant, patch, latents, batch, text_len, channels, ...) -> dict`
      the analytic figures for a variant name; `latents` is (T, H, W) in latent
      frames / rows / columns (not patches), divided here by the patch.
  `config_flops(config, latents, batch) -> dict` the same for a full config
      (its `dit`, `text` and `vae.latent_channels`).
  `exact_params(config, latents) -> (dit, text encoder)` parameter counts from
      `jax.eval_shape` of the real modules' init (`dit_from_config`,
      `encoder_from_config`); nothing is materialised.
  `xla_forward_flops(config, latents, batch) -> (flops, method)` from
      `jax.jit(forward).lower(ShapeDtypeStructs).compile().cost_analysis()`;
      `xla_train_flops` the same for the gradients.
  `flops_config`, `forward_breakdown`, `params_analytic`, `activation_bytes`,
  `residual_bytes`: the pieces.

What is counted (per step, the whole batch):
  * Matmuls only, 2*m*n*k each: projections, MLPs, and the attention scores
    (q k^T) and weighted sums (p v) of spatial (over S = H'W' keys), temporal
    (over T' keys) and text cross-attention (over Lt keys); the text
    encoder's layers; the patch embed / unembed; the time MLP (on B*T' frame
    times) and the caption projection (on B*Lt text tokens). Norms, softmax,
    GELU, modulation and residual adds are not (XLA counts them, which is why
    `analytic_over_xla` sits a little below 1). Masks do not reduce the
    count: causal temporal attention computes the full T' x T' scores.
  * forward_flops = DiT + text encoder (trained jointly by default).
  * train_flops_per_step = 3 * forward_flops (forward, plus the backward's
    gradients with respect to inputs and weights) + recompute_flops: with
    remat "full" the blocks' forward again (only the blocks are remat'd, not
    the embeddings, the time MLP or the text encoder); with "dots"
    (`dots_with_no_batch_dims_saveable`) the attention scores and weighted
    sums of the blocks, the only matmuls with batch dimensions; 0 with "none".
    This is the usual "model FLOPs" for MFU when remat is "none" and hardware
    FLOPs otherwise (report which).

Activation memory (`activation_memory_bytes_estimate`, the whole batch): the
tensors a fusing compiler keeps for the backward pass: the inputs of every
matmul and norm and the outputs the backward reads (GELU input and output,
softmax probabilities, gate products); elementwise intermediates (inside
LN, RMSNorm, GELU, softmax, modulation) are assumed fused away. `b` = bytes
of the compute dtype; the softmax probabilities are kept in float32 (4
bytes) and in `b` (the cast that multiplies v). Per token and block, with
q = 1 when qk_norm is on (the pre-norm q and k are saved too), h =
mlp_ratio * D and N heads:

  spatial   b * (3D [LN in, LN out, modulated] + 3D [q k v] + 2qD + 2D [attn out, o out])
            + (4 + b) * N * S
  temporal  the same with T' keys: ... + (4 + b) * N * T'
  cross     b * (2D [LN in, out] + (1 + q)D [q] + D [attn out]) + (4 + b) * N * Lt
            (plus per clip and block b * (2 + q) * Lt * D for the text keys and values)
  mlp       b * (3D [LN in, out, modulated] + 2h [GELU in, out] + D [fc out])

  block_none(token) = the sum (37 D b + (4 + b) N (S + T' + Lt) for qk_norm, h = 4D).

  remat "none": depth * L * block_none
  remat "full": depth * L * b * D (each block's input) + L * block_none (one block
                recomputed in the backward at a time)
  remat "dots": depth * L * b * (D + 4D + 4D + 2D + D + h) (block input and the
                outputs of the q/k/v/o and MLP projections; text k, v per clip) +
                L * block_none (one block's recomputed rest)
  remat "offload": the FLOPs of "dots" and the device memory of "full" (the
                saved matmul outputs go to host memory)

plus, outside the blocks, per token b * (2P + 4D) (patch values, embedding,
final norm and modulation, unembed output) and per text token the text
encoder's layers (b * (8 Dt + 2 h_t) + (4 + b) * N_t * Lt per layer) and the
caption projection b * (Dt + 3D), all times the batch. Parameters, gradients
and optimizer state are not activations and are not included.

How it compares (S and XL, 16x32x32 latents, bf16, `--residuals`, which
counts the residuals JAX's autodiff saves, from `jax.eval_shape` of
`jax.vjp`, before any XLA fusion): remat "none" 0.47x the raw residuals (the
raw set keeps every float32 intermediate of the norms, softmax and GELU);
"dots" 1.1-1.25x and "full" 2.4-3.6x (the estimate adds one block's
recomputation, which the residuals do not show; the saved parts agree: D per
token and block for "full", 16 D for "dots"). XLA's own buffer assignment
on the CPU (S, 8x16x16, batch 2, float32) needs about 1.4x the "none"
estimate and does not shrink with remat; measure on the accelerator
(`compiled.memory_analysis()` on an abstract TPU topology, DESIGN.md) before
trusting a tight fit.

The XLA cross-check compiles the forward (text encoder + DiT) from abstract
shapes. Blocks are identical, so at depth > 2 (`--xla_depth=auto`) it
compiles the model at depths 1 and 2, at the real width and token grid, and
extrapolates linearly (f(depth) = f1 + (depth - 1) * (f2 - f1)): exact for
identical blocks and seconds to compile at any size; `--xla_depth=full`
compiles the real depth.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from flax.core import meta

from vidgen import configlib
from vidgen.models import dit as dit_lib
from vidgen.models import patches as patches_lib
from vidgen.text import encoder as encoder_lib

FP32_BYTES = 4


# ---------------------------------------------------------------------------
# Configs.


def parse_patch(text: str) -> tuple[int, int, int]:
  """"1x2x2" -> (1, 2, 2); "2" -> (1, 2, 2)."""
  m = re.fullmatch(r"\s*(\d+)(?:x(\d+)x(\d+))?\s*", str(text))
  if not m:
    raise ValueError(f"bad patch {text!r}: expected PtxPhxPw (e.g. 1x2x2) or P (1xPxP)")
  patch = (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m.group(2) else (
      1, int(m.group(1)), int(m.group(1)))
  if min(patch) < 1:
    raise ValueError(f"bad patch {text!r}: sizes must be >= 1")
  return patch


def variant_spec(variant: str, patch: Sequence[int] | str | None = None) -> str:
  """A `dit.variant` string NAME/PtxPhxPw; `patch` (if given) overrides the name's own."""
  name = variant.split("/")[0].strip()
  _, own = configlib.parse_variant(variant)  # raises ConfigError naming a bad variant
  if patch is None:
    patch = own
  elif isinstance(patch, str):
    patch = parse_patch(patch)
  return f"{name}/{'x'.join(str(int(p)) for p in patch)}"


def flops_config(variant: str, patch: Sequence[int] | str | None = None,
                 latents: Sequence[int] = (16, 32, 32), channels: int = 16, text_len: int = 32,
                 dtype: str = "bfloat16", remat: str = "none",
                 max_grid: Sequence[int] | None = None,
                 sizes: Sequence[int] = (0, 0, 0)) -> configlib.ConfigDict:
  """The `dit`, `text` and `vae` sections these functions read, for a variant and clip size.

  Position tables are sized to the clip's patch grid unless `max_grid` (T', H', W')
  says otherwise; the text encoder is configlib's default with max_len = text_len.
  `sizes` (width, depth, heads) override the variant's (`dit.width/depth/heads`; 0: its own).
  """
  spec = variant_spec(variant, patch)
  _, p = configlib.parse_variant(spec)
  grid = patches_lib.grid_shape(latents, p)
  config = configlib.ConfigDict(dict(
      dit=configlib.dit_config(), text=configlib.text_config(), vae=configlib.vae_config()))
  d = config.dit
  d.variant = spec
  d.max_frames, d.max_height, d.max_width = (int(g) for g in (max_grid or grid))
  d.dtype = dtype
  d.remat = remat
  d.width, d.depth, d.heads = (int(n) for n in sizes)
  config.text.max_len = int(text_len)
  config.vae.latent_channels = int(channels)
  return config


# ---------------------------------------------------------------------------
# Analytic counts.


def _dims(config: Any, latents: Sequence[int]) -> dict[str, Any]:
  variant, patch = configlib.dit_size(config.dit)
  gt, gh, gw = patches_lib.grid_shape(latents, patch)
  e = config.text.encoder
  d = variant.width
  return dict(
      name=config.dit.variant.split("/")[0], patch=patch, grid=(gt, gh, gw), T=gt, S=gh * gw,
      L=gt * gh * gw, D=d, depth=variant.depth, N=variant.heads,
      h=int(d * variant.mlp_ratio), P=math.prod(patch) * int(config.vae.latent_channels),
      qk=int(bool(config.dit.qk_norm)), Dt=int(e.width), depth_t=int(e.depth),
      N_t=int(e.heads), h_t=int(int(e.width) * float(e.mlp_ratio)),
      vocab=int(config.text.vocab_size), max_len=int(config.text.max_len),
      tables=int(config.dit.max_frames) + int(config.dit.max_height) + int(config.dit.max_width),
      pooled=int(bool(config.dit.get("pooled_text", True))))


def params_analytic(config: Any, latents: Sequence[int] = (16, 32, 32)) -> tuple[int, int]:
  """(DiT params, text encoder params) by formula (must equal `exact_params`)."""
  m = _dims(config, latents)
  d, h, p, k = m["D"], m["h"], m["P"], m["D"] // m["N"]
  qk_scales = 2 * k * m["qk"]  # RMSNorm scales of queries and keys, per attention
  block = (dit_lib.MOD_SLOTS * d  # the block's modulation table
           + 2 * (4 * d * d + qk_scales)  # spatial, temporal: q, k, v, o (no biases)
           + 4 * d * d + qk_scales + 2 * d  # cross: q, k, v, o on projected text; affine LN
           + d * h + h + h * d + d)  # MLP
  dit = (p * d + d  # patch embed
         + m["tables"] * d  # pos_t, pos_h, pos_w
         + dit_lib.TIME_FREQS * d + d + d * d + d  # time MLP
         + d * dit_lib.MOD_SLOTS * d + dit_lib.MOD_SLOTS * d  # time -> modulation
         + m["Dt"] * d + d + d * d + d  # caption projection
         + m["pooled"] * (m["Dt"] * d + d)  # pooled caption -> time embedding
         + 2 * d  # final modulation table
         + d * p + p  # unembed
         + m["depth"] * block)
  dt, ht = m["Dt"], m["h_t"]
  text = (m["vocab"] * dt + m["max_len"] * dt
          + m["depth_t"] * (2 * dt + 4 * dt * dt + 2 * dt + dt * ht + ht + ht * dt + dt)
          + 2 * dt)
  return int(dit), int(text)


def _mm(m: int, n: int, k: int) -> int:
  return 2 * m * n * k


def forward_breakdown(config: Any, latents: Sequence[int], batch: int,
                      text_len: int | None = None) -> dict[str, int]:
  """Matmul FLOPs of one forward of `batch` clips, by part (see the module docstring)."""
  m = _dims(config, latents)
  b, lt = int(batch), int(text_len if text_len is not None else m["max_len"])
  d, h, p, n_depth = m["D"], m["h"], m["P"], m["depth"]
  tokens = b * m["L"]
  frames = b * m["T"]  # frame times (one per patch frame)
  dt, ht, nt = m["Dt"], m["h_t"], m["depth_t"]
  per_block = dict(
      spatial_proj=4 * _mm(tokens, d, d),
      spatial_attn=2 * _mm(tokens, m["S"], d),  # scores + weighted sum over S keys, all heads
      temporal_proj=4 * _mm(tokens, d, d),
      temporal_attn=2 * _mm(tokens, m["T"], d),
      cross_q_o=2 * _mm(tokens, d, d),
      cross_kv=2 * _mm(b * lt, d, d),
      cross_attn=2 * _mm(tokens, lt, d),
      mlp=_mm(tokens, h, d) + _mm(tokens, d, h),
  )
  out = {k: n_depth * v for k, v in per_block.items()}
  out.update(
      patch_embed=_mm(tokens, d, p),
      time_mlp=_mm(frames, d, dit_lib.TIME_FREQS) + _mm(frames, d, d)
      + _mm(frames, dit_lib.MOD_SLOTS * d, d),
      caption_proj=_mm(b * lt, d, dt) + _mm(b * lt, d, d),
      unembed=_mm(tokens, p, d),
      text_encoder=nt * (4 * _mm(b * lt, dt, dt) + 2 * _mm(b * lt, lt, dt)
                         + _mm(b * lt, ht, dt) + _mm(b * lt, dt, ht)),
  )
  return out


_BLOCK_PARTS = ("spatial_proj", "spatial_attn", "temporal_proj", "temporal_attn", "cross_q_o",
                "cross_kv", "cross_attn", "mlp")
_ATTN_CORE = ("spatial_attn", "temporal_attn", "cross_attn")


def recompute_flops(config: Any, breakdown: dict[str, int]) -> int:
  """Forward FLOPs the backward repeats under `config.dit.remat` (only the blocks are remat'd)."""
  remat = config.dit.remat
  if remat == "none":
    return 0
  if remat == "full":
    return int(sum(breakdown[k] for k in _BLOCK_PARTS))
  if remat in ("dots", "offload"):  # dots without batch dims are saved (offload: on the host);
    # attention's batched einsums are not
    return int(sum(breakdown[k] for k in _ATTN_CORE))
  raise ValueError(f"unknown remat policy {remat!r}; known: {', '.join(configlib.REMAT)}")


def activation_bytes(config: Any, latents: Sequence[int], batch: int,
                     text_len: int | None = None) -> dict[str, int]:
  """The activation-memory estimate of the module docstring, in bytes, for the whole batch."""
  m = _dims(config, latents)
  b = jnp.dtype(config.dit.dtype).itemsize
  lt = int(text_len if text_len is not None else m["max_len"])
  d, h, q, n = m["D"], m["h"], m["qk"], m["N"]
  probs = FP32_BYTES + b
  spatial = b * (3 * d + 3 * d + 2 * q * d + 2 * d) + probs * n * m["S"]
  temporal = b * (3 * d + 3 * d + 2 * q * d + 2 * d) + probs * n * m["T"]
  cross = b * (2 * d + (1 + q) * d + d) + probs * n * lt
  mlp = b * (3 * d + 2 * h + d)
  block_token = spatial + temporal + cross + mlp
  text_kv = b * (2 + q) * lt * d  # per clip and block
  block_none = m["L"] * block_token + text_kv
  remat = config.dit.remat
  if remat == "none":
    blocks = m["depth"] * block_none
  elif remat in ("full", "offload"):  # offload: the saved matmul outputs live on the host
    blocks = m["depth"] * m["L"] * b * d + block_none
  elif remat == "dots":
    blocks = m["depth"] * (m["L"] * b * (d + 4 * d + 4 * d + 2 * d + d + h)
                           + b * 2 * lt * d) + block_none
  else:
    raise ValueError(f"unknown remat policy {remat!r}; known: {', '.join(configlib.REMAT)}")
  dt, ht = m["Dt"], m["h_t"]
  outside = m["L"] * b * (2 * m["P"] + 4 * d)
  text = lt * (m["depth_t"] * (b * (8 * dt + 2 * ht) + probs * m["N_t"] * lt)
               + b * (dt + 3 * d))
  bb = int(batch)
  return dict(blocks=int(bb * blocks), outside_blocks=int(bb * outside), text=int(bb * text),
              per_token_per_block_none=int(block_token),
              total=int(bb * (blocks + outside + text)))


def config_flops(config: Any, latents: Sequence[int] = (16, 32, 32), batch: int = 1,
                 text_len: int | None = None) -> dict[str, Any]:
  """Analytic params, FLOPs and activation memory for `config` (its dit, text, vae sections).

  Args:
    config: a config with `dit`, `text` and `vae` sections (a full stage-2
      config, or `flops_config(...)`).
    latents: (T, H, W) of one clip in LATENT frames, rows and columns (not
      patches); each must divide by the patch.
    batch: clips per step B.
    text_len: caption tokens Lt (default `config.text.max_len`).

  Returns:
    A dict of plain ints / lists (JSON-ready): variant, patch, latents, grid,
    tokens_per_clip, batch, text_len, width, depth, heads, params_analytic,
    text_encoder_params_analytic, forward_flops (DiT + text encoder),
    dit_forward_flops, text_encoder_forward_flops, recompute_flops,
    train_flops_per_step, train_flops_per_token, remat, dtype,
    activation_memory_bytes_estimate, activation_breakdown, flops_breakdown.
  """
  m = _dims(config, latents)
  lt = int(text_len if text_len is not None else m["max_len"])
  parts = forward_breakdown(config, latents, batch, lt)
  text_fwd = parts["text_encoder"]
  forward = int(sum(parts.values()))
  recompute = recompute_flops(config, parts)
  train = 3 * forward + recompute
  dit_params, text_params = params_analytic(config, latents)
  act = activation_bytes(config, latents, batch, lt)
  return dict(
      variant=m["name"], patch=list(m["patch"]), latents=[int(x) for x in latents],
      grid=list(m["grid"]), tokens_per_clip=m["L"], batch=int(batch), text_len=lt,
      width=m["D"], depth=m["depth"], heads=m["N"], channels=int(config.vae.latent_channels),
      params_analytic=dit_params, text_encoder_params_analytic=text_params,
      forward_flops=forward, dit_forward_flops=forward - text_fwd,
      text_encoder_forward_flops=text_fwd, remat=config.dit.remat, recompute_flops=recompute,
      train_flops_per_step=train, train_flops_per_token=train / (int(batch) * m["L"]),
      dtype=config.dit.dtype, activation_memory_bytes_estimate=act["total"],
      activation_breakdown=act, flops_breakdown=parts)


def dit_flops(variant: str, patch: Sequence[int] | str | None = None,
              latents: Sequence[int] = (16, 32, 32), batch: int = 1, text_len: int = 32,
              channels: int = 16, dtype: str = "bfloat16", remat: str = "none",
              max_grid: Sequence[int] | None = None) -> dict[str, Any]:
  """Analytic figures for a variant (see `config_flops` for the fields).

  Args:
    variant: a configlib.VARIANTS name, optionally with its patch ("S", "S/2x2x2").
    patch: (pt, ph, pw) or "PtxPhxPw"; None: the variant name's (default 1x2x2).
    latents: (T, H, W) of one clip in LATENT units (the patch grid is
      T/pt x H/ph x W/pw).
    batch: clips per step.
    text_len: caption tokens Lt (the text encoder's configlib defaults otherwise).
    channels: latent channels C.
    dtype: compute dtype (activation bytes only).
    remat: "none" | "full" | "dots" | "offload".
    max_grid: position-table sizes (T', H', W') in patches; default the clip's grid.
  """
  config = flops_config(variant, patch, latents, channels, text_len, dtype, remat, max_grid)
  return config_flops(config, latents, batch, text_len)


# ---------------------------------------------------------------------------
# The real modules: exact params and XLA's FLOPs.


def _abstract_inputs(config: Any, latents: Sequence[int], batch: int, text_len: int):
  t, h, w = (int(x) for x in latents)
  c = int(config.vae.latent_channels)
  f32 = jnp.float32
  return dict(
      z=jax.ShapeDtypeStruct((batch, t, h, w, c), f32),
      times=jax.ShapeDtypeStruct((batch, t), f32),
      tokens=jax.ShapeDtypeStruct((batch, text_len), jnp.int32),
      mask=jax.ShapeDtypeStruct((batch, text_len), jnp.bool_),
      text=jax.ShapeDtypeStruct((batch, text_len, int(config.text.encoder.width)), f32))


def _models(config: Any, depth: int | None = None):
  dit = dit_lib.dit_from_config(config)
  if depth is not None:
    dit = dit.clone(depth=depth)
  text = encoder_lib.encoder_from_config(config.text, int(config.text.vocab_size),
                                         dtype=jnp.dtype(config.dit.dtype),
                                         param_dtype=jnp.dtype(config.dit.param_dtype))
  return dit, text


def _abstract_params(config: Any, latents: Sequence[int], depth: int | None = None):
  """Unboxed ShapeDtypeStruct params {'dit', 'text'} from eval_shape of the real inits."""
  dit, text = _models(config, depth)
  x = _abstract_inputs(config, latents, 1, int(config.text.max_len))
  key = jax.random.key(0)

  def init():
    return {"dit": dit.init(key, jnp.zeros(x["z"].shape), jnp.zeros(x["times"].shape),
                            jnp.zeros(x["text"].shape), jnp.ones(x["mask"].shape, bool))["params"],
            "text": text.init(key, jnp.zeros(x["tokens"].shape, jnp.int32),
                              jnp.ones(x["mask"].shape, bool))["params"]}

  return meta.unbox(jax.eval_shape(init))


def count(tree: Any) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def exact_params(config: Any, latents: Sequence[int] = (16, 32, 32)) -> tuple[int, int]:
  """(DiT params, text encoder params) of the real modules, from `jax.eval_shape` of init."""
  params = _abstract_params(config, latents)
  return count(params["dit"]), count(params["text"])


def compiled_flops(compiled, required: bool = True) -> float | None:
  """FLOPs of a compiled program by XLA's cost_analysis (None, or an error when `required`)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per device program
    cost = cost[0] if cost else {}
  if not cost or "flops" not in cost:
    if required:
      raise RuntimeError("XLA's cost_analysis reported no FLOPs on this backend")
    return None
  return float(cost["flops"])


def _forward_fn(config: Any, depth: int | None):
  dit, text = _models(config, depth)

  def forward(p, z, times, tokens, mask):
    emb, mask = text.apply({"params": p["text"]}, tokens, mask)
    return dit.apply({"params": p["dit"]}, z, times, emb, mask)

  return forward


def _train_fn(config: Any, depth: int | None):
  """Gradients of a squared-error loss with respect to every parameter (DiT and text encoder)."""
  forward = _forward_fn(config, depth)

  def loss(p, z, times, tokens, mask):
    return jnp.mean(jnp.square(forward(p, z, times, tokens, mask)))

  return jax.grad(loss)


def _compiled_flops(config: Any, latents: Sequence[int], batch: int, text_len: int,
                    depth: int | None, train: bool) -> float:
  fn = (_train_fn if train else _forward_fn)(config, depth)
  params = _abstract_params(config, latents, depth)
  x = _abstract_inputs(config, latents, batch, text_len)
  lowered = jax.jit(fn).lower(params, x["z"], x["times"], x["tokens"], x["mask"])
  return compiled_flops(lowered.compile())


def _xla_flops(config: Any, latents: Sequence[int], batch: int, text_len: int | None,
               depth: str, train: bool) -> tuple[float, str]:
  lt = int(text_len if text_len is not None else config.text.max_len)
  real = configlib.dit_size(config.dit)[0].depth
  if depth == "full" or real <= 2:
    return _compiled_flops(config, latents, batch, lt, None, train), f"compiled at depth {real}"
  if depth != "auto":
    raise ValueError(f"depth must be 'auto' or 'full', got {depth!r}")
  f1 = _compiled_flops(config, latents, batch, lt, 1, train)
  f2 = _compiled_flops(config, latents, batch, lt, 2, train)
  return f1 + (real - 1) * (f2 - f1), f"extrapolated to depth {real} from depths 1 and 2"


def xla_forward_flops(config: Any, latents: Sequence[int] = (16, 32, 32), batch: int = 1,
                      text_len: int | None = None, depth: str = "auto") -> tuple[float, str]:
  """XLA's FLOPs for one forward (text encoder + DiT) of `batch` clips, and how they were got.

  Compiled from ShapeDtypeStructs (no parameter is materialised). `depth`
  "auto": models deeper than 2 blocks are compiled at depths 1 and 2 and
  extrapolated linearly (blocks are identical); "full": the real depth.
  """
  return _xla_flops(config, latents, batch, text_len, depth, train=False)


def xla_train_flops(config: Any, latents: Sequence[int] = (16, 32, 32), batch: int = 1,
                    text_len: int | None = None, depth: str = "auto") -> tuple[float, str]:
  """XLA's FLOPs for forward + backward (gradients of every parameter), as `xla_forward_flops`.

  Includes `config.dit.remat`'s recomputation. No optimizer update (elementwise).
  """
  return _xla_flops(config, latents, batch, text_len, depth, train=True)


def residual_bytes(config: Any, latents: Sequence[int] = (16, 32, 32), batch: int = 1,
                   text_len: int | None = None) -> int:
  """Bytes of the residuals JAX's autodiff saves for the backward pass, for `batch` clips.

  From `jax.eval_shape` of `jax.vjp` of the forward (nothing is compiled or
  materialised): the residuals of 2 * batch clips minus those of `batch`
  clips, so parameters (also residuals) cancel. Un-fused: XLA's fusion drops
  many of these elementwise intermediates, so this bounds
  `activation_bytes` from above; with remat it excludes the recomputation's
  transient peak.
  """
  lt = int(text_len if text_len is not None else config.text.max_len)
  forward = _forward_fn(config, None)
  params = _abstract_params(config, latents)

  def saved(b: int) -> int:
    x = _abstract_inputs(config, latents, b, lt)
    vjp = jax.eval_shape(lambda *a: jax.vjp(forward, *a)[1], params, x["z"], x["times"],
                         x["tokens"], x["mask"])
    return sum(math.prod(r.shape) * r.dtype.itemsize for r in jax.tree_util.tree_leaves(vjp))

  return int(saved(2 * batch) - saved(batch))


# ---------------------------------------------------------------------------
# CLI.


def measure(variant: str, patch: Sequence[int] | str | None, latents: Sequence[int], batch: int,
            text_len: int, channels: int, dtype: str, remat: str, xla_check: bool = False,
            xla_train: bool = False, residuals: bool = False,
            xla_depth: str = "auto", sizes: Sequence[int] = (0, 0, 0)) -> dict[str, Any]:
  """One JSON line: analytic figures, exact params and (optionally) XLA's and JAX's figures."""
  config = flops_config(variant, patch, latents, channels, text_len, dtype, remat, sizes=sizes)
  line = {"bench": "dit_flops"}
  line.update(config_flops(config, latents, batch, text_len))
  start = time.perf_counter()
  dit_params, text_params = exact_params(config, latents)
  line["params"], line["text_encoder_params"] = dit_params, text_params
  logging.info("%s: exact params in %.1f s", variant, time.perf_counter() - start)
  line["params_match"] = (dit_params == line["params_analytic"]
                          and text_params == line["text_encoder_params_analytic"])
  if xla_check:
    start = time.perf_counter()
    flops, method = xla_forward_flops(config, latents, batch, text_len, xla_depth)
    line["xla_forward_flops"] = flops
    line["xla_method"] = method
    line["analytic_over_xla"] = line["forward_flops"] / flops
    line["xla_compile_s"] = round(time.perf_counter() - start, 2)
  if xla_train:
    flops, method = xla_train_flops(config, latents, batch, text_len, xla_depth)
    line["xla_train_flops"] = flops
    line["xla_train_method"] = method
    line["train_analytic_over_xla"] = line["train_flops_per_step"] / flops
  if residuals:
    line["jax_residual_bytes"] = residual_bytes(config, latents, batch, text_len)
    line["estimate_over_residuals"] = (line["activation_memory_bytes_estimate"]
                                       / line["jax_residual_bytes"])
  order = ("bench", "variant", "patch", "latents", "grid", "tokens_per_clip", "batch", "params",
           "params_analytic", "train_flops_per_step", "forward_flops",
           "activation_memory_bytes_estimate")
  return {**{k: line[k] for k in order}, **line}


def _define_flags() -> None:
  """The CLI's flags, defined only when run as a program (importers keep their flag names free)."""
  flags.DEFINE_list("variants", ["tiny", "S", "B", "L", "XL"],
                    "Variant names (configlib.VARIANTS); NAME/PtxPhxPw overrides --patch.")
  flags.DEFINE_string("patch", "1x2x2", "Patch PtxPhxPw (or P for 1xPxP).")
  flags.DEFINE_integer("frames", 16, "Latent frames T per clip.")
  flags.DEFINE_integer("height", 32, "Latent rows H per clip.")
  flags.DEFINE_integer("width", 32, "Latent columns W per clip.")
  flags.DEFINE_integer("batch", 1, "Clips per step B.")
  flags.DEFINE_integer("text_len", 32, "Caption tokens Lt.")
  flags.DEFINE_integer("channels", 16, "Latent channels C.")
  flags.DEFINE_enum("dtype", "bfloat16", list(configlib.DTYPES),
                    "Compute dtype (activation bytes; FLOPs do not depend on it).")
  flags.DEFINE_enum("remat", "none", list(configlib.REMAT), "Remat policy of the blocks.")
  flags.DEFINE_integer("dit_width", 0, "DiT width for every variant (dit.width); 0: its own.")
  flags.DEFINE_integer("dit_depth", 0, "DiT blocks for every variant (dit.depth); 0: its own.")
  flags.DEFINE_integer("dit_heads", 0, "DiT heads for every variant (dit.heads); 0: its own.")
  flags.DEFINE_bool("xla_check", False,
                    "Also compile the forward from abstract shapes and report XLA's "
                    "cost_analysis FLOPs and analytic / XLA.")
  flags.DEFINE_bool("xla_train", False,
                    "Also compile forward + backward (gradients of every parameter) and report "
                    "XLA's FLOPs and analytic train FLOPs / XLA.")
  flags.DEFINE_bool("residuals", False,
                    "Also report the bytes JAX's autodiff saves for the backward (eval_shape of "
                    "jax.vjp; un-fused, an upper bound of the estimate).")
  flags.DEFINE_enum("xla_depth", "auto", ["auto", "full"],
                    "auto: depth > 2 extrapolated from depths 1 and 2; full: compile the real "
                    "depth (slow for big variants).")


def main(argv):
  del argv
  f = flags.FLAGS
  latents = (f.frames, f.height, f.width)
  sizes = (f.dit_width, f.dit_depth, f.dit_heads)
  patches = [None if "/" in variant else f.patch for variant in f.variants]
  for variant, patch in zip(f.variants, patches):  # every bad argument before any work
    try:
      config = flops_config(variant, patch, latents, f.channels, f.text_len, f.dtype, f.remat,
                            sizes=sizes)
      size = configlib.dit_size(config.dit)[0]
      if min(sizes) < 0 or size.width % size.heads:
        raise ValueError(f"variant {variant} at width {size.width}, depth {size.depth}, "
                         f"{size.heads} heads: sizes must be >= 0 and the heads divide the width")
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  for variant, patch in zip(f.variants, patches):
    line = measure(variant, patch, latents, f.batch, f.text_len, f.channels, f.dtype, f.remat,
                   f.xla_check, f.xla_train, f.residuals, f.xla_depth, sizes)
    print(json.dumps(line), flush=True)
    if not line["params_match"]:
      logging.error("%s: analytic params %d / %d differ from the model's %d / %d", variant,
                    line["params_analytic"], line["text_encoder_params_analytic"],
                    line["params"], line["text_encoder_params"])
  sys.stdout.flush()


if __name__ == "__main__":
  _define_flags()
  app.run(main)
