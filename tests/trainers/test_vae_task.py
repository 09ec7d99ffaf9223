"""Stage 1 end to end on the smoke config: train, evaluate, cache latents; the GAN path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from vidgen import configlib
from vidgen.data import latents as latents_lib
from vidgen.models import vae as vae_lib
from vidgen.trainers import vae as vae_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/shapes/vae.py")


def _run(module, *args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The smoke VAE (discriminator on at step 2, latent noise 0.3) trained for 4 steps."""
  work = tmp_path_factory.mktemp("vae")
  common = [f"--config.data.data_dir={work / 'data'}", "--config.data.num_workers=0"]
  result = _run("vidgen.train", f"--config={CONFIG}:smoke,disc,noise=0.3",
                f"--workdir={work / 'w'}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  return work, common, result


def test_train_writes_checkpoints_pictures_metrics_and_a_result(trained):
  work, _, result = trained
  w = work / "w"
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["step"] == 4 and not summary["preempted"] and summary["skipped"] == 0
  assert {"psnr", "ssim", "count"} <= set(summary["eval"])
  assert sorted(os.listdir(w / "checkpoints")) == ["2", "4"]
  assert any(p.startswith("reconstruction_") for p in os.listdir(w / "pictures"))
  lines = [json.loads(l) for l in open(w / "metrics.jsonl")]
  last = [l for l in lines if l["split"] == "train"][-1]
  assert last["gan_weight"] > 0  # the discriminator came in at step 2
  assert {"recon", "kl", "disc", "steps_per_s", "clips_per_s"} <= set(last)
  assert "ETA" in result.stderr  # the progress line


def test_evaluate_reports_psnr_ssim_and_attributes_with_a_picture(trained):
  work, common, _ = trained
  result = _run("vidgen.evaluate", f"--config={CONFIG}:smoke", f"--workdir={work / 'w'}",
                *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["step"] == 4 and report["clips"] > 0 and report["split"] == "test"
  for k in ("psnr", "ssim", "keeps_color", "keeps_shape", "keeps_size", "keeps_motion",
            "keeps_all"):
    assert np.isfinite(report[k]), k
  assert os.path.exists(report["picture"])
  assert json.load(open(work / "w" / "eval" / "vae_test.json"))["psnr"] == report["psnr"]
  # Decoding imprecise latents: its own report, a lower PSNR.
  result = _run("vidgen.evaluate", f"--config={CONFIG}:smoke", f"--workdir={work / 'w'}",
                "--latent_noise=2", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  noisy = json.loads(result.stdout.strip().splitlines()[-1])
  assert noisy["latent_noise"] == 2 and noisy["clips"] == report["clips"]
  assert noisy["psnr"] < report["psnr"]
  assert json.load(open(work / "w" / "eval" / "vae_test_noise2.json"))["psnr"] == noisy["psnr"]


def test_latents_mode_writes_readable_records_with_metadata(trained):
  work, common, _ = trained
  out = work / "latents"
  result = _run("vidgen.prepare", f"--config={CONFIG}:smoke", "--mode=latents",
                f"--vae={work / 'w'}", "--split=train", "--num=12", f"--out={out}",
                *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  records = latents_lib.LatentRecords(str(out))
  assert len(records) == 12
  meta = records.metadata
  assert meta["vae_step"] == 4 and meta["time_factor"] == 4 and meta["space_factor"] == 8
  assert meta["records"] == [12] and meta["latent_std"] > 0
  config = configlib.load(f"{CONFIG}:smoke")
  for i in range(len(records)):
    r = records[i]
    want = vae_lib.latent_shape(config.vae, (int(r["frames"]), int(r["height"]), int(r["width"])))
    assert r["mean"].shape == r["logvar"].shape == want
    assert r["tokens"].shape == (config.text.max_len,) and "gt_color" in r


def test_evaluate_and_latents_without_a_trained_model_fail_clearly(tmp_path):
  common = [f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.num_workers=0"]
  result = _run("vidgen.evaluate", f"--config={CONFIG}:smoke", f"--workdir={tmp_path / 'empty'}",
                *common, cwd=tmp_path)
  assert result.returncode != 0 and "no checkpoint in" in result.stderr
  result = _run("vidgen.prepare", f"--config={CONFIG}:smoke", "--mode=latents", *common,
                cwd=tmp_path)
  assert result.returncode != 0 and "--mode=latents needs --vae=DIR" in result.stderr


def test_a_gan_step_only_counts_once_the_discriminator_starts():
  config = configlib.load(f"{CONFIG}:smoke,disc")
  task = vae_task.make_task(config)
  params = jax.jit(task.init)(jax.random.key(0, impl="rbg"))
  params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                        is_leaf=lambda x: hasattr(x, "value"))
  batch = {"video": np.random.default_rng(0).integers(0, 255, (2, 5, 32, 32, 3), np.uint8)}
  grads = jax.jit(task.grads)
  g0, m0 = grads(params, batch, jax.random.key(1), np.int32(0))
  g2, m2 = grads(params, batch, jax.random.key(1), np.int32(2))
  assert float(m0["gan_weight"]) == 0.0 and float(m2["gan_weight"]) > 0.0
  # Before the start step the discriminator gets no gradient.
  assert all(float(np.abs(x).max()) == 0.0 for x in jax.tree.leaves(g0["disc"]))
  assert any(float(np.abs(x).max()) > 0.0 for x in jax.tree.leaves(g2["disc"]))
  assert np.isfinite(float(m2["loss"]))
