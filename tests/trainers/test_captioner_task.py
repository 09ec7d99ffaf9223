"""The captioner end to end on the smoke config: train, resume, evaluate; overfit one batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import meta

from vidgen import configlib
from vidgen.trainers import captioner as cap_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/shapes/captioner.py")


def _run(*args, cwd, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  work = tmp_path_factory.mktemp("captioner")
  common = [f"--config.data.data_dir={work / 'data'}", "--config.data.num_workers=0"]
  result = _run("-m", "vidgen.train", f"--config={CONFIG}:smoke", f"--workdir={work / 'w'}",
                *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  return work, common, result


def test_training_writes_pictures_and_resumes(trained):
  work, common, result = trained
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["step"] == 4 and set(summary["eval"]) >= {"exact", "token_acc", "loss"}
  assert "captions_0000004.png" in os.listdir(work / "w" / "pictures")
  result = _run("-m", "vidgen.train", f"--config={CONFIG}:smoke,steps=6",
                f"--workdir={work / 'w'}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "resumed from step 4" in result.stderr


@pytest.mark.parametrize("beams", [1, 2])
def test_evaluate_reports_exact_match_and_attributes(trained, beams):
  work, common, _ = trained
  result = _run("-m", "vidgen.evaluate", f"--config={CONFIG}:smoke", f"--workdir={work / 'w'}",
                "--split=holdout", f"--config.captioner.beams={beams}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["task"] == "captioner" and report["clips"] > 0 and report["beams"] == beams
  for k in ("exact", "grammatical", "color", "shape", "size", "motion"):
    assert 0 <= report[k] <= 1
  assert (work / "w" / "eval" / "captioner_holdout.json").exists()


def test_a_tiny_config_overfits_one_batch_and_decodes_it_exactly():
  config = configlib.load(CONFIG + ":smoke")
  models = cap_task.Models.from_config(config, vocab_size=40)
  params = meta.unbox(cap_task.init_params(models, jax.random.key(0)))
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.integers(0, 256, (4, 8, 32, 32, 3), dtype=np.uint8))
  tokens = np.zeros((4, models.max_len), np.int32)
  for i, length in enumerate((3, 5, 4, 6)):
    tokens[i, :length] = rng.integers(3, 40, length)
    tokens[i, length] = 2  # EOS
  batch = dict(video=video, tokens=jnp.asarray(tokens), token_mask=jnp.asarray(tokens != 0))
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    g, metrics = cap_task.grads(params, batch, None, 0, models=models)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, metrics

  for _ in range(200):
    params, opt, metrics = step(params, opt)
  assert float(metrics["loss"]) < 0.05 and float(metrics["teacher_exact"]) == 1.0
  sums = jax.jit(lambda p: cap_task.evaluate(p, batch, None, models=models))(params)
  assert float(sums["exact"]) == 4.0 and float(sums["count"]) == 4.0


def test_recaption_writes_a_captions_jsonl_resumes_and_reports_unreadable_files(trained):
  work, common, _ = trained
  from vidgen.data import moving_shapes as ms  # pylint: disable=g-import-not-at-top
  from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
  folder = work / "raw"
  (folder / "sub").mkdir(parents=True)
  cfg = ms.ShapesConfig(height=48, width=40, frames=10, num_objects=1)
  names = ["a.mp4", "b.webm", "sub/c.mp4", "d.png"]
  for i, name in enumerate(names):
    frames = ms.render(ms.sample_objects(cfg, "test", i), 1 if name.endswith("png") else 10,
                       48, 40)
    video_io.write_video(folder / name, frames, 8)
  (folder / "broken.mp4").write_bytes(b"not a video")
  (folder / "empty.mp4").write_bytes(b"")
  (folder / "notes.txt").write_text("ignored")
  out = work / "captions.jsonl"
  args = ["-m", "vidgen.recaption", f"--config={CONFIG}:smoke", f"--workdir={work / 'w'}",
          f"--videos={folder}", f"--out={out}", "--batch=2", *common]
  result = _run(*args, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert [r["file"] for r in lines] == sorted(names + ["broken.mp4", "empty.mp4"])
  by_file = {r["file"]: r for r in lines}
  for name in names:
    assert isinstance(by_file[name]["caption"], str) and "error" not in by_file[name]
  for name in ("broken.mp4", "empty.mp4"):
    assert "caption" not in by_file[name] and by_file[name]["error"]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["captioned"] == 4 and summary["errors"] == 2 and summary["clips_per_s"] > 0
  # Resume: only files missing from the output are captioned again.
  out.write_text("\n".join(json.dumps(by_file[n]) for n in ("a.mp4", "broken.mp4")) + "\n")
  result = _run(*args, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["already_done"] == 2 and summary["captioned"] == 3 and summary["errors"] == 1
  again = {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
  assert again == by_file  # deterministic captions, same lines
  assert not list(work.glob("captions.jsonl.*"))


def test_evaluate_scores_generated_videos_and_writes_a_page(trained):
  work, common, _ = trained
  from vidgen.data import moving_shapes as ms  # pylint: disable=g-import-not-at-top
  from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
  samples = work / "generated"
  samples.mkdir()
  cfg = ms.ShapesConfig(height=32, width=32, frames=9, num_objects=1)
  with open(samples / "samples.jsonl", "w") as f:
    for i in range(3):
      objects = ms.sample_objects(cfg, "test", i)
      video_io.write_video(samples / f"{i:04d}.mp4", ms.render(objects, 9, 32, 32), 8)
      f.write(json.dumps({"file": f"{i:04d}.mp4", "prompt": ms.caption(objects)}) + "\n")
  result = _run("-m", "vidgen.evaluate", f"--config={CONFIG}:smoke", f"--workdir={work / 'w'}",
                f"--samples={samples}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["videos"] == 3
  assert set(report["alignment"]) == {"color", "shape", "size", "motion", "exact", "grammatical"}
  assert report["pixels"]["color"] == 1.0 and report["consistent_pixels"] == 1.0  # real renders
  assert 0 <= report["consistent"] <= 1
  page = samples / "evaluation" / "report.md"
  assert page.exists() and "worst_00.png" in page.read_text()
  assert len((samples / "evaluation" / "videos.jsonl").read_text().splitlines()) == 3


def test_latent_input_reads_a_frozen_vae(tmp_path):
  common = [f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.num_workers=0"]
  vae_config = os.path.join(ROOT, "configs/shapes/vae.py")
  result = _run("-m", "vidgen.train", f"--config={vae_config}:smoke,steps=2",
                f"--workdir={tmp_path / 'vae'}", *common, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-4000:]
  spec = f"--config={CONFIG}:smoke,input=latents,vae={tmp_path / 'vae'}"
  result = _run("-m", "vidgen.train", spec, f"--workdir={tmp_path / 'w'}", *common, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "captioner: VAE of step 2" in result.stderr
  result = _run("-m", "vidgen.evaluate", spec, f"--workdir={tmp_path / 'w'}", "--split=test",
                *common, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-4000:]
  assert json.loads(result.stdout.strip().splitlines()[-1])["clips"] > 0
  # A latent captioner without a VAE to read fails before any work.
  result = _run("-m", "vidgen.train", f"--config={CONFIG}:smoke,input=latents",
                f"--workdir={tmp_path / 'w2'}", *common, cwd=tmp_path)
  assert result.returncode != 0 and "needs a trained VAE" in result.stderr


def test_the_value_channel_is_the_colour_blind_max_over_rgb():
  config = configlib.load(CONFIG + ":smoke")
  config.unlock()
  config.captioner.stem = "patch"
  config.captioner.value_channel = True
  config.lock()
  models = cap_task.Models.from_config(config, vocab_size=40)
  video = np.zeros((1, 2, 2, 2, 3), np.uint8)
  video[0, 0, 0, 0] = (255, 0, 0)  # red
  video[0, 0, 0, 1] = (0, 255, 255)  # cyan
  x = np.asarray(models.inputs({}, jnp.asarray(video)))
  assert x.shape == (1, 2, 2, 2, 4)
  np.testing.assert_allclose(x[0, 0, 0, :, 3], [1.0, 1.0])  # same value whatever the colour
  np.testing.assert_allclose(x[0, 1, 1, 1, 3], -1.0)  # black
  params = meta.unbox(cap_task.init_params(models, jax.random.key(0)))
  assert params["captioner"]["patch_embed"]["kernel"].shape[0] == 2 * 8 * 8 * 4


def test_the_luma_chroma_stem_needs_rgb_pixels():
  config = configlib.load(CONFIG + ":smoke", {"captioner.stem": "luma_chroma",
                                             "captioner.value_channel": False})
  assert cap_task.Models.from_config(config, vocab_size=40).captioner.stem == "luma_chroma"
  for bad in ({"captioner.value_channel": True}, {"captioner.input": "latents"}):
    with pytest.raises(configlib.ConfigError, match="luma_chroma.*RGB pixels"):
      configlib.load(CONFIG + ":smoke", {"captioner.stem": "luma_chroma", **bad})
  with pytest.raises(configlib.ConfigError, match="'captioner.stem' = 'rgb'"):
    configlib.load(CONFIG + ":smoke", {"captioner.stem": "rgb"})
