"""Video VAE speed against a peer, and chunked decoding's memory against clip length.

    python -m vidgen.bench.vae [--config=configs/shapes/vae.py] [--batch=4] [--frames=17]
        [--size=64] [--reps=5] [--what=throughput,memory] [--peer=cogvideox|none]
        [--memory_frames=17,65,257] [--chunk=2] [--memory_batch=1] [--unchunked=true]
        [--memory_ops=decode] [--params=init|random]

Prints one JSON line per measurement on stdout (logs go to stderr):

throughput  {"bench": "vae_throughput", "clips_per_s": ..., "peer_clips_per_s": ...,
            "ratio_vs_peer": ..., "params": ..., "gflop_per_clip": ..., ...}
  Encode + decode (posterior mean -> decode) of a (batch, frames, size, size, 3)
  batch, jitted and compiled ahead of time; the median of `--reps` timed calls.
  The peer, diffusers' `AutoencoderKLCogVideoX`, runs in the same process at a
  matched tiny config (same time and space compression, same latent channels,
  widths from ours, fp32, `torch.no_grad()`, tiling and slicing off,
  encode(...).latent_dist.mode() then decode(...).sample); repetitions alternate
  ours / peer so load changes on a shared machine hit both. The architectures
  differ on purpose: ours folds pixels into channels first (patchify) and works
  at low resolution in 2D convolutions and matmuls, CogVideoX convolves in 3D at
  full resolution. That design choice is what the ratio measures. The peer's
  latents and output are checked to have our shapes (CogVideoX decodes latents
  in pairs after an odd first group, so it needs an odd number of latent
  frames: 9, 17, 25, ... frames). FLOPs: ours from XLA's cost_analysis of the
  compiled program, the peer's from torch's FlopCounterMode on the warm-up.
  `--peer=none` (or diffusers missing) prints the same line with the peer
  fields null. `--params=random` skips init_params' compile (numpy draws of the
  same shapes; speed does not depend on the values).

memory      {"bench": "vae_chunked_memory", "frames": T, "peak_rss_mb": ..., ...} per length,
            then {"bench": "vae_chunked_memory_growth", "rss_mb_per_frame": ..., "growth": ...}
  `decode_chunked` (`--chunk` latent frames at a time) of random latents of a
  (memory_batch, T, size, size) clip for each T in `--memory_frames`, each in a
  fresh subprocess. The chunk programs are compiled ahead of time, then the
  high-water mark is reset (Linux /proc/self/clear_refs), so `peak_rss_mb` is
  the decode's own peak RSS (VmHWM; ru_maxrss without /proc), not the
  compiler's; `baseline_rss_mb` is the RSS just before decoding (imports,
  params, compiled programs, latents). With `--unchunked` the whole clip
  decoded by one program (compiled the same way) runs in another fresh
  subprocess for contrast (`unchunked_peak_rss_mb`, null if it failed).
  `xla_temp_mb` is XLA's scratch size of the largest program (memory_analysis).
  The summary fits the peak against T: the decoded clip itself is T*H*W*3
  floats, so linear growth from the output is expected; the chunk working set
  should be constant. `--memory_ops=decode,encode` adds the same for
  `encode_chunked`. `{op}_s` is a second, warm run's time; `first_{op}_s` the
  measured run's, which also compiles `decode_chunked`'s eager slicing and
  concatenation.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax.core import meta

from vidgen import configlib
from vidgen.bench import flops as flops_lib
from vidgen.bench.measure import line_fit, peak_rss_mb, reset_peak, rss_mb, ru_maxrss_mb
from vidgen.models import vae as vae_lib

_CONFIG = flags.DEFINE_string("config", "configs/shapes/vae.py", "Config file[:arg]; its `vae`.")
_BATCH = flags.DEFINE_integer("batch", 4, "Throughput: clips per batch.")
_FRAMES = flags.DEFINE_integer("frames", 17, "Throughput: frames per clip (1 + k * time factor).")
_SIZE = flags.DEFINE_integer("size", 64, "Height and width of the clips.")
_REPS = flags.DEFINE_integer("reps", 5, "Throughput: timed repetitions (each side); the median "
                             "is reported.")
_PARAMS = flags.DEFINE_enum("params", "init", ["init", "random"],
                            "Throughput params: init_params (compiles for seconds) or numpy draws "
                            "of the same shapes (speed does not depend on the values).")
_WHAT = flags.DEFINE_list("what", ["throughput", "memory"], "Benchmarks to run.")
_PEER = flags.DEFINE_enum("peer", "cogvideox", ["cogvideox", "none"],
                          "Throughput peer; none prints null peer fields.")
_MEMORY_FRAMES = flags.DEFINE_list("memory_frames", ["17", "65", "257"],
                                   "Memory: clip lengths (frames, 1 + k * time factor).")
_CHUNK = flags.DEFINE_integer("chunk", 2, "Memory: latent frames per chunk.")
_MEMORY_BATCH = flags.DEFINE_integer("memory_batch", 1, "Memory: clips per batch.")
_MEMORY_OPS = flags.DEFINE_list("memory_ops", ["decode"], "Memory: decode and/or encode.")
_UNCHUNKED = flags.DEFINE_bool("unchunked", True,
                               "Memory: also the whole-clip peak at each length, for contrast.")
_CHILD_TIMEOUT = flags.DEFINE_integer("child_timeout", 1800, "Memory: seconds per subprocess.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run one memory case (OP:chunked|unchunked:T) "
                             "in this process and print its JSON line.")

MB = 2.0 ** 20


# ---------------------------------------------------------------------------
# ---------------------------------------------------------------------------
# Ours.


def load(spec: str):
  """Config spec -> (vae config section, VideoVAE)."""
  vae_cfg = configlib.load(spec).vae
  return vae_cfg, vae_lib.vae_from_config(vae_cfg)


def init(model) -> Any:
  """Unboxed float params (the smallest example clip: params do not depend on its shape)."""
  params = meta.unbox(vae_lib.init_params(model, jax.random.key(0, impl="rbg")))
  return jax.block_until_ready(params)


def random_params(model, seed: int = 0) -> Any:
  """Params shaped like `init`'s, drawn in numpy (no compile; `init` compiles for seconds).

  Kernels ~ N(0, 1 / fan-in), biases and norm offsets ~ N(0, 0.01), norm scales ~ 1 + N(0, 0.01):
  values do not change the speed or memory of a float program.
  """
  abstract = jax.eval_shape(lambda: meta.unbox(
      vae_lib.init_params(model, jax.random.key(0, impl="rbg"))))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    shape = leaf.shape
    if len(shape) >= 2:
      value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[:-1]))
    else:
      value = 0.1 * rng.standard_normal(shape) + (path[-1].key == "scale")
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def ours_autoencoder(model, params, video_shape: tuple[int, ...]):
  """(compiled fn(params, video) -> recon, flops per call or None) for encode -> mean -> decode."""

  def autoencode(p, video):
    (mean, _), _ = model.apply({"params": p}, video, method=vae_lib.VideoVAE.encode)
    recon, _ = model.apply({"params": p}, mean, method=vae_lib.VideoVAE.decode)
    return recon

  compiled = jax.jit(autoencode).lower(
      params, jax.ShapeDtypeStruct(video_shape, jnp.float32)).compile()
  return compiled, flops_lib.compiled_flops(compiled, required=False)


# ---------------------------------------------------------------------------
# The peer: diffusers' AutoencoderKLCogVideoX at a matched config.


def peer_kwargs(vae_cfg, model) -> dict:
  """AutoencoderKLCogVideoX arguments matching our compression, latents and widths.

  log2(space factor) spatial downsamples need that many + 1 down blocks; the
  first log2(time factor) of them also halve time (temporal_compression_ratio).
  Widths: ours padded with our last width (or evenly subsampled) to one per
  block, e.g. (64, 128, 256) -> (64, 128, 256, 256). layers_per_block = our
  blocks (CogVideoX's decoder has one more per level, its mid blocks two).
  GroupNorm groups: ours where they divide every width, else their gcd.
  """
  tf, sf = vae_lib.time_factor(model), vae_lib.space_factor(model)
  if sf & (sf - 1) or tf & (tf - 1) or tf > sf:
    raise ValueError(f"no matching CogVideoX config for time x{tf}, space x{sf} (powers of two, "
                     "time <= space)")
  n = int(math.log2(sf)) + 1
  ch = [int(c) for c in vae_cfg.channels]
  if len(ch) >= n:
    widths = [ch[round(i * (len(ch) - 1) / (n - 1))] for i in range(n)] if n > 1 else ch[-1:]
  else:
    widths = ch + [ch[-1]] * (n - len(ch))
  groups = int(vae_cfg.groups)
  if any(w % groups for w in widths):
    groups = math.gcd(*widths)
  return dict(
      in_channels=3, out_channels=3,
      down_block_types=("CogVideoXDownBlock3D",) * n,
      up_block_types=("CogVideoXUpBlock3D",) * n,
      block_out_channels=tuple(widths),
      latent_channels=int(vae_cfg.latent_channels),
      layers_per_block=max(1, int(vae_cfg.blocks)),
      norm_num_groups=groups,
      temporal_compression_ratio=tf,
  )


def make_peer(vae_cfg, model, size: int):
  """(torch module, its kwargs) or (None, reason) when torch / diffusers are missing."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from diffusers import AutoencoderKLCogVideoX  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return None, f"not installed: {e}"
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  kwargs = peer_kwargs(vae_cfg, model)
  peer = AutoencoderKLCogVideoX(sample_height=size, sample_width=size, **kwargs).float().eval()
  peer.disable_tiling()
  peer.disable_slicing()
  return peer, kwargs


def peer_autoencode(peer, x):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    z = peer.encode(x).latent_dist.mode()
    return z, peer.decode(z).sample


# ---------------------------------------------------------------------------
# Throughput.


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def throughput() -> dict:
  """The `vae_throughput` line: ours and the peer on the same batch, repetitions interleaved."""
  b, t, s, reps = _BATCH.value, _FRAMES.value, _SIZE.value, _REPS.value
  vae_cfg, model = load(_CONFIG.value)
  lat = vae_lib.latent_shape(model, (t, s, s))  # checks the clip shape
  params = init(model) if _PARAMS.value == "init" else random_params(model)
  rng = np.random.default_rng(0)
  video_np = rng.uniform(-1, 1, (b, t, s, s, 3)).astype(np.float32)
  video = jax.device_put(video_np)
  start = time.perf_counter()
  ours, flops = ours_autoencoder(model, params, video.shape)
  logging.info("ours: compiled in %.1f s, %s GFLOP per call", time.perf_counter() - start,
               None if flops is None else round(flops / 1e9, 2))

  run_ours = lambda: _seconds(lambda: jax.block_until_ready(ours(params, video)))

  peer, peer_info, peer_flops = None, "--peer=none", None
  if _PEER.value != "none":
    peer, peer_info = make_peer(vae_cfg, model, s)
    if peer is None:
      logging.warning("peer skipped: %s", peer_info)
  run_peer = None
  if peer is not None:
    import torch  # pylint: disable=g-import-not-at-top
    from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
    x = torch.from_numpy(video_np.transpose(0, 4, 1, 2, 3).copy())  # (B, C, T, H, W)
    counter = flop_counter.FlopCounterMode(display=False)
    with counter:  # the warm-up: counts FLOPs, and the shapes must be what we claim
      z, out = peer_autoencode(peer, x)
    peer_flops = float(counter.get_total_flops())
    want = (b, lat[3], lat[0], lat[1], lat[2])
    if tuple(z.shape) != want or tuple(out.shape) != tuple(x.shape):
      raise AssertionError(
          f"peer latents {tuple(z.shape)} (want {want}) / output {tuple(out.shape)} (want "
          f"{tuple(x.shape)}): the comparison would not be like for like. CogVideoX decodes "
          "latents in pairs after an odd first group, so it needs an odd number of latent "
          "frames (e.g. 9, 17, 25 frames at time x4)")

    run_peer = lambda: _seconds(lambda: peer_autoencode(peer, x))

  run_ours()  # warm-up
  ours_s, peer_s = [], []
  for i in range(reps):  # A B A B ...: load changes hit both
    ours_s.append(run_ours())
    if run_peer is not None:
      peer_s.append(run_peer())
    logging.info("rep %d: ours %.3f s, peer %s s", i, ours_s[-1],
                 round(peer_s[-1], 3) if peer_s else None)
  clips_per_s = b / statistics.median(ours_s)
  peer_clips_per_s = b / statistics.median(peer_s) if peer_s else None
  return {
      "bench": "vae_throughput",
      "clips_per_s": round(clips_per_s, 3),
      "peer": "diffusers.AutoencoderKLCogVideoX" if peer is not None else None,
      "peer_clips_per_s": None if peer_clips_per_s is None else round(peer_clips_per_s, 3),
      "ratio_vs_peer": None if peer_clips_per_s is None else round(clips_per_s / peer_clips_per_s,
                                                                    3),
      "params": count_params(params),
      "peer_params": (int(sum(p.numel() for p in peer.parameters()))
                      if peer is not None else None),
      "gflop_per_clip": None if flops is None else round(flops / b / 1e9, 3),
      "peer_gflop_per_clip": None if not peer_flops else round(peer_flops / b / 1e9, 3),
      "gflop_per_s": None if flops is None else round(flops / statistics.median(ours_s) / 1e9, 1),
      "peer_gflop_per_s": (round(peer_flops / statistics.median(peer_s) / 1e9, 1)
                           if peer_flops and peer_s else None),
      "batch": b, "frames": t, "size": s, "reps": reps,
      "latent_shape": list(lat),
      "peak_rss_mb": round(ru_maxrss_mb(), 1),
      "rep_s": [round(v, 4) for v in ours_s],
      "peer_rep_s": [round(v, 4) for v in peer_s] if peer_s else None,
      "peer_config": peer_info if peer is not None else None,
      "peer_skipped": None if peer is not None else peer_info,
      "channels": [int(c) for c in vae_cfg.channels],
      "jax_backend": jax.default_backend(),
      "cpus": os.cpu_count(),
      "torch_threads": _torch_threads() if peer is not None else None,
      "config": _CONFIG.value,
  }


def _torch_threads() -> int:
  import torch  # pylint: disable=g-import-not-at-top
  return torch.get_num_threads()


# ---------------------------------------------------------------------------
# Memory: one case per fresh subprocess.


def _temp_mb(compiled) -> float | None:
  stats = compiled.memory_analysis()
  return None if stats is None else stats.temp_size_in_bytes / MB


def memory_child(spec: str) -> dict:
  """OP:MODE:T -> peak RSS of one chunked or whole-clip encode / decode in this process.

  Params are numpy draws (`random_params`). Every program is compiled ahead of
  time (for chunks: the first-chunk and later-chunk step programs
  `decode_chunked` / `encode_chunked` call, which puts them in jit's cache),
  then the high-water mark is reset and the case runs: the peak is that first
  run's. No warm-up run before it: XLA keeps a program's buffers after its
  first call, so a warm-up would move the working set into the baseline. The
  time (`seconds`) is a second, warm run's; `first_seconds` the measured
  one's. `xla_temp_mb` is XLA's own figure for the
  largest program's scratch memory, a check on the RSS numbers.
  """
  op, mode, frames = spec.split(":")
  t, s, b, chunk = int(frames), _SIZE.value, _MEMORY_BATCH.value, _CHUNK.value
  if op not in ("decode", "encode") or mode not in ("chunked", "unchunked"):
    raise ValueError(f"bad --child {spec!r}")
  _, model = load(_CONFIG.value)
  lt, lh, lw, lc = vae_lib.latent_shape(model, (t, s, s))
  tf = vae_lib.time_factor(model)
  params = random_params(model)
  rng = np.random.default_rng(0)
  f32 = jnp.float32
  start = time.perf_counter()
  if op == "decode":
    x = jax.device_put(rng.standard_normal((b, lt, lh, lw, lc), np.float32))
    first, later = (b, min(chunk, lt), lh, lw, lc), (b, chunk, lh, lw, lc)
    step, more = vae_lib.decode_step, lt > chunk
    chunked = lambda v: vae_lib.decode_chunked(model, params, v, chunk)
    method = vae_lib.VideoVAE.decode
  else:
    x = jax.device_put(rng.uniform(-1, 1, (b, t, s, s, 3)).astype(np.float32))
    first, later = (b, min(t, 1 + (chunk - 1) * tf), s, s, 3), (b, chunk * tf, s, s, 3)
    step, more = vae_lib.encode_step, t > first[1]
    chunked = lambda v: vae_lib.encode_chunked(model, params, v, chunk)[0]
    method = vae_lib.VideoVAE.encode
  if mode == "chunked":
    first = jax.ShapeDtypeStruct(first, f32)
    programs = [step.lower(model, params, first, None).compile()]
    if more:
      _, cache = jax.eval_shape(lambda p, v: step(model, p, v, None), params, first)
      programs.append(
          step.lower(model, params, jax.ShapeDtypeStruct(later, f32), cache).compile())
    run = chunked
  else:
    pick = (lambda r: r[0]) if op == "decode" else (lambda r: r[0][0])  # the video / the mean
    whole = jax.jit(lambda p, v: pick(model.apply({"params": p}, v, method=method)))
    programs = [whole.lower(params, x).compile()]
    run = lambda v: programs[0](params, v)
  temps = [_temp_mb(p) for p in programs]
  compile_s = time.perf_counter() - start
  compile_peak = peak_rss_mb()
  baseline = rss_mb()
  reset = reset_peak()
  start = time.perf_counter()
  out = jax.block_until_ready(run(x))
  seconds = time.perf_counter() - start
  peak = peak_rss_mb()
  shape = list(out.shape)
  del out
  start = time.perf_counter()  # again, warm: the first run also compiled eager slices and concats
  jax.block_until_ready(run(x))
  warm_seconds = time.perf_counter() - start
  return {
      "op": op, "mode": mode, "frames": t, "out_shape": shape,
      "peak_rss_mb": round(peak, 1), "baseline_rss_mb": round(baseline, 1),
      "seconds": round(warm_seconds, 3), "first_seconds": round(seconds, 3),
      "compile_s": round(compile_s, 2),
      "compile_peak_rss_mb": round(compile_peak, 1), "peak_reset": reset,
      "xla_temp_mb": None if None in temps else round(max(temps), 2),
  }


def _run_child(op: str, mode: str, frames: int) -> dict | None:
  cmd = [sys.executable, "-m", "vidgen.bench.vae", f"--child={op}:{mode}:{frames}",
         f"--config={_CONFIG.value}", f"--size={_SIZE.value}",
         f"--memory_batch={_MEMORY_BATCH.value}", f"--chunk={_CHUNK.value}"]
  logging.info("memory: %s %s %d frames", op, mode, frames)
  try:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=_CHILD_TIMEOUT.value, check=False)
  except subprocess.TimeoutExpired:
    logging.warning("memory: %s %s %d frames timed out", op, mode, frames)
    return None
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    logging.warning("memory: %s %s %d frames failed (rc %d):\n%s", op, mode, frames,
                    proc.returncode, proc.stderr[-3000:])
    return None
  res = json.loads(lines[-1])
  logging.info("memory: %s", res)
  return res


