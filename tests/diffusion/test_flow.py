import functools

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vidgen import configlib
from vidgen.diffusion import flow

DDPMS = [("linear", "epsilon"), ("linear", "v"), ("cosine", "epsilon"), ("cosine", "v")]
DIFFUSERS_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PROCESSES = [flow.RectifiedFlow()] + [flow.DDPM(schedule=s, prediction=p) for s, p in DDPMS]


def _data(shape=(2, 3, 4, 4, 2), seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return jax.random.normal(k1, shape), jax.random.normal(k2, shape)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_alphas_cumprod_match_diffusers(schedule):
  ours = flow.DDPM(schedule=schedule)
  theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                   beta_schedule=DIFFUSERS_SCHEDULE[schedule])
  # diffusers computes betas and their product in float32; ours in float64.
  np.testing.assert_allclose(ours.alphas_cumprod64, theirs.alphas_cumprod.double().numpy(),
                             rtol=1e-5, atol=1e-6)
  assert ours.alphas_cumprod.dtype == jnp.float32
  np.testing.assert_allclose(ours.alphas_cumprod, ours.alphas_cumprod64, rtol=1e-6)


@pytest.mark.parametrize("schedule,prediction", DDPMS)
def test_ddpm_noisy_and_target_match_diffusers(schedule, prediction):
  ours = flow.DDPM(schedule=schedule, prediction=prediction)
  theirs = diffusers.DDPMScheduler(beta_schedule=DIFFUSERS_SCHEDULE[schedule])
  x0, noise = _data()
  k = np.array([0, 517])
  t = jnp.asarray((k + 1) / 1000, jnp.float32)
  tx0, tnoise = (torch.from_numpy(np.array(a)) for a in (x0, noise))
  np.testing.assert_allclose(ours.noisy(x0, noise, t),
                             theirs.add_noise(tx0, tnoise, torch.from_numpy(k)).numpy(),
                             rtol=1e-5, atol=1e-5)
  want = (tnoise if prediction == "epsilon"
          else theirs.get_velocity(tx0, tnoise, torch.from_numpy(k)))
  np.testing.assert_allclose(ours.target(x0, noise, t), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("diffusion", PROCESSES, ids=lambda d: repr(d)[:40])
@pytest.mark.parametrize("per_frame", [False, True])
def test_noisy_target_predict_round_trip(diffusion, per_frame):
  x0, noise = _data()
  if per_frame:  # (B, T), including clean frames; away from t = 1 where 1/alpha explodes
    t = jnp.array([[0.0, 0.3, 0.9], [0.05, 0.5, 0.0]])
  else:
    t = jnp.array([0.2, 0.8])
  x_t = diffusion.noisy(x0, noise, t)
  x0_hat, eps_hat = diffusion.predict_x0_eps(x_t, diffusion.target(x0, noise, t), t)
  np.testing.assert_allclose(x0_hat, x0, atol=1e-4)
  if per_frame:  # the noise is unrecoverable where t = 0; compare elsewhere
    live = np.asarray(t > 0)
    np.testing.assert_allclose(np.asarray(eps_hat)[live], np.asarray(noise)[live], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(x_t)[~live], np.asarray(x0)[~live])
  else:
    np.testing.assert_allclose(eps_hat, noise, atol=1e-4)


def test_flow_noisy_at_the_ends():
  x0, noise = _data()
  f = flow.RectifiedFlow()
  np.testing.assert_array_equal(f.noisy(x0, noise, jnp.zeros(2)), x0)
  np.testing.assert_array_equal(f.noisy(x0, noise, jnp.ones(2)), noise)
  np.testing.assert_array_equal(f.target(x0, noise, jnp.ones(2)), noise - x0)


def test_flow_sample_times_range_and_shift():
  rng = jax.random.key(1)
  base = flow.RectifiedFlow(base_tokens=256)
  t1 = base.sample_times(rng, 4096, 256)  # shift 1: plain logit-normal
  assert t1.dtype == jnp.float32 and t1.shape == (4096,)
  assert 0 < float(t1.min()) and float(t1.max()) < 1
  assert abs(float(jnp.median(t1)) - 0.5) < 0.03
  np.testing.assert_allclose(t1, jax.nn.sigmoid(jax.random.normal(rng, (4096,))), rtol=1e-6)
  t4 = base.sample_times(rng, 4096, 256 * 9)  # shift 3
  assert base.shift_for(256 * 9) == pytest.approx(3.0)
  assert base.shift_for(64) == 1.0  # fewer tokens than the base: no shift towards clean
  assert bool(jnp.all(t4 >= t1)) and float(jnp.mean(t4)) > float(jnp.mean(t1)) + 0.1
  t_small = base.sample_times(rng, 4096, 64)  # shift 1/2: towards data
  assert bool(jnp.all(t_small <= t1))
  np.testing.assert_allclose(t4, 3 * t1 / (1 + 2 * t1), rtol=1e-5)
  fixed = flow.RectifiedFlow(shift=3.0)
  np.testing.assert_array_equal(fixed.sample_times(rng, 64, 1), fixed.sample_times(rng, 64, 10**6))


def test_flow_uniform_share_of_training_times():
  """flow.uniform: that share of times is U(0, 1), unshifted; the rest the shifted logit-normal."""
  rng = jax.random.key(2)
  shifted = np.asarray(flow.RectifiedFlow(shift=6.0).sample_times(rng, 20000, 80))
  mixed = np.asarray(flow.RectifiedFlow(shift=6.0, uniform=0.5).sample_times(rng, 20000, 80))
  assert mixed.dtype == np.float32 and 0 <= mixed.min() and mixed.max() < 1
  assert (shifted < 0.2).mean() < 0.005  # shift 6 all but skips low noise
  assert (mixed < 0.2).mean() == pytest.approx(0.5 * 0.2, abs=0.015)
  assert (mixed > 0.9).mean() == pytest.approx(0.5 * 0.1 + 0.5 * (shifted > 0.9).mean(), abs=0.02)
  every = np.asarray(flow.RectifiedFlow(shift=6.0, uniform=1.0).sample_times(rng, 20000, 80))
  assert abs(np.median(every) - 0.5) < 0.02 and abs(every.mean() - 0.5) < 0.01
  with pytest.raises(ValueError, match="uniform"):
    flow.RectifiedFlow(uniform=1.5)


def test_ddpm_sample_times_on_the_grid():
  d = flow.DDPM(steps=10)
  t = d.sample_times(jax.random.key(0), 2000, 123)
  k = np.asarray(t) * 10
  np.testing.assert_allclose(k, np.round(k), atol=1e-5)
  assert set(np.round(k).astype(int)) == set(range(1, 11))


def test_ddpm_time_zero_is_clean():
  x0, noise = _data()
  for prediction in ("epsilon", "v"):
    d = flow.DDPM(prediction=prediction)
    np.testing.assert_array_equal(d.noisy(x0, noise, jnp.zeros(2)), x0)
    x0_hat, _ = d.predict_x0_eps(x0, noise, jnp.zeros(2))
    np.testing.assert_array_equal(x0_hat, x0)


def _recording_model(seen):
  def model_fn(x_t, t_frames):
    seen.append((x_t, t_frames))
    return 0.5 * x_t + t_frames[..., None, None, None]
  return model_fn


@pytest.mark.parametrize("diffusion", PROCESSES[:3], ids=lambda d: repr(d)[:40])
def test_loss_ignores_known_frames(diffusion):
  x0, _ = _data()
  known = jnp.array([[True, False, False], [True, False, True]])
  rng = jax.random.key(3)
  seen = []
  base, aux = flow.loss(diffusion, _recording_model(seen), x0, known, rng, tokens=48)
  x_t, t_frames = seen[0]
  assert base.shape == (2,) and aux["t"].shape == (2,) and aux["x0_mse"].shape == (2,)
  np.testing.assert_array_equal(np.asarray(t_frames)[np.asarray(known)], 0.0)
  np.testing.assert_array_equal(np.asarray(t_frames)[~np.asarray(known)],
                                np.repeat(np.asarray(aux["t"]), [2, 1]))
  k = np.asarray(known)
  np.testing.assert_array_equal(np.asarray(x_t)[k], np.asarray(x0)[k])

  def wild(x_t, t_frames):  # any output, even inf/NaN, on known frames is ignored
    out = 0.5 * x_t + t_frames[..., None, None, None]
    return jnp.where(known[..., None, None, None], jnp.nan, out)

  changed, _ = flow.loss(diffusion, wild, x0, known, rng, tokens=48)
  np.testing.assert_array_equal(changed, base)


def test_loss_value_and_all_known_clip():
  x0, _ = _data()
  f = flow.RectifiedFlow()
  known = jnp.array([[True, True, True], [False, True, False]])
  rng = jax.random.key(4)
  zero_model = lambda x_t, t: jnp.zeros_like(x_t)
  value, _ = jax.jit(functools.partial(flow.loss, f, zero_model, tokens=48))(x0, known, rng)
  assert np.isfinite(np.asarray(value)).all()
  assert float(value[0]) == 0.0
  noise = jax.random.normal(jax.random.split(rng)[1], x0.shape)  # the loss's own noise draw
  target = np.asarray(noise - x0)[1][[0, 2]]
  np.testing.assert_allclose(value[1], np.mean(target ** 2), rtol=1e-5)


def test_from_config():
  cfg = configlib.diffusion_config()
  assert flow.from_config(cfg) == flow.RectifiedFlow(shift=0.0, base_tokens=256)
  cfg.kind = "ddpm"
  d = flow.from_config(cfg)
  assert isinstance(d, flow.DDPM) and d.schedule == "cosine" and d.prediction == "v"
  assert hash(d) == hash(flow.DDPM())  # usable as a static jit argument
  cfg.kind = "edm"
  with pytest.raises(ValueError, match="flow"):
    flow.from_config(cfg)
  with pytest.raises(ValueError, match="epsilon"):
    flow.DDPM(prediction="x0")
