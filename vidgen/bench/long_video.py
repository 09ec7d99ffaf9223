"""Long-video sampling: time and peak memory against length per scheme; brute force's limits.

    python -m vidgen.bench.long_video [--config=configs/shapes/dit.py] [--window=0]
        [--multiples=1,4,16] [--schemes=autoregressive,long_range,hierarchical,brute_force]
        [--steps=4] [--batch=1] [--height=64] [--width=64] [--reps=3] [--cfg=<config's>]
        [--context=<half the window>] [--memory_budget_gb=<physical memory>]
        [--brute_max_multiple=1024] [--timeout=900]

Prints one JSON line per result on stdout (logs go to stderr). The model is
the config's stage 2 (the shapes `mini` DiT by default) with random params
(numpy draws of `init_params`' shapes: speed and memory do not depend on the
values; a fixed vocabulary of 256, so no tokenizer is read), random caption
tokens with a full mask. Only the latents are generated
(`Generator.sample_latents`): decoding is left out, the point is the DiT
sampling (the VAE's chunked decoding has its own benchmark, vidgen.bench.vae).

long_video         one per (scheme, multiple), each in a fresh subprocess so
  that `peak_rss_mb` (VmHWM) is the case's own: a video of T = multiple x
  `--window` latent frames (`pixel_frames` = 1 + (T - 1) x the VAE's time
  factor). The window program is compiled ahead of time (`compile_seconds`,
  and `xla_temp_mb` / `xla_argument_mb` / `xla_output_mb` from its
  memory_analysis: every step of a plan has the window's shape, so it is the
  only sampler program), then one warm-up run (`first_seconds`: it compiles the
  jit cache's copy and the runner's eager gathers and scatters), then `--reps`
  timed runs: `seconds` is their median, `seconds_all` all of them.
  `baseline_rss_mb` is the RSS before the timed runs, `run_peak_rss_mb` the
  high-water mark during them (reset first, Linux /proc/self/clear_refs), and
  `peak_rss_mb` the whole process's (compiles included; about 0.5 GB of it is
  the JAX runtime); `run_added_mb` = run peak - baseline is the sampling's own
  working set, the cleanest memory signal at small sizes. `windows` is
  len(plan.steps), `model_calls` the DiT applications (windows x sampler
  calls per window x 2 with text guidance, x 3 with frame guidance),
  `tokens_per_call` the DiT tokens of one window and clip.
long_video_growth  one per scheme over the multiples that ran:
  `seconds_per_latent_frame` (least-squares slope), `linearity` (the largest
  case's seconds over the prediction of a line fitted to the other cases;
  null with fewer than three), `proportionality` ((seconds ratio) / (length
  ratio) of the largest to the smallest case: 1 is exactly proportional; FDM
  schemes sit above 1 because the first window generates all its W frames
  and later ones only W - context), `rss_growth_mb` (peak RSS of the largest
  minus the smallest case), the same for `run_added_mb` and XLA's temp
  memory, and a rough `verdict`. FDM schemes should show near-linear time and
  flat memory (one window program whatever the length); brute force's
  program grows with the video. (With factorised attention, brute force's
  time is near-linear too at short lengths: its temporal attention over T
  frames is cheap next to the rest until T is a few hundred latent frames.
  On the 2-core CPU with the mini DiT, `--multiples=16,64,128` had it faster
  than autoregressive at 80 latent frames, level at 320 and 1.6x slower at
  640, its working set growing as its XLA temp memory, quadratically.)

Brute force runs out in two places:
  1. The position table. Brute force samples all T latent frames in one call,
     so the DiT's learned temporal position table must hold T / pt patch
     frames; the shapes DiT's holds 16 (`dit.max_frames`, patch frames; pt = 1),
     so brute force at the shapes config cannot go beyond 16 latent frames:
     with the default window of 5, 4x (20 frames) already fails. Each
     brute-force case longer than the table first tries the unmodified model
     and records the ValueError naming the position tables (`table_error`),
     then runs with `dit.max_frames` enlarged to the case (`table`:
     "enlarged"; the values of an untrained table do not matter here). The
     `long_video_brute_force_limit` line reports the table, the first
     multiple (of the run and compile-only lengths) beyond it and the error.
  2. Memory. Beyond the multiples that ran, brute force for doubling lengths
     up to `--brute_max_multiple` x window is compiled only (lower +
     compile, nothing allocated): one `long_video_brute_force_memory` line
     per length (the run lengths too, so that all points come from one code
     path) with XLA's temp, argument and output sizes; then
     `long_video_brute_force_budget`: the first length whose compiled memory
     (temp + arguments + outputs) exceeds `--memory_budget_gb` (default:
     MemTotal of /proc/meminfo; null: it fits up to the longest tried), and
     an EXTRAPOLATION from a least-squares fit a + bT + cT^2 of the compiled
     memory against T (temporal attention is quadratic in T) to where it would
     exceed 141 GB, an H200's memory. The fit is in bytes, so the longest
     lengths, where the T^2 term dominates, decide it (`fit_rel_error_longest`);
     the shortest, dominated by the params, fit loosely (`fit_max_rel_error`).
     The figures are XLA CPU's; a GPU compiler fuses attention differently,
     so the extrapolation is a guide, not a measurement. A brute-force run
     case whose compiled memory exceeds the budget is not run (`ran`: false)
     rather than left to exhaust the machine; a child that times out or is
     killed is reported with `error`.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
from vidgen.bench.measure import line_fit, peak_rss_mb, physical_memory_gb, reset_peak, rss_mb
from vidgen.diffusion import long_video as long_video_lib
from vidgen.trainers import dit

_CONFIG = flags.DEFINE_string("config", "configs/shapes/dit.py", "Stage-2 config file[:arg].")
_WINDOW = flags.DEFINE_integer("window", 0, "Latent frames per sampler call; 0: the config's "
                               "default window (the longest training bucket: 5 for shapes).")
_MULTIPLES = flags.DEFINE_list("multiples", ["1", "4", "16"],
                               "Video lengths in windows: T = multiple x window latent frames.")
_SCHEMES = flags.DEFINE_list("schemes", list(long_video_lib.SCHEMES), "Schemes to measure.")
_STEPS = flags.DEFINE_integer("steps", 4, "Sampler steps (the config's sampler).")
_BATCH = flags.DEFINE_integer("batch", 1, "Videos per call.")
_HEIGHT = flags.DEFINE_integer("height", 64, "Pixel height.")
_WIDTH = flags.DEFINE_integer("width", 64, "Pixel width.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions after one warm-up run; the median is "
                             "reported.")
_CFG = flags.DEFINE_float("cfg", None, "Text guidance scale; default the config's (!= 1 doubles "
                          "the model calls).")
_CONTEXT = flags.DEFINE_integer("context", None, "Conditioning frames per window; default the "
                                "config's (0 there: half the window).")
_BUDGET = flags.DEFINE_float("memory_budget_gb", None, "Brute force's memory budget in GiB; "
                             "default this machine's physical memory (/proc/meminfo).")
_BRUTE_MAX = flags.DEFINE_integer("brute_max_multiple", 1024, "Brute force is compiled (not run) "
                                  "for doubling multiples up to this.")
_TIMEOUT = flags.DEFINE_integer("timeout", 900, "Seconds per child process.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random params, tokens and noise.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run SCHEME:MULTIPLE, or `sweep` (brute "
                             "force's limits), in this process and print its JSON lines.")

# Flags a child gets from its parent.
_FORWARD = ("config", "window", "multiples", "steps", "batch", "height", "width", "reps", "cfg",
            "context", "memory_budget_gb", "brute_max_multiple", "seed")

MB = 2.0 ** 20
GB = 2.0 ** 30
H200_BYTES = 141e9  # an H200's memory, 141 GB
VOCAB = 256


def _r(x: float | None, digits: int = 4) -> float | None:
  return None if x is None else round(float(x), digits)


def _emit(line: dict) -> None:
  print(json.dumps(line), flush=True)


# ---------------------------------------------------------------------------
def budget_gb() -> tuple[float | None, str]:
  """(memory budget in GiB, where it came from)."""
  if _BUDGET.value is not None:
    return _BUDGET.value, "--memory_budget_gb"
  return physical_memory_gb(), "/proc/meminfo MemTotal"


# ---------------------------------------------------------------------------
# The model.


@dataclasses.dataclass
class Setup:
  """One configured generator and what it runs on.

  Attributes:
    config: the (possibly table-enlarged) config.
    models: its stage-2 modules.
    gen: the Generator (window, scheme, context, steps, cfg set).
    window: latent frames per sampler call.
    latent_hw: (H', W', C) of the latents.
    time_factor: the VAE's.
  """
  config: Any
  models: dit.Models
  gen: dit.Generator
  window: int
  latent_hw: tuple[int, int, int]
  time_factor: int


def load_config(max_frames: int | None = None):
  """The config of --config; `max_frames` (patch frames) enlarges the DiT's position table."""
  config = configlib.load(_CONFIG.value)
  if max_frames is not None and max_frames > int(config.dit.max_frames):
    config.dit.max_frames = int(max_frames)
  return config


