"""Samplers and classifier-free guidance, as pure functions over a model function.

A model function is `model_fn(x_t, t_frames) -> prediction`, with the
training conventions of `flow.py`: x_t (B, T, ...), per-frame times t_frames
(B, T) from 0 (clean) to 1 (noise); the prediction is a velocity (flow) or an
epsilon / v (ddpm, per its config).

Samplers (all deterministic given the starting noise):
  flow  euler    first-order ODE steps, as diffusers' FlowMatchEulerDiscreteScheduler.
        heun     second-order (Karras et al. 2022, Alg. 1): an Euler step, then the
                 average of the two slopes; the last step (to t = 0) is Euler
                 only, so `steps` steps cost 2 steps - 1 model calls, as
                 diffusers' FlowMatchHeunDiscreteScheduler.
  ddpm  ddim     DDIM with eta = 0 (diffusers' DDIMScheduler).
        dpm++2m  DPM-Solver++(2M), multistep, data prediction, midpoint form
                 (diffusers' DPMSolverMultistepScheduler, algorithm_type
                 "dpmsolver++", solver_order 2, final sigma 0): first and last
                 steps first order, the last one lands on x0_hat.

Time grids (`time_grid`), steps + 1 times from 1 to 0:
  flow  linspace(1, 0, steps + 1), shifted by s t / (1 + (s - 1) t) (no shift
        for s <= 0 or s == 1). diffusers' FlowMatch schedulers by default use
        linspace(1, shift(1 / 1000), steps) then 0; ours is that of
        set_timesteps(sigmas=linspace(1, 0, steps + 1)[:-1]).
  ddpm  "trailing" spacing (Lin et al. 2023, Table 2; diffusers'
        timestep_spacing="trailing"): steps k_i = round(N - i N / steps) - 1,
        i < steps, i.e. times t_i = round(N (1 - i / steps)) / N, starting at
        the last training step (t = 1), then t = 0 (abar = 1). Every step goes
        to the next grid time; diffusers' DDIM goes to k - N // steps
        instead, the same when `steps` divides N.

Per-step coefficients are computed in float64 numpy from the static time grid
and cast to the noise's dtype, so the loop body is a few multiply-adds.
Known (conditioning) frames are held at `known_x0` after every update and get
time 0 in the model input. Loops are `jax.lax.fori_loop`s with one call site
of the model, so a sampler traces the model once; `steps` and `sampler` are
static: jit with `functools.partial(sample, diffusion, model_fn, sampler=...,
steps=...)`.

Shape legend: B batch, T frames, H height, W width, C channels.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vidgen.diffusion import flow

Array = jax.Array
ModelFn = flow.ModelFn

SAMPLERS = {"flow": ("euler", "heun"), "ddpm": ("ddim", "dpm++2m")}


def time_grid(diffusion: flow.Diffusion, steps: int, shift: float = 0.0) -> np.ndarray:
  """The (steps + 1,) float64 times a sampler visits, from 1 down to 0 (see module doc)."""
  if steps < 1:
    raise ValueError(f"sampling needs steps >= 1, got {steps}")
  if diffusion.kind == "flow":
    return flow.time_shift(np.linspace(1.0, 0.0, steps + 1), shift)
  if shift > 0 and shift != 1:
    raise ValueError(f"the time shift is for flow sampling only, got shift={shift} for ddpm")
  n = diffusion.steps
  if steps > n:
    raise ValueError(f"ddpm sampling needs steps <= training steps {n}, got {steps}")
  trailing = np.round(n - np.arange(steps) * (n / steps))  # k_i + 1, distinct
  return np.concatenate([trailing / n, [0.0]])


def cfg_combine(pred_cond: Array, pred_uncond: Array, scale: float) -> Array:
  """Classifier-free guidance: uncond + scale (cond - uncond); scale 1 is the conditional model."""
  return pred_uncond + scale * (pred_cond - pred_uncond)


def cfg_combine3(pred_full: Array, pred_no_text: Array, pred_none: Array, text_scale: float,
                 frames_scale: float) -> Array:
  """Guidance with separate scales for the known frames and the text (InstructPix2Pix).

  none + frames_scale (no_text - none) + text_scale (full - no_text), where
  `full` sees text and frames, `no_text` the frames only and `none` neither.
  """
  return (pred_none + frames_scale * (pred_no_text - pred_none)
          + text_scale * (pred_full - pred_no_text))


def guided(model_fn: Callable[[Array, Array, bool], Array], scale: float) -> ModelFn:
  """A guided model function from `model_fn(x_t, t_frames, cond)` (cond: use the caption).

  Scale 1 calls the conditional model only; otherwise both, combined by `cfg_combine`.
  """
  if scale == 1:
    return lambda x_t, t_frames: model_fn(x_t, t_frames, True)

  def fn(x_t, t_frames):
    return cfg_combine(model_fn(x_t, t_frames, True), model_fn(x_t, t_frames, False), scale)

  return fn


def guided_frames(model_fn: Callable[[Array, Array, bool], Array], diffusion: flow.Diffusion,
                  text_scale: float, frames_scale: float, known: Array, known_x0: Array,
                  noise: Array) -> ModelFn:
  """Guidance with separate scales for the text and the known frames (`cfg_combine3`).

  The prediction without the frames treats them as frames to generate: at
  the sampler's time t they are noised along the trajectory's own `noise`
  and get time t, as in training without a mask. Three model calls per
  step; with frames_scale 1 use `guided` (two calls).

  Args:
    model_fn: model_fn(x_t, t_frames, cond) (cond: use the caption).
    diffusion: the noise process (for noising the known frames).
    text_scale, frames_scale: the scales of cfg_combine3.
    known: bool (B, T) known frames; known_x0 their clean values (B, T, ...).
    noise: the sampler's starting noise (B, T, ...).
  """
  known_x = flow.expand_to(known, noise)

  def fn(x_t, t_frames):
    t = jnp.broadcast_to(jnp.max(t_frames, axis=1, keepdims=True), t_frames.shape)  # B T
    x_free = jnp.where(known_x, diffusion.noisy(known_x0.astype(x_t.dtype), noise, t), x_t)
    return cfg_combine3(model_fn(x_t, t_frames, True), model_fn(x_t, t_frames, False),
                        model_fn(x_free, t, False), text_scale, frames_scale)

  return fn


def sample(diffusion: flow.Diffusion, model_fn: ModelFn, noise: Array, *, sampler: str,
           steps: int, known_x0: Array | None = None, known: Array | None = None,
           shift: float = 0.0) -> Array:
  """Generates x0 from `noise` (B, T, ...) with `steps` steps of `sampler`.

  Args:
    diffusion: the noise process (flow.RectifiedFlow or flow.DDPM).
    model_fn: model_fn(x_t (B, T, ...), t_frames (B, T)) -> prediction.
    noise: the starting noise (B, T, ...); its dtype is the sampling dtype.
    sampler: "euler" | "heun" (flow), "ddim" | "dpm++2m" (ddpm).
    steps: number of steps (static).
    known_x0: clean latents (B, T, ...) of the known frames (other frames ignored).
    known: bool (B, T), True for known frames; given with known_x0.
    shift: flow time-grid shift (<= 0 or 1: none); ddpm accepts none.

  Returns:
    x0 (B, T, ...) in the dtype of `noise`; known frames equal known_x0 exactly.
  """
  valid = SAMPLERS[diffusion.kind]
  if sampler not in valid:
    raise ValueError(f"sampler {sampler!r} is not one for {diffusion.kind}; valid: {valid}")
  if (known is None) != (known_x0 is None):
    raise ValueError("known and known_x0 go together")
  dtype = noise.dtype
  batch, frames = noise.shape[:2]
  grid = time_grid(diffusion, steps, shift)

  if known is None:
    hold = lambda x: x
    frame_times = lambda t: jnp.full((batch, frames), t, dtype)
  else:
    known_x = flow.expand_to(known, noise)
    known_x0 = known_x0.astype(dtype)
    hold = lambda x: jnp.where(known_x, known_x0, x)
    frame_times = lambda t: jnp.where(known, 0, t).astype(dtype)  # B T

  def call(x, t):
    return model_fn(x, frame_times(t)).astype(dtype)

  const = lambda a: jnp.asarray(np.asarray(a, np.float64), dtype)
  x = hold(noise)
  if sampler == "euler":
    return _euler(call, hold, x, grid, const)
  if sampler == "heun":
    return _heun(call, hold, x, grid, const)
  return _ddpm(diffusion, call, hold, x, grid, const, multistep=sampler == "dpm++2m")


def _euler(call, hold, x, grid, const):
  t, dt = const(grid[:-1]), const(np.diff(grid))

  def body(i, x):
    return hold(x + dt[i] * call(x, t[i]))

  return jax.lax.fori_loop(0, len(grid) - 1, body, x)


def _heun(call, hold, x, grid, const):
  # Stages: per step i < n - 1 an Euler stage at t_i and a correction stage at
  # t_{i+1}; the last step (to t = 0) is one Euler stage. One model call each.
  n = len(grid) - 1
  t_eval, first, dt = [], [], []
  for i in range(n):
    stages = [(grid[i], True)] + ([(grid[i + 1], False)] if i < n - 1 else [])
    for t, is_first in stages:
      t_eval.append(t)
      first.append(is_first)
      dt.append(grid[i + 1] - grid[i])
  t_eval, dt, first = const(t_eval), const(dt), jnp.asarray(first)

  def body(j, carry):
    x, base, v_prev = carry
    v = call(x, t_eval[j])
    x_next = jnp.where(first[j], x + dt[j] * v, base + dt[j] * 0.5 * (v_prev + v))
    return (hold(x_next), jnp.where(first[j], x, base), jnp.where(first[j], v, v_prev))

  x, _, _ = jax.lax.fori_loop(0, len(first), body, (x, x, jnp.zeros_like(x)))
  return x


def _ddpm(diffusion, call, hold, x, grid, const, multistep):
  """DDIM (eta 0) or DPM-Solver++(2M) on the ddpm grid, both as x' = a x + b x0_hat + c (...)."""
  n = len(grid) - 1
  abar = diffusion.abar64(grid)  # n + 1, 1 at the end
  alpha, sigma = np.sqrt(abar), np.sqrt(1 - abar)
  # x0_hat = p x + q pred; eps_hat = r x + s pred (at step i).
  if diffusion.prediction == "epsilon":
    p, q, r, s = 1 / alpha, -sigma / alpha, np.zeros_like(alpha), np.ones_like(alpha)
  else:
    p, q, r, s = alpha, -sigma, sigma, alpha
  p, q, r, s = (a[:n] for a in (p, q, r, s))
  if not multistep:
    # DDIM: x' = alpha' x0_hat + sigma' eps_hat.
    a_x, a_pred = alpha[1:] * p + sigma[1:] * r, alpha[1:] * q + sigma[1:] * s
    a_x, a_pred = const(a_x), const(a_pred)
    t = const(grid[:-1])

    def body(i, x):
      return hold(a_x[i] * x + a_pred[i] * call(x, t[i]))

    return jax.lax.fori_loop(0, n, body, x)

  # DPM-Solver++(2M): x' = (sigma'/sigma) x - alpha' expm1(-h) (D0 + D1 / 2),
  # D0 = m0, D1 = (m0 - m1) / r0, h = lambda' - lambda, r0 = h_prev / h,
  # lambda = log(alpha / sigma). First step first order; the last (sigma' = 0)
  # gives x0_hat.
  lam = np.log(alpha[:n]) - np.log(sigma[:n])
  a, b, c = np.zeros(n), np.ones(n), np.zeros(n)  # last step: x' = x0_hat
  for i in range(n - 1):
    h = np.log(alpha[i + 1]) - np.log(sigma[i + 1]) - lam[i]
    a[i] = sigma[i + 1] / sigma[i]
    b[i] = -alpha[i + 1] * np.expm1(-h)
    if i > 0:
      c[i] = 0.5 * b[i] * h / (lam[i] - lam[i - 1])
  a, b, c, p, q, t = (const(v) for v in (a, b, c, p, q, grid[:-1]))

  def body_2m(i, carry):
    x, m_prev = carry
    m = p[i] * x + q[i] * call(x, t[i])  # x0_hat
    return hold(a[i] * x + b[i] * m + c[i] * (m - m_prev)), m

  x, _ = jax.lax.fori_loop(0, n, body_2m, (x, jnp.zeros_like(x)))
  return x
