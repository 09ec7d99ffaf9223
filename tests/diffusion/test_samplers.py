"""Sampler tests, led by parity with diffusers' schedulers on one shared model function.

The model is written once against an array namespace (numpy for the torch
side, jax.numpy for ours): a fixed random linear map over channels with a
time-dependent gain plus a time-dependent bias. diffusers calls it with its
own timestep units (flow: sigma * 1000; ddpm: the integer step k), which the
torch side converts to our times (sigma; (k + 1) / 1000).
"""

import functools

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vidgen.diffusion import flow, samplers

pytestmark = pytest.mark.filterwarnings(  # inside diffusers' DPMSolverMultistepScheduler
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

C = 4
_RNG = np.random.default_rng(0)
W = _RNG.normal(size=(C, C)) * 0.4
BIAS = _RNG.normal(size=(C,))
NOISE = _RNG.normal(size=(2, 3, 4, 4, C))  # B T H W C
DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
DIFFUSERS_PREDICTION = {"epsilon": "epsilon", "v": "v_prediction"}
DDPMS = [("linear", "epsilon"), ("linear", "v"), ("cosine", "epsilon"), ("cosine", "v")]


def shared_model(x, t, xp):
  """x (B, T, H, W, C), t (B, T) -> (B, T, H, W, C)."""
  t = t[..., None, None, None]
  w, b = xp.asarray(W, dtype=x.dtype), xp.asarray(BIAS, dtype=x.dtype)
  return (x @ w) * (1 + 0.5 * t) + xp.cos(3 * t) * b


def jax_model(x_t, t_frames):
  return shared_model(x_t, t_frames, jnp)


def torch_model(x, t):
  """diffusers side: numpy float64 through the same function."""
  xn = x.double().numpy()
  return torch.from_numpy(shared_model(xn, np.full(xn.shape[:2], t), np))


def run_diffusers(scheduler, to_time):
  x = torch.from_numpy(NOISE.copy())
  for k in scheduler.timesteps:
    x = scheduler.step(torch_model(x, to_time(k)), k, x).prev_sample
  return x.double().numpy()


def run_ours(diffusion, sampler, steps, shift=0.0, dtype=jnp.float32):
  return np.asarray(samplers.sample(diffusion, jax_model, jnp.asarray(NOISE, dtype),
                                    sampler=sampler, steps=steps, shift=shift))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_matches_diffusers(shift):
  steps = 12
  grid = samplers.time_grid(flow.RectifiedFlow(), steps, shift)
  sched = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
  sched.set_timesteps(sigmas=list(np.linspace(1, 0, steps + 1)[:-1]))  # shifted inside
  np.testing.assert_allclose(sched.sigmas.numpy(), grid, atol=1e-7)
  want = run_diffusers(sched, lambda k: float(k) / 1000)
  np.testing.assert_allclose(run_ours(flow.RectifiedFlow(), "euler", steps, shift), want,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_heun_matches_diffusers(shift):
  steps = 8
  grid = samplers.time_grid(flow.RectifiedFlow(), steps, shift)
  sched = diffusers.FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=shift)
  sched.set_timesteps(steps)
  # Its set_timesteps takes no sigmas: lay our grid out as it lays out its own
  # (each inner sigma twice, timesteps = sigma * 1000 likewise).
  sigmas = torch.tensor(grid, dtype=torch.float32)
  sched.sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
  timesteps = sigmas[:-1] * 1000
  sched.timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
  assert len(sched.timesteps) == 2 * steps - 1
  want = run_diffusers(sched, lambda k: float(k) / 1000)
  np.testing.assert_allclose(run_ours(flow.RectifiedFlow(), "heun", steps, shift), want,
                             rtol=1e-5, atol=1e-5)


def _ddpm_scheduler(cls, schedule, prediction, steps, **kwargs):
  sched = cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
              beta_schedule=DIFFUSERS_SCHEDULE[schedule],
              prediction_type=DIFFUSERS_PREDICTION[prediction], timestep_spacing="trailing",
              **kwargs)
  sched.set_timesteps(steps)
  return sched