def make_setup(scheme: str, max_frames: int | None = None) -> Setup:
  """Models and a Generator for `scheme` from the flags (window 0: the config's default)."""
  config = load_config(max_frames)
  models = dit.Models.from_config(config, vocab_size=VOCAB)
  gen = dit.Generator.from_config(config, models, steps=_STEPS.value, cfg=_CFG.value)
  window = _WINDOW.value or gen.window
  gen = dataclasses.replace(gen, window=window, scheme=scheme,
                            context=_CONTEXT.value if _CONTEXT.value is not None else gen.context)
  tf = gen.time_factor
  lt, lh, lw, c = models.latent_grid((1 + (window - 1) * tf, _HEIGHT.value, _WIDTH.value))
  if lt != window:
    raise ValueError(f"window {window} latent frames: the VAE maps {1 + (window - 1) * tf} "
                     f"frames to {lt}")
  return Setup(config, models, gen, window, (lh, lw, c), tf)


def abstract_params(s: Setup) -> Any:
  """ShapeDtypeStructs of init_params' unboxed tree (nothing computed)."""
  return jax.eval_shape(lambda: meta.unbox(
      dit.init_params(s.models, int(s.config.text.max_len), jax.random.key(0))))


def random_params(s: Setup, seed: int) -> Any:
  """Params shaped like init_params', drawn in numpy (no compile; values do not change speed).

  Kernels and tables ~ N(0, 1 / fan-in), vectors ~ 0.1 N(0, 1) (+ 1 for norm
  scales, the latent scale among them), scalars 1.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    shape = leaf.shape
    if not shape:
      value = np.ones(shape)
    elif len(shape) >= 2:
      value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[:-1]))
    else:
      value = 0.1 * rng.standard_normal(shape) + (getattr(path[-1], "key", "") == "scale")
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract_params(s))


def calls_per_window(gen: dit.Generator) -> int:
  """DiT applications per sampler call (sample_latents always passes `known`)."""
  per_step = 2 * gen.steps - 1 if gen.sampler == "heun" else gen.steps
  if gen.cfg_frames != 1:
    return 3 * per_step
  return (2 if gen.cfg != 1 else 1) * per_step


def window_shapes(s: Setup, frames: int) -> tuple:
  """Abstract (tokens, mask, noise, known_x0, known, frame_index) of one sampler call."""
  b, lt = _BATCH.value, int(s.config.text.max_len)
  lat = jax.ShapeDtypeStruct((b, frames) + s.latent_hw, jnp.float32)
  return (jax.ShapeDtypeStruct((b, lt), jnp.int32), jax.ShapeDtypeStruct((b, lt), jnp.bool_),
          lat, lat, jax.ShapeDtypeStruct((b, frames), jnp.bool_),
          jax.ShapeDtypeStruct((b, frames), jnp.int32))


def compile_window(s: Setup, params: Any, frames: int) -> tuple[dict, float]:
  """({temp, argument, output bytes}, compile seconds) of the sampler program for `frames`."""
  start = time.perf_counter()
  compiled = dit.Generator.latents.lower(s.gen, params, *window_shapes(s, frames)).compile()
  seconds = time.perf_counter() - start
  stats = compiled.memory_analysis()
  if stats is None:
    return {"temp": None, "argument": None, "output": None}, seconds
  return {"temp": stats.temp_size_in_bytes, "argument": stats.argument_size_in_bytes,
          "output": stats.output_size_in_bytes}, seconds


def _mb(x: float | None) -> float | None:
  return None if x is None else round(x / MB, 2)


def _total(mem: dict) -> float | None:
  return None if None in mem.values() else float(sum(mem.values()))


def table_error(s: Setup, frames: int) -> str | None:
  """The ValueError of the unmodified model on a `frames`-latent-frame brute-force video, or None.

  Raised by sample_latents' shape check before any compute, so no params are needed.
  """
  b = _BATCH.value
  noise = jnp.zeros((b, frames) + s.latent_hw, jnp.float32)
  tokens = jnp.zeros((b, int(s.config.text.max_len)), jnp.int32)
  try:
    s.gen.sample_latents(None, tokens, jnp.ones(tokens.shape, bool), noise)
  except ValueError as e:
    if "position tables" in str(e):
      return str(e)
    raise
  except Exception:  # pylint: disable=broad-except
    return None  # it got past the check (and failed on the missing params): within the table
  return None


def table_latent_frames(s: Setup) -> int:
  return int(s.models.dit.max_frames) * s.models.dit.patch[0]


# ---------------------------------------------------------------------------
# Children.


def case_child(scheme: str, multiple: int) -> dict:
  """One (scheme, multiple): time and memory of generating its latents in this process."""
  s = make_setup(scheme)
  frames = multiple * s.window
  pt = s.models.dit.patch[0]
  line: dict[str, Any] = {
      "bench": "long_video", "scheme": scheme, "multiple": multiple, "latent_frames": frames,
      "pixel_frames": 1 + (frames - 1) * s.time_factor, "window": s.window,
      "table": "config", "table_patch_frames": int(s.models.dit.max_frames), "table_error": None,
  }
  if scheme == "brute_force" and frames > table_latent_frames(s):
    line["table_error"] = table_error(s, frames)
    s = make_setup(scheme, max_frames=-(-frames // pt))
    line.update(table="enlarged", table_patch_frames=int(s.models.dit.max_frames))
  gen = s.gen
  plan = gen.plan(frames)
  call_frames = plan.window * pt if len(plan.steps) > 1 else frames
  line.update(
      context=gen.context if gen.context is not None else (s.window // pt) // 2 * pt,
      windows=len(plan.steps), model_calls=len(plan.steps) * calls_per_window(gen),
      tokens_per_call=s.models.tokens_per_clip((call_frames,) + s.latent_hw[:2]),
      call_latent_frames=call_frames)

  params = random_params(s, _SEED.value)
  mem, compile_s = compile_window(s, params, call_frames)
  budget, _ = budget_gb()
  line.update(compile_seconds=_r(compile_s, 3), xla_temp_mb=_mb(mem["temp"]),
              xla_argument_mb=_mb(mem["argument"]), xla_output_mb=_mb(mem["output"]))
  total = _total(mem)
  if budget is not None and total is not None and total > budget * GB:
    logging.warning("%s x%d: compiled memory %.1f GiB exceeds the budget %.1f GiB: not run",
                    scheme, multiple, total / GB, budget)
    line.update(ran=False, error=f"compiled memory {total / GB:.2f} GiB > budget {budget:.2f} GiB",
                peak_rss_mb=_r(peak_rss_mb(), 1))
    return line

  rng = np.random.default_rng(_SEED.value + 1)
  b, lt = _BATCH.value, int(s.config.text.max_len)
  tokens = jnp.asarray(rng.integers(1, VOCAB, (b, lt)), jnp.int32)
  mask = jnp.ones((b, lt), bool)
  noise = jnp.asarray(rng.standard_normal((b, frames) + s.latent_hw), jnp.float32)

  def once() -> float:
    start = time.perf_counter()
    jax.block_until_ready(gen.sample_latents(params, tokens, mask, noise))
    return time.perf_counter() - start

  first = once()
  setup_peak = peak_rss_mb()
  baseline = rss_mb()
  reset = reset_peak()
  seconds = [once() for _ in range(max(1, _REPS.value))]
  run_peak = peak_rss_mb()
  median = statistics.median(seconds)
  line.update(
      ran=True, error=None, seconds=_r(median), seconds_all=[_r(x) for x in seconds],
      first_seconds=_r(first, 3), seconds_per_window=_r(median / len(plan.steps), 5),
      latent_frames_per_s=_r(b * frames / median, 2),
      peak_rss_mb=_r(max(setup_peak, run_peak) if reset else run_peak, 1),
      run_peak_rss_mb=_r(run_peak, 1) if reset else None, baseline_rss_mb=_r(baseline, 1),
      run_added_mb=_r(run_peak - baseline, 1) if reset else None, peak_reset=reset,
      settings={"config": _CONFIG.value, "steps": gen.steps, "sampler": gen.sampler,
                "cfg": gen.cfg, "cfg_frames": gen.cfg_frames, "batch": b,
                "height": _HEIGHT.value, "width": _WIDTH.value, "reps": _REPS.value,
                "variant": str(s.config.dit.variant), "jax_backend": jax.default_backend()})
  return line


def sweep_multiples() -> list[int]:
  """The run multiples, then doublings of the largest up to --brute_max_multiple."""
  ms = sorted({int(m) for m in _MULTIPLES.value})
  m = ms[-1] * 2
  while m <= _BRUTE_MAX.value:
    ms.append(m)
    m *= 2
  return ms


def quadratic_fit(ts: list[float], ys: list[float]) -> tuple[float, float, float] | None:
  """Least-squares (a, b, c) of y = a + b t + c t^2, or None with fewer than three points."""
  if len(set(ts)) < 3:
    return None
  c, b, a = np.polyfit(np.asarray(ts, float), np.asarray(ys, float), 2)
  return float(a), float(b), float(c)


def solve_quadratic(fit: tuple[float, float, float], y: float) -> float | None:
  """The smallest t > 0 with a + b t + c t^2 = y (the fit growing), or None."""
  a, b, c = fit
  if abs(c) < 1e-30:
    return (y - a) / b if b > 0 else None
  disc = b * b - 4 * c * (a - y)
  if disc < 0:
    return None
  roots = sorted(r for r in ((-b + s * math.sqrt(disc)) / (2 * c) for s in (1, -1)) if r > 0)
  return roots[0] if roots else None


def sweep_child() -> list[dict]:
  """Brute force's limits: the position table, then compiled memory for doubling lengths."""
  base = make_setup("brute_force")
  window, pt, tf = base.window, base.models.dit.patch[0], base.time_factor
  table = table_latent_frames(base)
  multiples = sweep_multiples()
  failing = next((m for m in multiples if m * window > table), None)
  probe = failing * window if failing is not None else table + pt
  error = table_error(base, probe)
  lines = [{
      "bench": "long_video_brute_force_limit", "limit": "position_table",
      "table_patch_frames": int(base.models.dit.max_frames), "table_latent_frames": table,
      "window": window, "largest_multiple_within_table": table // window,
      "first_failing_multiple": failing,
      "first_failing_latent_frames": failing * window if failing is not None else None,
      "probe_latent_frames": probe, "error": error,
  }]
  budget, source = budget_gb()
  points = []
  for m in multiples:
    frames = m * window
    s = make_setup("brute_force", max_frames=-(-frames // pt))
    line = {"bench": "long_video_brute_force_memory", "multiple": m, "latent_frames": frames,
            "pixel_frames": 1 + (frames - 1) * tf,
            "table_patch_frames": int(s.models.dit.max_frames),
            "tokens_per_call": s.models.tokens_per_clip((frames,) + s.latent_hw[:2])}
    try:
      mem, compile_s = compile_window(s, abstract_params(s), frames)
    except Exception as e:  # pylint: disable=broad-except
      line.update(error=f"{type(e).__name__}: {str(e)[:500]}")
      lines.append(line)
      logging.warning("brute force x%d: compile failed: %s", m, e)
      continue
    total = _total(mem)
    line.update(xla_temp_mb=_mb(mem["temp"]), xla_argument_mb=_mb(mem["argument"]),
                xla_output_mb=_mb(mem["output"]), compiled_mb=_mb(total),
                compile_seconds=_r(compile_s, 3),
                fits_budget=None if budget is None or total is None else total <= budget * GB,
                error=None)
    logging.info("brute force x%d (%d latent frames): %s", m, frames, line)
    lines.append(line)
    if total is not None:
      points.append((frames, total))

  over = next((l for l in lines[1:] if l.get("fits_budget") is False), None)
  fitting = [l["latent_frames"] for l in lines[1:] if l.get("fits_budget")]
  fit = quadratic_fit([p[0] for p in points], [p[1] for p in points])
  h200 = solve_quadratic(fit, H200_BYTES) if fit else None
  errors = []
  if fit:
    a, b, c = fit
    errors = [abs(a + b * t + c * t * t - y) / y for t, y in points]
  lines.append({
      "bench": "long_video_brute_force_budget",
      "memory_budget_gb": _r(budget, 2), "budget_source": source,
      "lengths_tried": [p[0] for p in points],
      "first_over_budget_latent_frames": over["latent_frames"] if over else None,
      "first_over_budget_multiple": over["multiple"] if over else None,
      "first_over_budget_compiled_gb": _r(over["compiled_mb"] / 1024, 2) if over else None,
      "fits_up_to_latent_frames": max(fitting) if fitting else None,
      "result": (f"over budget from {over['latent_frames']} latent frames" if over else
                 f"fits up to the longest tried, {max(fitting, default=None)} latent frames"),
      "fit_of": "XLA compiled bytes (temp + arguments + outputs) vs T latent frames",
      "fit_bytes": {"a": fit[0], "b": fit[1], "c": fit[2]} if fit else None,
      "fit_rel_error_longest": _r(errors[-1]) if errors else None,
      "fit_max_rel_error": _r(max(errors)) if errors else None,
      "extrapolation": {
          "label": "EXTRAPOLATION from the quadratic fit (XLA CPU figures), not a measurement",
          "device": "H200", "memory_gb": H200_BYTES / 1e9,
          "latent_frames": _r(h200, 1),
          "multiple": _r(h200 / window, 2) if h200 else None,
          "pixel_frames": _r(1 + (h200 - 1) * tf, 0) if h200 else None,
      },
  })
  return lines


# ---------------------------------------------------------------------------
# The parent.


def _run_child(spec: str) -> list[dict] | str:
  """The child's JSON lines, or why there are none."""
  cmd = [sys.executable, "-m", "vidgen.bench.long_video", f"--child={spec}"]
  cmd += [flags.FLAGS[name].serialize() for name in _FORWARD
          if flags.FLAGS[name].value is not None]
  start = time.perf_counter()
  try:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=_TIMEOUT.value, check=False)
  except subprocess.TimeoutExpired:
    logging.warning("%s: timed out after %d s", spec, _TIMEOUT.value)
    return f"timed out after {_TIMEOUT.value} s"
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    why = (f"killed by signal {-proc.returncode} (out of memory?)" if proc.returncode < 0 else
           f"exit code {proc.returncode}")
    tail = proc.stderr.strip().splitlines()[-1:] or [""]
    logging.warning("%s failed (%s):\n%s", spec, why, proc.stderr[-3000:])
    return f"{why}: {tail[0][:300]}"
  logging.info("%s: %.1f s", spec, time.perf_counter() - start)
  return lines


def growth(scheme: str, rows: list[dict]) -> dict:
  """The `long_video_growth` line of one scheme from its cases that ran."""
  rows = sorted((r for r in rows if r.get("ran")), key=lambda r: r["latent_frames"])
  line: dict[str, Any] = {"bench": "long_video_growth", "scheme": scheme,
                          "latent_frames": [r["latent_frames"] for r in rows],
                          "seconds": [r["seconds"] for r in rows],
                          "peak_rss_mb": [r["peak_rss_mb"] for r in rows],
                          "run_added_mb": [r.get("run_added_mb") for r in rows],
                          "xla_temp_mb": [r["xla_temp_mb"] for r in rows],
                          "windows": [r["windows"] for r in rows]}
  keys = ("seconds_per_latent_frame", "seconds_per_window_slope", "linearity", "proportionality",
          "rss_growth_mb", "rss_mb_per_latent_frame", "run_added_growth_mb",
          "xla_temp_growth_mb", "verdict")
  if len(rows) < 2:
    return {**line, **{k: None for k in keys}}
  ts = [float(r["latent_frames"]) for r in rows]
  secs = [float(r["seconds"]) for r in rows]
  slope, _ = line_fit(ts, secs)
  win_slope, _ = line_fit([float(r["windows"]) for r in rows], secs)
  linearity = None
  if len(rows) >= 3:
    s0, i0 = line_fit(ts[:-1], secs[:-1])
    pred = i0 + s0 * ts[-1]
    linearity = secs[-1] / pred if pred > 0 else None
  proportionality = (secs[-1] / secs[0]) / (ts[-1] / ts[0])
  rss = [float(r["peak_rss_mb"]) for r in rows]
  temps = [r["xla_temp_mb"] for r in rows]
  rss_slope, _ = line_fit(ts, rss)
  added = [r.get("run_added_mb") for r in rows]
  added_growth = added[-1] - added[0] if None not in (added[0], added[-1]) else None
  temp_growth = temps[-1] - temps[0] if None not in (temps[0], temps[-1]) else None
  check = linearity if linearity is not None else proportionality
  verdict = ("super-linear time" if check > 1.3 else "sub-linear time" if check < 0.7
             else "near-linear time")
  verdict += ("; memory grows" if temp_growth and temp_growth > 0.5 * max(temps[0], 1e-9)
              else "; flat program memory")
  return {**line,
          "seconds_per_latent_frame": _r(slope, 6), "seconds_per_window_slope": _r(win_slope, 6),
          "linearity": _r(linearity), "proportionality": _r(proportionality),
          "rss_growth_mb": _r(rss[-1] - rss[0], 1), "rss_mb_per_latent_frame": _r(rss_slope, 4),
          "run_added_growth_mb": _r(added_growth, 1), "xla_temp_growth_mb": _r(temp_growth, 2),
          "verdict": verdict}


def run_all() -> None:
  """Every (scheme, multiple) case, a growth line per scheme, then brute force's limits."""
  schemes = list(_SCHEMES.value)
  bad = [s for s in schemes if s not in long_video_lib.SCHEMES]
  if bad:
    raise app.UsageError(f"unknown schemes {bad}; valid: {long_video_lib.SCHEMES}")
  multiples = sorted({int(m) for m in _MULTIPLES.value})
  if not multiples or multiples[0] < 1:
    raise app.UsageError(f"--multiples must be >= 1, got {_MULTIPLES.value}")
  for scheme in schemes:
    rows = []
    for m in multiples:
      logging.info("case %s x%d", scheme, m)
      out = _run_child(f"{scheme}:{m}")
      if isinstance(out, str):
        row = {"bench": "long_video", "scheme": scheme, "multiple": m, "ran": False, "error": out}
      else:
        row = out[-1]
      logging.info("%s", row)
      _emit(row)
      rows.append(row)
    _emit(growth(scheme, rows))
  if "brute_force" in schemes:
    logging.info("brute force: position table and compiled memory up to x%d", _BRUTE_MAX.value)
    out = _run_child("sweep")
    if isinstance(out, str):
      _emit({"bench": "long_video_brute_force_budget", "error": out})
    else:
      for line in out:
        _emit(line)


def main(argv):
  del argv
  child = _CHILD.value
  if child == "sweep":
    for line in sweep_child():
      _emit(line)
  elif child:
    scheme, multiple = child.split(":")
    _emit(case_child(scheme, int(multiple)))
  else:
    run_all()


if __name__ == "__main__":
  app.run(main)
