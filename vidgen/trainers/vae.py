"""Stage 1: the causal video VAE as a trainer Task.

Loss per clip, normalised per pixel value, where x' decodes the posterior
sample (plus noise of up to `vae.loss.latent_noise` times the latents' RMS,
see `models.vae.add_latent_noise`):
  recon_weight * |x - x'|  (or squared, `vae.loss.recon`) + l2_weight * (x - x')^2
  + kl_weight * KL(q(z|x) || N(0, I)) summed over latent values / pixel values
  + the generator's hinge GAN loss, scaled by `vae.disc.weight` and, when
    `vae.disc.adaptive`, by |grad_last(recon)| / |grad_last(gan)| (VQGAN), from
    `vae.disc.start_step` on.
The discriminator's parameters live beside the VAE's (`params['disc']`) and
take the hinge loss; one optimiser updates both.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vidgen.eval import metrics as eval_metrics
from vidgen.models import vae as vae_lib
from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import multihost
from vidgen.parallel import rules as rules_lib
from vidgen.trainers import loop


def to_float(video: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return video.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(video: jax.Array) -> jax.Array:
  return jnp.clip(jnp.round((video + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def _get(tree: Any, path: tuple[str, ...]) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def _recon_loss(x, y, loss_cfg):
  diff = (y - x).astype(jnp.float32)
  main = jnp.abs(diff) if loss_cfg.recon == "l1" else jnp.square(diff)
  out = loss_cfg.recon_weight * jnp.mean(main)
  if loss_cfg.l2_weight:
    out = out + loss_cfg.l2_weight * jnp.mean(jnp.square(diff))
  return out


def _disc_logits(disc, params, video):
  return disc.apply({"params": params}, video)


def grads(params, batch, rng, step, *, model: vae_lib.VideoVAE, disc, cfg) -> tuple[Any, dict]:
  """Gradients of the VAE (and discriminator) losses; see the module docstring."""
  x = to_float(batch["video"])
  loss_cfg, disc_cfg = cfg.loss, cfg.disc
  pixels = np.prod(x.shape[1:])

  def vae_losses(vae_params):
    out = model.apply({"params": vae_params}, x, rng, latent_noise=loss_cfg.latent_noise)
    rec = _recon_loss(x, out["recon"], loss_cfg)
    kl = jnp.mean(vae_lib.kl(out["mean"], out["logvar"])) / pixels
    return rec, kl, out["recon"]

  if disc is None:
    def total(vae_params):
      rec, kl, _ = vae_losses(vae_params)
      loss = rec + loss_cfg.kl_weight * kl
      return loss, dict(loss=loss, recon=rec, kl=kl)

    g, metrics = jax.grad(total, has_aux=True)(params["vae"])
    return {"vae": g}, metrics

  on = (step >= disc_cfg.start_step).astype(jnp.float32)

  def both(vae_params):
    rec, kl, recon = vae_losses(vae_params)
    gan = -jnp.mean(_disc_logits(disc, params["disc"], recon))
    return (rec + loss_cfg.kl_weight * kl, gan), (rec, kl, recon)

  # One forward pass, two backward passes: the adaptive weight needs the two
  # gradients apart at the decoder's last layer.
  (rec_total, g_loss), vjp, (rec, kl, recon) = jax.vjp(both, params["vae"], has_aux=True)
  one, zero = jnp.ones([], rec_total.dtype), jnp.zeros([], rec_total.dtype)
  (g_rec,) = vjp((one, zero))
  (g_gan,) = vjp((zero, one))
  if disc_cfg.adaptive:
    last = model.last_layer
    weight = jnp.linalg.norm(_get(g_rec, last)) / (jnp.linalg.norm(_get(g_gan, last)) + 1e-4)
    weight = jnp.clip(weight, 0.0, disc_cfg.max_adaptive_weight)
  else:
    weight = jnp.ones([])
  weight = jax.lax.stop_gradient(weight) * disc_cfg.weight * on
  g_vae = jax.tree.map(lambda a, b: a + weight * b, g_rec, g_gan)

  def disc_loss(disc_params):
    real = _disc_logits(disc, disc_params, x)
    fake = _disc_logits(disc, disc_params, jax.lax.stop_gradient(recon))
    hinge = jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))
    return on * hinge, hinge

  (_, hinge), g_disc = jax.value_and_grad(disc_loss, has_aux=True)(params["disc"])
  loss = rec_total + weight * g_loss
  return {"vae": g_vae, "disc": g_disc}, dict(
      loss=loss, recon=rec, kl=kl, gan=g_loss, gan_weight=weight, disc=hinge)


def reconstruct(params, video_uint8, rng=None, *, model: vae_lib.VideoVAE,
                latent_noise: float = 0.0) -> jax.Array:
  """uint8 clips -> uint8 reconstructions through the posterior mean.

  `latent_noise` > 0 decodes the mean plus Gaussian noise of that fraction of
  its RMS (`vae_lib.perturb_latents`, drawn from `rng`): how the decoder reads
  latents as imprecise as a diffusion model's.
  """
  x = to_float(video_uint8)
  (mean, _), _ = model.apply({"params": params["vae"]}, x, method=model.encode)
  if latent_noise:
    mean = vae_lib.perturb_latents(mean, rng, latent_noise)
  y, _ = model.apply({"params": params["vae"]}, mean, method=model.decode)
  return to_uint8(y)


def evaluate(params, batch, rng, *, model) -> dict:
  """Sums of per-clip PSNR and SSIM (uint8 round trip, posterior mean) and the count."""
  del rng
  video = batch["video"]
  recon = reconstruct(params, video, model=model)
  psnr = eval_metrics.psnr(video, recon)
  ssim = eval_metrics.ssim(video, recon)
  return dict(psnr=jnp.sum(psnr), ssim=jnp.sum(ssim),
              count=jnp.asarray(video.shape[0], jnp.float32))


def reconstructor(config, latent_noise: float = 0.0):
  """(params, uint8 clips[, rng]) -> uint8 reconstructions, for the model `config.vae` describes."""
  return functools.partial(reconstruct, model=vae_lib.vae_from_config(config.vae),
                           latent_noise=latent_noise)


def host_encoder(setup: loop.Setup, model: vae_lib.VideoVAE):
  """(params, this host's uint8 clips) -> this host's (mean, logvar) posteriors as numpy.

  Works on one host or many: every host passes its own rows, the batch is
  sharded over the setup's mesh (params as restored onto it), and each host
  gets its own rows back. Every host must call it the same number of times.
  """
  @jax.jit
  def encode(p, video):
    (mean, logvar), _ = model.apply({"params": p["vae"]}, to_float(video), method=model.encode)
    return mean, logvar

  def run(params, video) -> tuple[np.ndarray, np.ndarray]:
    with mesh_lib.activate(setup.mesh, setup.rules):
      batch = multihost.global_batch({"video": video}, setup.mesh, setup.rules)
      mean, logvar = encode(params, batch["video"])
      return multihost.host_rows(mean), multihost.host_rows(logvar)

  return run


def make_task(config) -> loop.Task:
  cfg = config.vae
  model = vae_lib.vae_from_config(cfg)
  disc = vae_lib.PatchDiscriminator3D(channels=tuple(cfg.disc.channels)) if cfg.disc.enabled else None
  tf = vae_lib.time_factor(model)
  sf = vae_lib.space_factor(model)

  def init(rng):
    r1, r2 = jax.random.split(rng)
    example = jnp.zeros((1, 1 + tf, sf, sf, 3), jnp.float32)
    params = {"vae": model.init(r1, example, r1)["params"]}
    if disc is not None:
      params["disc"] = disc.init(r2, example)["params"]
    return params

  recon_jit = jax.jit(functools.partial(reconstruct, model=model))

  def pictures(params, batch, rng):
    del rng
    video = np.asarray(batch["video"][:4])
    recon = np.asarray(recon_jit(params, video))
    return {"reconstruction": eval_metrics.side_by_side(video, recon)}

  return loop.Task(
      name="vae", rules=rules_lib.VAE, batch_keys=("video",), init=init,
      grads=functools.partial(grads, model=model, disc=disc, cfg=cfg),
      evaluate=functools.partial(evaluate, model=model),
      pictures=pictures)