def _check_ddpm_parity(cls, sampler, schedule, prediction, steps, **kwargs):
  diffusion = flow.DDPM(schedule=schedule, prediction=prediction)
  sched = _ddpm_scheduler(cls, schedule, prediction, steps, **kwargs)
  grid = samplers.time_grid(diffusion, steps)
  np.testing.assert_array_equal(np.round(grid[:-1] * 1000) - 1, sched.timesteps.numpy())
  to_time = lambda k: (int(k) + 1) / 1000
  if prediction == "v":  # well conditioned: float32 on our side
    want = run_diffusers(sched, to_time)
    np.testing.assert_allclose(run_ours(diffusion, sampler, steps), want, rtol=1e-5, atol=1e-5)
    return
  # Epsilon prediction divides by alpha ~ 5e-5 at t = 1 (cosine; 6e-3 linear):
  # float32 rounding of abar, sigmas and samples is amplified past 1e-5 on both
  # sides, and this model's samples grow to ~1e5. Compare in float64: ours under
  # jax.enable_x64, diffusers with our float64 tables (its own are float32; they
  # match to 1e-6, test_flow). DPMSolverMultistepScheduler.step still casts the
  # sample to float32 (1e-3 at 1e5), so errors are measured against the output
  # scale: 1e-6 of it (measured: 1e-7; 1e-13 without that cast).
  abar = torch.from_numpy(diffusion.alphas_cumprod64)
  sched.alphas_cumprod = abar
  if isinstance(sched, diffusers.DPMSolverMultistepScheduler):
    a = abar[sched.timesteps]
    sched.sigmas = torch.cat([((1 - a) / a) ** 0.5, torch.zeros(1, dtype=a.dtype)])
  want = run_diffusers(sched, to_time)
  with jax.enable_x64(True):  # jax 0.10: the former jax.experimental.enable_x64
    ours = run_ours(diffusion, sampler, steps, dtype=jnp.float64)
  assert ours.dtype == np.float64
  np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("schedule,prediction", DDPMS)
def test_ddim_matches_diffusers(schedule, prediction):
  _check_ddpm_parity(diffusers.DDIMScheduler, "ddim", schedule, prediction, steps=10,
                     clip_sample=False, set_alpha_to_one=True)


@pytest.mark.parametrize("schedule,prediction", DDPMS)
def test_dpmpp_2m_matches_diffusers(schedule, prediction):
  _check_ddpm_parity(diffusers.DPMSolverMultistepScheduler, "dpm++2m", schedule, prediction,
                     steps=10, algorithm_type="dpmsolver++", solver_order=2,
                     solver_type="midpoint", final_sigmas_type="zero", lower_order_final=True)


@pytest.mark.parametrize("steps", [1, 7, 25, 1000])
def test_ddpm_grid_is_diffusers_trailing(steps):
  grid = samplers.time_grid(flow.DDPM(), steps)
  assert grid[0] == 1 and grid[-1] == 0 and len(grid) == steps + 1
  assert (np.diff(grid) < 0).all()
  sched = _ddpm_scheduler(diffusers.DPMSolverMultistepScheduler, "cosine", "v", steps)
  np.testing.assert_array_equal(np.round(grid[:-1] * 1000) - 1, sched.timesteps.numpy())


def test_flow_grid():
  grid = samplers.time_grid(flow.RectifiedFlow(), 4, 0.0)
  np.testing.assert_allclose(grid, [1, 0.75, 0.5, 0.25, 0])
  shifted = samplers.time_grid(flow.RectifiedFlow(), 4, 3.0)
  assert shifted[0] == 1 and shifted[-1] == 0 and (shifted[1:-1] > grid[1:-1]).all()
  with pytest.raises(ValueError, match="flow"):
    samplers.time_grid(flow.DDPM(), 4, 3.0)


def test_wrong_sampler_names_valid_ones():
  with pytest.raises(ValueError, match="euler.*heun"):
    samplers.sample(flow.RectifiedFlow(), jax_model, jnp.zeros((1, 2, 2, 2, C)), sampler="ddim",
                    steps=2)
  with pytest.raises(ValueError, match="ddim.*dpm\\+\\+2m"):
    samplers.sample(flow.DDPM(), jax_model, jnp.zeros((1, 2, 2, 2, C)), sampler="euler", steps=2)


ALL = [(flow.RectifiedFlow(), "euler"), (flow.RectifiedFlow(), "heun"),
       (flow.DDPM(prediction="epsilon"), "ddim"), (flow.DDPM(prediction="v"), "ddim"),
       (flow.DDPM(prediction="epsilon"), "dpm++2m"), (flow.DDPM(prediction="v"), "dpm++2m")]
