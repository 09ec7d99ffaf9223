"""Noise processes and the training loss: rectified flow (default) and DDPM.

Both processes share one interface and one time convention: t runs from 0
(clean data) to 1 (pure noise), float32, and may be given per clip (B,) or
per frame (B, T); it is broadcast over the trailing axes of the latents.

  RectifiedFlow  x_t = (1 - t) x0 + t noise; the model predicts the velocity
                 noise - x0. Training times are logit-normal, shifted towards
                 noise for clips with more tokens (SD3; shift
                 s = max(1, sqrt(tokens / base_tokens)) unless fixed).
  DDPM           x_t = sqrt(abar_k) x0 + sqrt(1 - abar_k) noise over `steps`
                 discrete steps k = 0..steps-1, identified with the times
                 t = (k + 1) / steps (t = 0: clean, abar = 1). The model
                 predicts epsilon (noise) or v = sqrt(abar) noise -
                 sqrt(1 - abar) x0. Schedules are diffusers' "linear" and
                 "squaredcos_cap_v2" ("cosine").

Known (conditioning) frames are clean, get time 0 in the model input and carry
no loss: `loss` implements that for a boolean mask `known` (B, T).

Shape legend: B batch, T frames, H height, W width, C channels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# model_fn(x_t (B, T, ...), t_frames (B, T)) -> prediction (B, T, ...)
ModelFn = Callable[[Array, Array], Array]

KINDS = ("flow", "ddpm")
SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("epsilon", "v")


def expand_to(t: Array, x: Array) -> Array:
  """Appends trailing unit axes to `t` ((), (B,) or (B, T)) so it broadcasts over `x`."""
  t = jnp.asarray(t)
  if t.ndim > x.ndim:
    raise ValueError(f"times of shape {t.shape} do not fit latents of shape {x.shape}")
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def time_shift(t, shift: float):
  """The SD3 time shift s t / (1 + (s - 1) t): maps [0, 1] onto itself, s > 1 towards noise.

  Works on numpy and jax arrays alike; shift <= 0 or == 1 is the identity.
  """
  if shift <= 0 or shift == 1:
    return t
  return shift * t / (1 + (shift - 1) * t)


@dataclasses.dataclass(frozen=True)
class RectifiedFlow:
  """Rectified flow with velocity prediction and logit-normal, shifted training times.

  Attributes:
    shift: time shift for training; > 0 fixed, 0 chosen from the token count
      as max(1, sqrt(tokens / base_tokens)) (more tokens: more noise). Never
      below 1 automatically: a shift under 1 all but stops training at high
      noise, where a sample's layout and motion are decided (at 80 tokens,
      sqrt(80 / 256) put under 0.3% of training times above t = 0.9, and
      samples of the shapes demo lost their motion).
    base_tokens: DiT tokens per clip from which the automatic shift grows above 1.
    logit_mean: mean of the logit-normal training time distribution.
    logit_std: standard deviation of the logit-normal distribution.
    uniform: share of training times drawn uniformly on [0, 1] instead (not
      shifted). A large shift leaves almost no training below t = 0.5: at
      shift 6, 3.7% of the logit-normal's times.
    kind: "flow" (class constant).
  """
  shift: float = 0.0
  base_tokens: int = 256
  logit_mean: float = 0.0
  logit_std: float = 1.0
  uniform: float = 0.0

  kind = "flow"

  def __post_init__(self):
    if self.shift < 0:
      raise ValueError(f"flow.shift must be >= 0, got {self.shift}")
    if self.base_tokens <= 0:
      raise ValueError(f"flow.base_tokens must be > 0, got {self.base_tokens}")
    if self.logit_std <= 0:
      raise ValueError(f"flow.logit_std must be > 0, got {self.logit_std}")
    if not 0 <= self.uniform <= 1:
      raise ValueError(f"flow.uniform must be in [0, 1], got {self.uniform}")

  def shift_for(self, tokens: int) -> float:
    """The training shift for clips of `tokens` DiT tokens (a Python int)."""
    if self.shift > 0:
      return float(self.shift)
    return max(1.0, math.sqrt(tokens / self.base_tokens))

  def sample_times(self, rng: Array, batch: int, tokens: int) -> Array:
    """Training times (B,) float32: sigmoid(mean + std N(0, 1)), then shifted.

    With `uniform` > 0, each time is instead U(0, 1) with that probability.
    """
    if self.uniform > 0:
      rng, pick_rng, uniform_rng = jax.random.split(rng, 3)
    u = jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(rng, (batch,)))
    t = time_shift(u, self.shift_for(tokens))
    if self.uniform > 0:
      t = jnp.where(jax.random.uniform(pick_rng, (batch,)) < self.uniform,
                    jax.random.uniform(uniform_rng, (batch,)), t)
    return t.astype(jnp.float32)

  def noisy(self, x0: Array, noise: Array, t: Array) -> Array:
    """x_t = (1 - t) x0 + t noise."""
    t = expand_to(t, x0).astype(x0.dtype)
    return (1 - t) * x0 + t * noise

  def target(self, x0: Array, noise: Array, t: Array) -> Array:
    """The velocity dx_t/dt = noise - x0 (independent of t)."""
    del t
    return noise - x0

  def predict_x0_eps(self, x_t: Array, pred: Array, t: Array) -> tuple[Array, Array]:
    """(x0_hat, noise_hat) from a velocity v: x_t - t v and x_t + (1 - t) v."""
    t = expand_to(t, x_t).astype(x_t.dtype)
    return x_t - t * pred, x_t + (1 - t) * pred


@dataclasses.dataclass(frozen=True)
class DDPM:
  """Discrete DDPM noise process with epsilon or v prediction.

  Step k in [0, steps) is the time t = (k + 1) / steps; t = 0 is the clean
  data (abar = 1). The tables are computed in float64 numpy at construction
  (`alphas_cumprod64`), with a float32 jax copy (`alphas_cumprod`) for the
  traced functions; under `jax.experimental.enable_x64` float64 inputs use
  the float64 table.

  Attributes:
    schedule: "linear" (diffusers "linear": betas linspace(beta_start,
      beta_end, steps)) or "cosine" (diffusers "squaredcos_cap_v2", betas
      capped at 0.999).
    prediction: "epsilon" (the model predicts the noise) or "v".
    steps: number of training steps.
    beta_start: first beta of the linear schedule.
    beta_end: last beta of the linear schedule.
    alphas_cumprod64: (steps,) float64 numpy, abar_k.
    alphas_cumprod: (steps,) float32 jax copy.
    kind: "ddpm" (class constant).
  """
  schedule: str = "cosine"
  prediction: str = "v"
  steps: int = 1000
  beta_start: float = 1e-4
  beta_end: float = 0.02
  alphas_cumprod64: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)
  alphas_cumprod: Array = dataclasses.field(init=False, repr=False, compare=False)

  kind = "ddpm"

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"ddpm.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"ddpm.prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
    if self.steps < 1:
      raise ValueError(f"ddpm.steps must be >= 1, got {self.steps}")
    abar = np.cumprod(1.0 - self.betas())
    object.__setattr__(self, "alphas_cumprod64", abar)
    object.__setattr__(self, "alphas_cumprod", jnp.asarray(abar, dtype=jnp.float32))

  def betas(self) -> np.ndarray:
    """The (steps,) float64 betas of the schedule."""
    n = self.steps
    if self.schedule == "linear":
      return np.linspace(self.beta_start, self.beta_end, n, dtype=np.float64)
    def alpha_bar(s):  # the cosine schedule of Nichol & Dhariwal (2021)
      return np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2
    i = np.arange(n, dtype=np.float64)
    return np.minimum(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999)

  def step_index(self, t):
    """The step k = round(t * steps) - 1 of a time (-1: clean); numpy or jax."""
    if isinstance(t, np.ndarray) or np.isscalar(t):
      return np.round(np.asarray(t, np.float64) * self.steps).astype(np.int64) - 1
    return jnp.round(t * self.steps).astype(jnp.int32) - 1

  def abar64(self, t) -> np.ndarray:
    """abar at numpy times (float64; 1 at t = 0), for precomputing sampler coefficients."""
    k = self.step_index(np.asarray(t, np.float64))
    return np.where(k < 0, 1.0, self.alphas_cumprod64[np.clip(k, 0, None)])

  def abar(self, t: Array, x: Array) -> Array:
    """abar at jax times t ((B,) or (B, T)), broadcast over x, in x's dtype (1 at t = 0)."""
    table = (jnp.asarray(self.alphas_cumprod64) if x.dtype == jnp.float64
             else self.alphas_cumprod)
    k = self.step_index(jnp.asarray(t))
    abar = jnp.where(k < 0, 1.0, table[jnp.clip(k, 0, self.steps - 1)])
    return expand_to(abar, x).astype(x.dtype)

  def sample_times(self, rng: Array, batch: int, tokens: int) -> Array:
    """Training times (B,) float32: (k + 1) / steps with k uniform in [0, steps - 1]."""
    del tokens
    k = jax.random.randint(rng, (batch,), 0, self.steps)
    return ((k + 1) / self.steps).astype(jnp.float32)

  def noisy(self, x0: Array, noise: Array, t: Array) -> Array:
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) noise."""
    abar = self.abar(t, x0)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * noise

  def target(self, x0: Array, noise: Array, t: Array) -> Array:
    """epsilon: the noise; v: sqrt(abar) noise - sqrt(1 - abar) x0 (diffusers' get_velocity)."""
    if self.prediction == "epsilon":
      return noise
    abar = self.abar(t, x0)
    return jnp.sqrt(abar) * noise - jnp.sqrt(1 - abar) * x0

  def predict_x0_eps(self, x_t: Array, pred: Array, t: Array) -> tuple[Array, Array]:
    """(x0_hat, noise_hat) from an epsilon or v prediction."""
    abar = self.abar(t, x_t)
    alpha, sigma = jnp.sqrt(abar), jnp.sqrt(1 - abar)
    if self.prediction == "epsilon":
      return (x_t - sigma * pred) / alpha, pred
    return alpha * x_t - sigma * pred, alpha * pred + sigma * x_t


Diffusion = Union[RectifiedFlow, DDPM]


def from_config(cfg: Mapping[str, Any]) -> Diffusion:
  """Builds the noise process of a `diffusion` config section (configlib.diffusion_config)."""
  kind = cfg["kind"]
  if kind == "flow":
    return RectifiedFlow(**dict(cfg["flow"]))
  if kind == "ddpm":
    return DDPM(**dict(cfg["ddpm"]))
  raise ValueError(f"diffusion.kind must be one of {KINDS}, got {kind!r}")


def loss(diffusion: Diffusion, model_fn: ModelFn, x0: Array, known: Array, rng: Array,
         tokens: int) -> tuple[Array, dict[str, Array]]:
  """The per-clip denoising loss with known (conditioning) frames.

  One time per clip is drawn; known frames stay clean (x_t = x0 there), get
  time 0 in the model input and are left out of the average, so the model's
  output on them does not matter. Pure and jittable.

  Args:
    diffusion: the noise process.
    model_fn: model_fn(x_t (B, T, ...), t_frames (B, T)) -> prediction (B, T, ...)
      of the process's target (flow: velocity; ddpm: epsilon or v).
    x0: clean latents (B, T, ...) (e.g. (B, T, H, W, C)).
    known: bool (B, T), True for conditioning frames.
    rng: PRNG key.
    tokens: DiT tokens per clip (a Python int), for the flow's time shift.

  Returns:
    (loss (B,) float32, aux) with loss the mean squared error over the
    elements of the unknown frames of each clip (0 for a clip with no unknown
    frame), and aux {"t": (B,) training times, "x0_mse": (B,) mean squared
    error of the implied x0 prediction over the same elements}.
  """
  batch = x0.shape[0]
  t_rng, noise_rng = jax.random.split(rng)
  t = diffusion.sample_times(t_rng, batch, tokens)  # B
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  t_frames = jnp.where(known, 0.0, t[:, None]).astype(jnp.float32)  # B T
  known_x = expand_to(known, x0)
  x_t = jnp.where(known_x, x0, diffusion.noisy(x0, noise, t_frames))
  pred = model_fn(x_t, t_frames)
  target = diffusion.target(x0, noise, t_frames)
  x0_hat, _ = diffusion.predict_x0_eps(x_t, pred, t_frames)

  unknown = jnp.broadcast_to(~known_x, x0.shape)
  axes = tuple(range(1, x0.ndim))
  count = jnp.maximum(jnp.sum(unknown, axis=axes), 1).astype(jnp.float32)  # B

  def masked_mean(a, b):
    err = jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32))
    return jnp.sum(jnp.where(unknown, err, 0.0), axis=axes) / count  # where: NaN-safe

  per_clip = masked_mean(pred, target)
  return per_clip, {"t": t, "x0_mse": masked_mean(x0_hat, x0)}
