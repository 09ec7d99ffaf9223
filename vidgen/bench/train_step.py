"""Video DiT training-step speed against a peer, and its MFU against the machine's measured peak.

    python -m vidgen.bench.train_step [--reps=5] [--variant=S/2] [--depth=0]
        [--frames=16 --height=16 --width=16] [--batch=4] [--text_len=32] [--text_width=128]
        [--channels=4] [--peer=latte|none] [--threads=0] [--dtype=float32|bfloat16]
        [--peak_sizes=2048,3072,4096] [--peak_reps=3]

Prints one JSON line on stdout (logs go to stderr):

  {"bench": "dit_train_step", "tokens_per_s": ..., "peer_tokens_per_s": ..., "ratio_vs_peer": ...,
   "step_s_median": ..., "peer_step_s_median": ..., "params": ..., "peer_params": ...,
   "params_ratio": ..., "model_flops_per_step": ..., "xla_flops_per_step": ...,
   "xla_vs_model_flops": ..., "measured_peak_flops": ..., "torch_matmul_peak_flops": ...,
   "mfu_vs_measured_peak": ..., "settings": {...}, ...}

Ours: one full training step as ONE jitted function with the state donated:
VideoDiT forward on a (B, T, H, W, C) latent batch (`--frames/--height/--width`
are latent sizes; with patch 1x2x2, 16x16x16 latents are 16*8*8 = 1,024
tokens per clip) with per-frame times and random text embeddings (B, Lt, Dt)
plus a length mask, the rectified-flow loss (vidgen.diffusion.flow.loss: MSE
against the velocity noise - x0), the backward pass and an optax.adamw
update. It is compiled ahead of time once (`xla_flops_per_step` is that
program's cost_analysis), run once to warm up, then timed.

Peer: diffusers' `LatteTransformer3DModel` (a Latte / PixArt-alpha video DiT:
per layer a spatial block with self-attention, text cross-attention and MLP
and a temporal block with self-attention and MLP, adaLN-single) at the same
width and heads, the same token count (sample_size = latent height, patch 2,
`video_length` = frames), caption_channels = our text width, the same batch
and text length, configured like the released Latte-1 (gelu-approximate MLP,
attention biases, norm_type "ada_norm_single", no affine in the norms) except
out_channels = C (velocity, no learned sigma). Its `num_layers` is the depth
whose parameter count is closest to ours (`params_ratio` = peer / ours; it
should be within 5%). Trained with the same loss (flow times, x_t, velocity
MSE), the caption mask passed as the additive bias Latte's cross-attention
takes, torch.optim.AdamW with the same hyper-parameters, eager mode,
`torch.set_num_threads(--threads or the machine's cores)`. Square latents only
(Latte's sample_size is one number).

Precision (`--dtype`): float32 runs both sides in fp32. bfloat16 is mixed
precision on both sides, with fp32 parameters, optimizer and loss. Ours runs
with the DiT's compute `dtype=bfloat16`. The peer's forward runs under
`torch.autocast("cpu", dtype=torch.bfloat16)`. The peaks are then measured on
bf16 inputs (see below).

Timing: after one warm-up step each, `--reps` steps of ours and of the peer
alternate (A B A B ...: load changes on a shared machine hit both); each
figure is the median. `tokens_per_s` = B * T' * H' * W' / step seconds.

FLOPs and MFU: `model_flops_per_step` is the analytic count of
vidgen.bench.flops (matmuls and attention, forward x 3 for forward + backward;
no text encoder here), the usual MFU numerator; `xla_flops_per_step` is XLA's
cost_analysis of our compiled step (it also counts elementwise work and the
optimizer). `measured_peak_flops` is the `jnp.dot` rate on square
`--dtype` matrices of `--peak_sizes` (fp32 accumulation and result): per size
the median of `--peak_reps` calls, measured before the models and again after
them in the same process, the best of all
that (so load during one pass lowers nothing); `torch_matmul_peak_flops` the
same for torch.matmul, and `jax_matmul_gflops` / `torch_matmul_gflops` every
figure. `mfu_vs_measured_peak` = model_flops_per_step / step_s_median /
measured_peak_flops. `peer_flops_per_step` is torch's FlopCounterMode over the
peer's warm-up step (forward + backward).

The machine may be shared: `loadavg_1min` (before the first and after the
last timed step) tells how busy it was, and `step_cpu_s_median` /
`peer_step_cpu_s_median` are this process's CPU seconds per step (all threads;
thread pools that spin while waiting count too).
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging
from flax.core import meta

from vidgen import configlib
from vidgen.bench import flops as flops_lib
from vidgen.diffusion import flow
from vidgen.models import dit as dit_lib
from vidgen.trainers.state import TrainState

_REPS = flags.DEFINE_integer("reps", 5, "Timed training steps (each side); the median is reported.")
_VARIANT = flags.DEFINE_string("variant", "S/2", "DiT variant (configlib.VARIANTS) NAME[/patch].")
_DEPTH = flags.DEFINE_integer("depth", 0, "Blocks; 0: the variant's.")
_FRAMES = flags.DEFINE_integer("frames", 16, "Latent frames T.")
_HEIGHT = flags.DEFINE_integer("height", 16, "Latent height H.")
_WIDTH = flags.DEFINE_integer("width", 16, "Latent width W (the peer needs W == H).")
_BATCH = flags.DEFINE_integer("batch", 4, "Clips per step B.")
_TEXT_LEN = flags.DEFINE_integer("text_len", 32, "Text tokens per clip Lt.")
_TEXT_WIDTH = flags.DEFINE_integer("text_width", 0, "Text embedding width Dt; 0: the config's "
                                   "text encoder width.")
_CHANNELS = flags.DEFINE_integer("channels", 4, "Latent channels C.")
_PEER = flags.DEFINE_enum("peer", "latte", ["latte", "none"], "The peer; none prints null peer "
                          "fields.")
_THREADS = flags.DEFINE_integer("threads", 0, "torch threads; 0: the machine's cores.")
_PEAK_SIZES = flags.DEFINE_list("peak_sizes", ["2048", "3072", "4096"],
                                "Square matmul sizes for the measured peak (in --dtype).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype of both sides (parameters and optimizer stay fp32): "
                           "bfloat16 runs ours with dtype=bfloat16 and the peer under "
                           "torch.autocast, and measures the peaks with bf16 inputs.")
_PEAK_REPS = flags.DEFINE_integer("peak_reps", 3, "Timed matmuls per size (after a warm-up).")
_LR = 1e-4
_WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default; optax's is 1e-4: both sides get this
_BLOCK_PARTS = ("spatial_proj", "spatial_attn", "temporal_proj", "temporal_attn", "cross_q_o",
                "cross_kv", "cross_attn", "mlp")  # flops.forward_breakdown's per-block parts


# ---------------------------------------------------------------------------
# Analytic FLOPs (vidgen.bench.flops).


def model_flops(variant: str, depth: int, latents: tuple[int, int, int], batch: int,
                text_len: int, text_width: int, channels: int) -> dict[str, Any]:
  """Analytic matmul FLOPs of our DiT's forward and training step on this benchmark's batch.

  `vidgen.bench.flops.forward_breakdown` (matmuls and both attention products,
  causal masks not discounted) at our text width, without its text encoder
  (this benchmark feeds random text embeddings), with the per-block parts
  scaled to `depth` blocks. train = 3 x forward (no remat here).
  """
  v, _ = configlib.parse_variant(variant)
  config = flops_lib.flops_config(variant, None, latents, channels, text_len, dtype="float32")
  config.text.encoder.width = int(text_width)
  parts = flops_lib.forward_breakdown(config, latents, batch, text_len)
  parts.pop("text_encoder")
  for k in _BLOCK_PARTS:
    parts[k] = parts[k] // v.depth * depth
  forward = float(sum(parts.values()))
  return {"forward": forward, "train": 3 * forward, "breakdown": parts}


# ---------------------------------------------------------------------------
# The machine's measured matmul peak.


def _median_rate(fn, flop: float, reps: int) -> float:
  fn()  # warm-up (compile / allocate)
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return flop / statistics.median(times)


def jax_matmul_peak(sizes: list[int], reps: int, dtype: str = "float32") -> dict[int, float]:
  """Median FLOP/s of a jitted `jnp.dot` of two n x n `dtype` matrices, per size n.

  bf16 inputs accumulate and return fp32 (`preferred_element_type`): XLA:CPU's
  fast bf16 kernels are that form; with a bf16 result the same dot ran at half
  of it or less (2048^3 on an AVX-512 EPYC: 143 against 385 GFLOP/s).
  """
  out = {}
  dot = jax.jit(functools.partial(jnp.dot, preferred_element_type=jnp.float32))
  rng = np.random.default_rng(0)
  for n in sizes:
    a, b = (jax.device_put(rng.standard_normal((n, n), np.float32).astype(dtype))
            for _ in range(2))
    out[n] = _median_rate(lambda: jax.block_until_ready(dot(a, b)), 2.0 * n ** 3, reps)
    del a, b
  return out


def torch_matmul_peak(sizes: list[int], reps: int, dtype: str = "float32") -> dict[int, float]:
  """Median FLOP/s of `torch.matmul` of two n x n `dtype` matrices, per size n."""
  import torch  # pylint: disable=g-import-not-at-top
  out = {}
  gen = torch.Generator().manual_seed(0)
  for n in sizes:
    a, b = (torch.randn(n, n, generator=gen).to(getattr(torch, dtype)) for _ in range(2))
    out[n] = _median_rate(lambda: torch.matmul(a, b), 2.0 * n ** 3, reps)
  return out


# ---------------------------------------------------------------------------
# Ours.


def build_model(variant: str, depth: int, channels: int, grid_latents: tuple[int, int, int],
                dtype: str = "float32") -> dit_lib.VideoDiT:
  """The VideoDiT of `variant` with the dit config's defaults (causal, qk-norm, no remat).

  `dtype` is the compute dtype; parameters stay in the config's (fp32).
  """
  cfg = configlib.dit_config()
  v, patch = configlib.parse_variant(variant)
  gt, gh, gw = (n // p for n, p in zip(grid_latents, patch))
  return dit_lib.VideoDiT(
      channels=channels, patch=patch, width=v.width, depth=depth or v.depth, heads=v.heads,
      mlp_ratio=v.mlp_ratio, max_frames=max(int(cfg.max_frames), gt),
      max_height=max(int(cfg.max_height), gh), max_width=max(int(cfg.max_width), gw),
      causal=cfg.temporal == "causal", qk_norm=bool(cfg.qk_norm), remat=cfg.remat,
      scan_layers=bool(cfg.scan_layers), dtype=jnp.dtype(dtype),
      param_dtype=jnp.dtype(cfg.param_dtype))


def make_batch(b: int, t: int, h: int, w: int, c: int, lt: int, dt: int, seed: int = 0
               ) -> dict[str, np.ndarray]:
  """Latents x0 (B, T, H, W, C), text (B, Lt, Dt), text_mask (B, Lt) (random lengths >= 1)."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, lt + 1, size=b)
  return {
      "x0": rng.standard_normal((b, t, h, w, c)).astype(np.float32),
      "text": rng.standard_normal((b, lt, dt)).astype(np.float32),
      "text_mask": np.arange(lt)[None, :] < lengths[:, None],
  }


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def train_step(model: dit_lib.VideoDiT, tx: optax.GradientTransformation,
               diffusion: flow.RectifiedFlow, tokens: int, state: TrainState,
               batch: dict[str, jax.Array], rng: jax.Array) -> tuple[TrainState, dict]:
  """Flow loss on the batch (no known frames), backward, AdamW: (state, batch, rng) -> (state, {loss})."""
  rng = jax.random.fold_in(rng, state.step)
  x0 = batch["x0"]
  known = jnp.zeros(x0.shape[:2], bool)

  def loss_fn(params):
    model_fn = lambda x_t, t_frames: model.apply(
        {"params": params}, x_t, t_frames, batch["text"], batch["text_mask"])
    per_clip, _ = flow.loss(diffusion, model_fn, x0, known, rng, tokens)
    return jnp.mean(per_clip)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}