IDS = [f"{d.kind}-{getattr(d, 'prediction', 'velocity')}-{s}" for d, s in ALL]


def _point_mass_model(diffusion, center):
  """The exact model when all data is the single point `center`."""
  def model_fn(x_t, t_frames):
    t = flow.expand_to(t_frames, x_t)
    if diffusion.kind == "flow":
      return (x_t - center) / jnp.maximum(t, 1e-6)  # velocity (x_t - x0) / t
    abar = diffusion.abar(t_frames, x_t)
    alpha, sigma = jnp.sqrt(abar), jnp.sqrt(1 - abar)
    eps = (x_t - alpha * center) / jnp.maximum(sigma, 1e-6)
    return eps if diffusion.prediction == "epsilon" else alpha * eps - sigma * center
  return model_fn


@pytest.mark.parametrize("diffusion,sampler", ALL, ids=IDS)
def test_known_frames_held_and_point_mass_recovered(diffusion, sampler):
  noise = jnp.asarray(NOISE, jnp.float32)
  center = jnp.asarray(np.linspace(-1, 1, C), jnp.float32)
  known = jnp.array([[True, False, False], [False, True, True]])
  known_x0 = jnp.asarray(_RNG.normal(size=NOISE.shape), jnp.float32)
  seen_times = []
  model = _point_mass_model(diffusion, center)

  def model_fn(x_t, t_frames):
    jax.debug.callback(lambda t: seen_times.append(np.asarray(t)), t_frames)
    return model(x_t, t_frames)

  run = jax.jit(functools.partial(samplers.sample, diffusion, model_fn, sampler=sampler, steps=5))
  out = np.asarray(run(noise, known_x0=known_x0, known=known))
  k = np.asarray(known)
  np.testing.assert_array_equal(out[k], np.asarray(known_x0)[k])  # exactly
  np.testing.assert_allclose(out[~k], np.broadcast_to(center, out[~k].shape), atol=1e-4)
  assert len(seen_times) == (9 if sampler == "heun" else 5)
  for t in seen_times:
    np.testing.assert_array_equal(t[k], 0.0)
    assert (t[~k] > 0).all()
  again = np.asarray(run(noise, known_x0=known_x0, known=known))
  np.testing.assert_array_equal(out, again)  # deterministic given the noise


@pytest.mark.parametrize("diffusion,sampler", ALL[:3], ids=IDS[:3])
def test_eager_equals_jit(diffusion, sampler):
  noise = jnp.asarray(NOISE, jnp.float32)
  eager = samplers.sample(diffusion, jax_model, noise, sampler=sampler, steps=4)
  jitted = jax.jit(functools.partial(samplers.sample, diffusion, jax_model, sampler=sampler,
                                     steps=4))(noise)
  np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-6)
  assert eager.dtype == jnp.float32 and eager.shape == noise.shape


def test_guidance_combinations():
  cond, uncond, none = jnp.array([3.0]), jnp.array([1.0]), jnp.array([-1.0])
  assert float(samplers.cfg_combine(cond, uncond, 1.0)[0]) == 3.0
  assert float(samplers.cfg_combine(cond, uncond, 0.0)[0]) == 1.0
  assert float(samplers.cfg_combine(cond, uncond, 4.0)[0]) == 9.0
  assert float(samplers.cfg_combine3(cond, uncond, none, 1.0, 1.0)[0]) == 3.0
  assert float(samplers.cfg_combine3(cond, uncond, none, 0.0, 1.0)[0]) == 1.0
  assert float(samplers.cfg_combine3(cond, uncond, none, 0.0, 0.0)[0]) == -1.0
  assert float(samplers.cfg_combine3(cond, uncond, none, 2.0, 1.5)[0]) == -1 + 3 + 4

  calls = []

  def model_fn(x_t, t_frames, cond):
    calls.append(cond)
    return x_t + (1.0 if cond else 0.0)

  x, t = jnp.zeros((1, 2, 1, 1, 1)), jnp.zeros((1, 2))
  np.testing.assert_array_equal(samplers.guided(model_fn, 4.0)(x, t), 4.0)
  assert calls == [True, False]
  np.testing.assert_array_equal(samplers.guided(model_fn, 1.0)(x, t), 1.0)
  assert calls == [True, False, True]