def memory() -> list[dict]:
  lengths = [int(f) for f in _MEMORY_FRAMES.value]
  b, s = _MEMORY_BATCH.value, _SIZE.value
  lines = []
  for op in _MEMORY_OPS.value:
    rows = []
    for t in lengths:
      res = _run_child(op, "chunked", t)
      if res is None:
        raise RuntimeError(f"chunked {op} of {t} frames failed (see the log)")
      whole = _run_child(op, "unchunked", t) if _UNCHUNKED.value else None
      line = {
          "bench": "vae_chunked_memory" if op == "decode" else "vae_chunked_encode_memory",
          "op": op, "frames": t, "batch": b, "size": s,
          "chunk_latent_frames": _CHUNK.value,
          "peak_rss_mb": res["peak_rss_mb"],
          "baseline_rss_mb": res["baseline_rss_mb"],
          "added_mb": round(res["peak_rss_mb"] - res["baseline_rss_mb"], 1),
          f"{op}_s": res["seconds"],
          f"first_{op}_s": res["first_seconds"],
          "frames_per_s": round(b * t / res["seconds"], 2),
          "output_mb": round(_output_mb(op, res["out_shape"]), 2),
          "xla_temp_mb": res["xla_temp_mb"],
          "compile_peak_rss_mb": res["compile_peak_rss_mb"],
          "unchunked_peak_rss_mb": whole["peak_rss_mb"] if whole else None,
          "unchunked_baseline_rss_mb": whole["baseline_rss_mb"] if whole else None,
          "unchunked_added_mb": (round(whole["peak_rss_mb"] - whole["baseline_rss_mb"], 1)
                                 if whole else None),
          f"unchunked_{op}_s": whole["seconds"] if whole else None,
          "unchunked_xla_temp_mb": whole["xla_temp_mb"] if whole else None,
          "peak_reset": res["peak_reset"],
      }
      print(json.dumps(line), flush=True)
      lines.append(line)
      rows.append(line)
    lines.append(_growth(op, rows))
    print(json.dumps(lines[-1]), flush=True)
  return lines