def ours_setup(model: dit_lib.VideoDiT, batch_np: dict[str, np.ndarray], tokens: int):
  """(compiled step, state, batch, rng, params count, xla flops, compile seconds)."""
  batch = {k: jax.device_put(v) for k, v in batch_np.items()}
  b, t = batch_np["x0"].shape[:2]
  tx = optax.adamw(_LR, weight_decay=_WEIGHT_DECAY)

  @jax.jit
  def init():
    params = model.init(jax.random.key(0), batch["x0"], jnp.zeros((b, t)), batch["text"],
                        batch["text_mask"])["params"]
    return TrainState.create(meta.unbox(params), tx, ema=False)

  state = jax.block_until_ready(init())
  step = jax.jit(functools.partial(train_step, model, tx, flow.RectifiedFlow(), tokens),
                 donate_argnums=(0,))
  rng = jax.random.key(1)
  start = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  flops = flops_lib.compiled_flops(compiled, required=False)
  return compiled, state, batch, rng, count_params(state.params), flops, compile_s


# ---------------------------------------------------------------------------
# The peer: diffusers' LatteTransformer3DModel.


def peer_kwargs(model: dit_lib.VideoDiT, height: int, frames: int, text_width: int,
                num_layers: int) -> dict:
  """LatteTransformer3DModel arguments: our width, heads, tokens and text width; Latte-1 otherwise."""
  return dict(
      num_attention_heads=model.heads, attention_head_dim=model.width // model.heads,
      in_channels=model.channels, out_channels=model.channels, num_layers=num_layers,
      cross_attention_dim=model.width, attention_bias=True, sample_size=height,
      patch_size=model.patch[1], activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
      norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
      caption_channels=text_width, video_length=frames)


def _torch_params(module) -> int:
  return int(sum(p.numel() for p in module.parameters()))


def peer_depth(model: dit_lib.VideoDiT, ours: int, height: int, frames: int, text_width: int
               ) -> tuple[int, int]:
  """(num_layers whose parameter count is closest to `ours`, that count).

  Latte's count is affine in num_layers; two tiny instances give the slope.
  """
  from diffusers import LatteTransformer3DModel  # pylint: disable=g-import-not-at-top
  p1, p2 = (_torch_params(LatteTransformer3DModel(**peer_kwargs(model, height, frames, text_width,
                                                                 n))) for n in (1, 2))
  per_layer, base = p2 - p1, p1 - (p2 - p1)
  n = max(1, round((ours - base) / per_layer))
  n = min((max(1, n - 1), n, n + 1), key=lambda k: abs(base + k * per_layer - ours))
  return n, base + n * per_layer


class Peer:
  """Latte at a matched config and its eager training step (same flow loss, AdamW).

  fp32 parameters and optimizer; with `dtype` bfloat16 the forward runs under
  `torch.autocast("cpu", torch.bfloat16)` (its matmuls in bf16) and the loss in fp32.
  """

  def __init__(self, model: dit_lib.VideoDiT, batch_np: dict[str, np.ndarray], ours_params: int,
               threads: int, dtype: str = "float32"):
    import torch  # pylint: disable=g-import-not-at-top
    from diffusers import LatteTransformer3DModel  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    b, t, h, w, c = batch_np["x0"].shape
    if h != w:
      raise ValueError(f"Latte needs square latents (sample_size); got {h}x{w}")
    dt = batch_np["text"].shape[-1]
    self.num_layers, _ = peer_depth(model, ours_params, h, t, dt)
    self.kwargs = peer_kwargs(model, h, t, dt, self.num_layers)
    self.net = LatteTransformer3DModel(**self.kwargs).float().train()
    self.params = _torch_params(self.net)
    self.opt = torch.optim.AdamW(self.net.parameters(), lr=_LR, weight_decay=_WEIGHT_DECAY)
    self.x0 = torch.from_numpy(batch_np["x0"].transpose(0, 4, 1, 2, 3).copy())  # (B, C, T, H, W)
    self.text = torch.from_numpy(batch_np["text"])
    # Latte hands the caption mask to every frame's cross-attention as an additive bias
    # (B*T, 1, Lt): 0 keep, -10000 drop.
    keep = torch.from_numpy(batch_np["text_mask"])
    bias = (~keep).float() * -10000.0
    self.text_bias = bias.repeat_interleave(t, dim=0)[:, None, :]
    self.diffusion = flow.RectifiedFlow()
    self.tokens = t * (h // model.patch[1]) * (w // model.patch[2])
    self.gen = torch.Generator().manual_seed(1)
    self.autocast = dtype != "float32"
    self.dtype = getattr(torch, dtype)

  def step(self) -> float:
    """One training step; returns the loss."""
    torch, d = self.torch, self.diffusion
    b = self.x0.shape[0]
    u = torch.sigmoid(d.logit_mean + d.logit_std * torch.randn(b, generator=self.gen))
    t = flow.time_shift(u, d.shift_for(self.tokens))
    noise = torch.randn(self.x0.shape, generator=self.gen)
    tt = t.view(b, 1, 1, 1, 1)
    x_t = (1 - tt) * self.x0 + tt * noise
    with torch.autocast("cpu", dtype=self.dtype, enabled=self.autocast):
      pred = self.net(x_t, timestep=1000.0 * t, encoder_hidden_states=self.text,
                      encoder_attention_mask=self.text_bias, enable_temporal_attentions=True,
                      return_dict=False)[0]
    pred = pred.float()
    if pred.shape != self.x0.shape:
      raise AssertionError(f"peer output {tuple(pred.shape)}, want {tuple(self.x0.shape)}")
    loss = torch.mean(torch.square(pred - (noise - self.x0)))
    loss.backward()
    self.opt.step()
    self.opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  def counted_step(self) -> float | None:
    """One step under FlopCounterMode; its total FLOPs (None if torch cannot count)."""
    try:
      from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
    except ImportError:
      self.step()
      return None
    counter = flop_counter.FlopCounterMode(display=False)
    with counter:
      self.step()
    return float(counter.get_total_flops()) or None


# ---------------------------------------------------------------------------
# The benchmark.


def _seconds(fn) -> tuple[float, float]:
  """(wall seconds, this process's CPU seconds) of fn()."""
  start, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - start, time.process_time() - cpu


def measure_peaks(sizes: list[int], reps: int, dtype: str = "float32"
                  ) -> tuple[dict[int, float], dict[int, float] | None]:
  """(jnp.dot, torch.matmul or None) FLOP/s per size, on `dtype` inputs."""
  jax_peak = jax_matmul_peak(sizes, reps, dtype)
  logging.info("jnp.dot GFLOP/s: %s", {n: round(v / 1e9, 1) for n, v in jax_peak.items()})
  try:
    torch_peak = torch_matmul_peak(sizes, reps, dtype)
  except ImportError:
    return jax_peak, None
  logging.info("torch.matmul GFLOP/s: %s", {n: round(v / 1e9, 1) for n, v in torch_peak.items()})
  return jax_peak, torch_peak


def _r(x: float | None, digits: int = 4) -> float | None:
  return None if x is None else round(float(x), digits)


def run() -> dict:
  """The `dit_train_step` line (see the module doc)."""
  b, t, h, w, c = _BATCH.value, _FRAMES.value, _HEIGHT.value, _WIDTH.value, _CHANNELS.value
  lt, reps = _TEXT_LEN.value, _REPS.value
  dt = _TEXT_WIDTH.value or int(configlib.text_config().encoder.width)
  threads = _THREADS.value or os.cpu_count() or 1
  model = build_model(_VARIANT.value, _DEPTH.value, c, (t, h, w), _DTYPE.value)
  grid = dit_lib.patches_lib.grid_shape((t, h, w), model.patch)
  tokens = math.prod(grid)
  peer_wanted = _PEER.value != "none"
  if peer_wanted:
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
      import diffusers  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      logging.warning("peer skipped: not installed: %s", e)
      peer_wanted = False
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)  # for the torch matmul peak too
  except ImportError:
    pass

  load_start = os.getloadavg()[0]
  sizes = [int(s) for s in _PEAK_SIZES.value]
  peaks = [measure_peaks(sizes, _PEAK_REPS.value, _DTYPE.value)]  # before the models; again after them

  batch_np = make_batch(b, t, h, w, c, lt, dt)
  compiled, state, batch, rng, params, xla_flops, compile_s = ours_setup(model, batch_np, tokens)
  flops = model_flops(_VARIANT.value, model.depth, (t, h, w), b, lt, dt, c)
  logging.info("ours: %d params, compiled in %.1f s; %.1f GFLOP/step analytic, %s XLA", params,
               compile_s, flops["train"] / 1e9,
               None if xla_flops is None else round(xla_flops / 1e9, 1))

  holder = {"state": state}

  def ours_step():
    holder["state"], metrics = compiled(holder["state"], batch, rng)
    return jax.block_until_ready(metrics["loss"])

  peer, peer_flops = None, None
  if peer_wanted:
    peer = Peer(model, batch_np, params, threads, _DTYPE.value)
    logging.info("peer: Latte %d layers, %d params (ours %d)", peer.num_layers, peer.params, params)

  first_loss = float(ours_step())  # warm-up
  if peer is not None:
    peer_flops = peer.counted_step()  # warm-up (and FLOP count)
  ours_s, peer_s, ours_cpu, peer_cpu = [], [], [], []
  for i in range(reps):  # A B A B ...: load changes hit both
    wall, cpu = _seconds(ours_step)
    ours_s.append(wall)
    ours_cpu.append(cpu)
    if peer is not None:
      wall, cpu = _seconds(peer.step)
      peer_s.append(wall)
      peer_cpu.append(cpu)
    logging.info("rep %d: ours %.3f s, peer %s s", i, ours_s[-1],
                 round(peer_s[-1], 3) if peer_s else None)
  steps_taken = int(holder["state"].step)
  load_end = os.getloadavg()[0]
  del holder, state, compiled
  peaks.append(measure_peaks(sizes, _PEAK_REPS.value, _DTYPE.value))
  jax_peak = {n: max(p[0][n] for p in peaks) for n in sizes}
  torch_peak = ({n: max(p[1][n] for p in peaks) for n in sizes} if peaks[0][1] is not None
                else None)
  peak = max(jax_peak.values())
  step_s = statistics.median(ours_s)
  peer_step_s = statistics.median(peer_s) if peer_s else None
  tps = b * tokens / step_s
  peer_tps = b * tokens / peer_step_s if peer_step_s else None
  return {
      "bench": "dit_train_step",
      "tokens_per_s": _r(tps, 3),
      "peer_tokens_per_s": _r(peer_tps, 3),
      "ratio_vs_peer": _r(tps / peer_tps if peer_tps else None),
      "step_s_median": _r(step_s, 6),
      "peer_step_s_median": _r(peer_step_s, 6),
      "params": params,
      "peer_params": peer.params if peer else None,
      "params_ratio": _r(peer.params / params if peer else None),
      "model_flops_per_step": flops["train"],
      "xla_flops_per_step": xla_flops,
      "xla_vs_model_flops": _r(xla_flops / flops["train"] if xla_flops else None),
      "measured_peak_flops": _r(peak, 0),
      "torch_matmul_peak_flops": _r(max(torch_peak.values()), 0) if torch_peak else None,
      "mfu_vs_measured_peak": _r(flops["train"] / step_s / peak, 5),
      "xla_flops_per_s": _r(xla_flops / step_s, 0) if xla_flops else None,
      "model_flops_per_s": _r(flops["train"] / step_s, 0),
      "peer_flops_per_step": peer_flops,
      "model_forward_flops_breakdown": flops["breakdown"],
      "peer_model_flops_per_s": _r(flops["train"] / peer_step_s, 0) if peer_step_s else None,
      "rep_s": [_r(v) for v in ours_s],
      "peer_rep_s": [_r(v) for v in peer_s] if peer_s else None,
      "step_cpu_s_median": _r(statistics.median(ours_cpu)),
      "peer_step_cpu_s_median": _r(statistics.median(peer_cpu)) if peer_cpu else None,
      "loadavg_1min": [_r(load_start, 2), _r(load_end, 2)],
      "compile_s": _r(compile_s, 2),
      "loss_first": _r(first_loss),
      "steps_taken": steps_taken,
      "jax_matmul_gflops": {str(n): [_r(p[0][n] / 1e9, 1) for p in peaks] for n in sizes},
      "torch_matmul_gflops": ({str(n): [_r(p[1][n] / 1e9, 1) for p in peaks] for n in sizes}
                              if torch_peak else None),
      "peer": "diffusers.LatteTransformer3DModel" if peer else None,
      "peer_num_layers": peer.num_layers if peer else None,
      "peer_config": peer.kwargs if peer else None,
      "settings": {
          "variant": _VARIANT.value, "width": model.width, "depth": model.depth,
          "heads": model.heads, "patch": list(model.patch), "latents": [t, h, w, c],
          "grid": list(grid), "tokens_per_clip": tokens, "batch": b, "text_len": lt,
          "text_width": dt, "reps": reps, "causal": model.causal, "qk_norm": model.qk_norm,
          "dtype": str(jnp.dtype(model.dtype)), "optimizer": f"adamw lr={_LR} wd={_WEIGHT_DECAY}",
          "peak_sizes": sizes, "peak_reps": _PEAK_REPS.value, "torch_threads": threads,
          "cpus": os.cpu_count(), "jax": jax.__version__, "jax_backend": jax.default_backend(),
          "python": platform.python_version(),
      },
  }


def main(argv):
  del argv
  print(json.dumps(run()), flush=True)


if __name__ == "__main__":
  app.run(main)