def _output_mb(op: str, shape: list[int]) -> float:
  return math.prod(shape) * 4 / MB


def _growth(op: str, rows: list[dict]) -> dict:
  """Slope of the peak against frames, and whether the added memory grows faster than T."""
  ts = [r["frames"] for r in rows]
  slope, _ = line_fit(ts, [r["peak_rss_mb"] for r in rows])
  added_slope, _ = line_fit(ts, [r["added_mb"] for r in rows])
  out_per_frame = statistics.fmean(r["output_mb"] / r["frames"] for r in rows)
  # Exponent p of added ~ T^p between the shortest and the longest clip.
  lo, hi = rows[0], rows[-1]
  exponent = None
  if len(rows) > 1 and lo["added_mb"] > 0 and hi["added_mb"] > 0 and hi["frames"] != lo["frames"]:
    exponent = math.log(hi["added_mb"] / lo["added_mb"]) / math.log(hi["frames"] / lo["frames"])
  growth = ("unknown" if exponent is None else "sub-linear" if exponent < 0.9 else
            "linear" if exponent <= 1.1 else "super-linear")
  unchunked = [r for r in rows if r["unchunked_added_mb"] is not None]
  return {
      "bench": ("vae_chunked_memory_growth" if op == "decode"
                else "vae_chunked_encode_memory_growth"),
      "op": op,
      "frames": ts,
      "rss_mb_per_frame": round(slope, 4),
      "added_mb_per_frame": round(added_slope, 4),
      "output_mb_per_frame": round(out_per_frame, 4),
      "added_exponent": None if exponent is None else round(exponent, 3),
      "growth": growth,
      "no_faster_than_linear": exponent is not None and exponent <= 1.1,
      "unchunked_added_mb_per_frame": (
          round(line_fit([r["frames"] for r in unchunked],
                     [r["unchunked_added_mb"] for r in unchunked])[0], 4)
          if len(unchunked) > 1 else None),
      "chunk_latent_frames": rows[0]["chunk_latent_frames"],
      "batch": rows[0]["batch"], "size": rows[0]["size"],
  }


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(memory_child(_CHILD.value)), flush=True)
    return
  unknown = set(_WHAT.value) - {"throughput", "memory"}
  if unknown:
    raise app.UsageError(f"--what: unknown {sorted(unknown)}")
  if "throughput" in _WHAT.value:
    print(json.dumps(throughput()), flush=True)
  if "memory" in _WHAT.value:
    memory()


if __name__ == "__main__":
  app.run(main)
