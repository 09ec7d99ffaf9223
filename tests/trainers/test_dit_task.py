"""Stage 2 end to end on the smoke configs: cached latents, training, resume, sharding, overfit."""

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
from flax import linen as nn

from vidgen import configlib
from vidgen.diffusion import flow
from vidgen.models import dit as dit_lib
from vidgen.models import vae as vae_lib
from vidgen.text import encoder as encoder_lib
from vidgen.trainers import dit as dit_task
from vidgen.trainers import optim as optim_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VAE_CONFIG = os.path.join(ROOT, "configs/shapes/vae.py")
DIT_CONFIG = os.path.join(ROOT, "configs/shapes/dit.py")


def _run(*args, cwd, env=None, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _two_hosts(*args, cwd):
  """`python *args` as 2 local processes of 2 simulated devices each (launch/local.sh)."""
  result = subprocess.run(
      ["bash", os.path.join(ROOT, "launch", "local.sh"), "2", "--devices_per_process", "2",
       sys.executable, *args], cwd=cwd, env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
  return result


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
  """A smoke VAE (2 steps) and cached latents of its train and test splits."""
  work = tmp_path_factory.mktemp("stage2")
  common = [f"--config.data.data_dir={work / 'data'}", "--config.data.num_workers=0"]
  result = _run("-m", "vidgen.train", f"--config={VAE_CONFIG}:smoke,steps=2",
                f"--workdir={work / 'vae'}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  for split, num in (("train", 24), ("test", 8)):
    result = _run("-m", "vidgen.prepare", f"--config={DIT_CONFIG}:smoke,vae={work / 'vae'}",
                  "--mode=latents", f"--split={split}", f"--num={num}",
                  f"--out={work / 'latents' / split}", *common, cwd=work)
    assert result.returncode == 0, result.stderr[-4000:]
  return work, common


@pytest.fixture(scope="module")
def trained(stage1):
  """The smoke DiT trained 4 steps on the cached latents."""
  work, common = stage1
  spec = f"--config={DIT_CONFIG}:smoke,vae={work / 'vae'},latents={work / 'latents'}"
  result = _run("-m", "vidgen.train", spec + ",steps=4", f"--workdir={work / 'dit'}", *common,
                cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  return work, common, spec, result


def test_train_on_cached_latents_writes_samples_and_resumes(trained):
  work, common, spec, result = trained
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["step"] == 4 and np.isfinite(summary["eval"]["loss"])
  pictures = sorted(os.listdir(work / "dit" / "pictures"))
  assert "samples_0000004.png" in pictures and "sample_video_0000004.mp4" in pictures
  # Two buckets of different shape both reached the train step.
  assert result.stderr.count("compiling the train step") == 2
  result = _run("-m", "vidgen.train", spec + ",steps=6", f"--workdir={work / 'dit'}", *common,
                cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "resumed from step 4" in result.stderr
  assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 6


def test_latent_normalization_per_channel_or_scalar_from_metadata_or_measured(stage1):
  from vidgen.trainers import loop  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import vae as vae_task  # pylint: disable=g-import-not-at-top
  work, _ = stage1
  meta = json.loads((work / "latents" / "train" / "metadata.json").read_text())
  c = len(meta["channel_std"])

  def norm(mode, latents):
    config = configlib.load(f"{DIT_CONFIG}:smoke,vae={work / 'vae'},latents={latents}")
    config.unlock()
    config.data.data_dir, config.data.num_workers = str(work / "data"), 0
    config.dit.latent_norm = mode
    config.lock()
    models = dit_task.Models.from_config(config)
    setup, params, _ = loop.restore_for_inference(config, vae_task.make_task(config),
                                                  work / "vae")
    out = {k: np.asarray(v)
           for k, v in dit_task.latent_normalization(config, models, params, setup).items()}
    assert out["shift"].shape == out["scale"].shape == (c,)
    return out

  channel = norm("channel", work / "latents")
  np.testing.assert_allclose(channel["shift"], meta["channel_mean"], rtol=1e-6)
  np.testing.assert_allclose(channel["scale"], 1 / np.asarray(meta["channel_std"]), rtol=1e-6)
  scalar = norm("scalar", work / "latents")
  np.testing.assert_array_equal(scalar["shift"], np.zeros(c))
  np.testing.assert_allclose(scalar["scale"], np.full(c, 1 / meta["latent_std"]), rtol=1e-6)
  # Without cached latents both are measured on encoded training batches: the
  # same population, so close to the metadata's figures.
  measured = norm("channel", "")
  np.testing.assert_allclose(measured["shift"], meta["channel_mean"], atol=0.5 * min(
      meta["channel_std"]))
  np.testing.assert_allclose(measured["scale"], channel["scale"], rtol=0.5)
  params = {"latent": {k: jnp.asarray(v) for k, v in channel.items()}}
  z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, c)), jnp.float32)
  np.testing.assert_allclose(
      dit_task.denormalize_latents(params, dit_task.normalize_latents(params, z)), z, atol=1e-5)


def test_two_processes_encode_the_same_latents_and_moments_as_one(stage1):
  """Each host writes its shard; process 0's metadata combines every host's moments."""
  work, common = stage1
  out = work / "latents_two_hosts"
  _two_hosts("-m", "vidgen.prepare", f"--config={DIT_CONFIG}:smoke,vae={work / 'vae'}",
             "--mode=latents", "--split=train", "--num=24", f"--out={out}", *common, cwd=work)
  from vidgen.data import latents as latents_lib  # pylint: disable=g-import-not-at-top
  one, two = (latents_lib.LatentRecords(str(p)) for p in (work / "latents" / "train", out))
  assert two.metadata["records"] == [12, 12] and one.metadata["records"] == [24]
  # Which clips, at which bucket's size, fill the first batches depends on the
  # hosts' streams, but a clip both runs encoded at one size has the same
  # latents (the encode sharded over 4 devices of 2 hosts = one device).
  def clip(r):
    return int(r["key"]), int(r["frames"]), int(r["height"]), int(r["width"])

  by_clip = {clip(one[i]): one[i]["mean"] for i in range(len(one))}
  means = [two[i]["mean"] for i in range(len(two))]
  shared = [(m, by_clip[clip(two[i])]) for i, m in enumerate(means) if clip(two[i]) in by_clip]
  assert len({clip(two[i]) for i in range(len(two))}) == 24 and len(shared) >= 8, len(shared)
  for got, want in shared:
    np.testing.assert_allclose(got, want, atol=1e-5)
  # Process 0's moments are those of both hosts' records together.
  flat = np.concatenate([m.reshape(-1, m.shape[-1]) for m in means]).astype(np.float64)
  np.testing.assert_allclose(two.metadata["channel_mean"], flat.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(two.metadata["channel_std"], flat.std(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(two.metadata["latent_std"], flat.std(), rtol=1e-5)


def test_two_processes_measure_one_latent_normalization_when_encoding_on_the_fly(stage1):
  work, common = stage1
  workdir = work / "dit_two_hosts_on_the_fly"
  _two_hosts("-m", "vidgen.train", f"--config={DIT_CONFIG}:smoke,vae={work / 'vae'},steps=1",
             f"--workdir={workdir}", "--config.dit.latent_norm=channel",
             "--config.train.picture_every=0", "--config.train.eval_every=0", *common, cwd=work)
  lines = [[x.split("latents normalized per ")[1] for x in
            (workdir / "logs" / f"log-process{i}.txt").read_text().splitlines()
            if "latents normalized per " in x] for i in range(2)]
  assert len(lines[0]) == 1 and lines[0] == lines[1], lines
  assert lines[0][0].startswith("channel: shift [")


def test_prompts_and_sample_write_videos_records_and_accuracy(trained):
  work, common, spec, _ = trained
  prompts = work / "prompts.txt"
  result = _run("-m", "vidgen.prepare", spec, "--mode=prompts", "--split=holdout", "--num=3",
                f"--out={prompts}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = prompts.read_text().splitlines()
  assert len(lines) == len(set(lines)) == 3
  out = work / "samples"
  negatives = work / "negatives.txt"  # the first batch mixes a negative prompt and none
  negatives.write_text("a large red circle moving left\n\n\n\n")
  result = _run("-m", "vidgen.sample", spec, f"--workdir={work / 'dit'}", f"--prompts={prompts}",
                "--prompt=a large red square moving left", f"--out={out}", "--frames=5",
                "--height=32", "--width=32", "--batch=2", "--check_shapes", "--seed=3",
                f"--negative_prompts={negatives}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  records = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
  assert [r["prompt"] for r in records] == ["a large red square moving left"] + lines
  assert [r["seed"] for r in records] == [3, 4, 5, 6]
  assert [r["negative_prompt"] for r in records] == ["a large red circle moving left", "", "", ""]
  for r in records:
    assert (out / r["file"]).exists() and r["frames"] == 5 and r["sampler"] == "euler"
  assert (out / "contact_sheet.png").exists() and (out / "index.html").exists()
  accuracy = json.loads((out / "accuracy.json").read_text())
  assert accuracy["all"]["videos"] == 4 and accuracy["held_out"]["videos"] >= 3
  # Outside the position tables: a clear error naming the limits.
  result = _run("-m", "vidgen.sample", spec, f"--workdir={work / 'dit'}", "--prompt=a red square",
                f"--out={work / 'big'}", "--frames=5", "--height=512", "--width=32",
                *common, cwd=work)
  assert result.returncode != 0 and "position tables" in result.stderr


def test_sample_modes_long_videos_and_plans_from_the_command_line(trained):
  work, common, spec, _ = trained
  from vidgen.data import video_io  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  image = work / "first.png"
  video_io.write_video(image, rng.integers(0, 256, (1, 40, 40, 3), dtype=np.uint8), 8)
  clip = work / "clip.mp4"
  video_io.write_video(clip, rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), 8)
  base = [spec, f"--workdir={work / 'dit'}", "--prompt=a small blue circle moving up",
          "--height=32", "--width=32", "--batch=1", *common]
  cases = {
      "i2v": ["--mode=i2v", f"--image={image}", "--frames=5"],
      "loop": ["--mode=loop", "--frames=9", "--window=3", "--gif"],  # 8 frames
      "extend": ["--mode=extend", f"--video={clip}", "--frames=17", "--keep=2",
                 "--scheme=hierarchical", "--window=3", "--context=1"],
  }
  for name, flags_ in cases.items():
    out = work / f"mode_{name}"
    result = _run("-m", "vidgen.sample", *base, *flags_, f"--out={out}", cwd=work)
    assert result.returncode == 0, (name, result.stderr[-4000:])
    record = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert record["mode"] == name and (out / record["file"]).exists()
    assert (name == "loop") != ("given_psnr" in record)
    assert len(video_io.decode((out / record["file"]).read_bytes())) == record["frames"]
  assert (work / "mode_loop" / "0000.gif").exists()
  loop = json.loads((work / "mode_loop" / "samples.jsonl").read_text())
  assert loop["frames"] == 8 and set(loop["loop"]) == {"jump", "median_step", "ratio"}
  extend = json.loads((work / "mode_extend" / "samples.jsonl").read_text())
  assert extend["scheme"] == "hierarchical" and extend["windows"][0] > 1
  # The plan alone, no checkpoint needed; a mode without its input fails clearly.
  result = _run("-m", "vidgen.sample", spec, f"--workdir={work / 'none'}", "--print_plan",
                "--frames=33", "--window=3", "--scheme=long_range", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "long_range: 9 frames, window 3" in result.stdout
  result = _run("-m", "vidgen.sample", *base, "--mode=i2v", f"--out={work / 'bad'}", cwd=work)
  assert result.returncode != 0 and "takes 1 image" in result.stderr


def test_two_processes_split_the_prompts_and_process_0_writes_the_index(trained):
  work, common, spec, _ = trained
  prompts = work / "five.txt"
  prompts.write_text("\n".join(f"a small {c} circle moving up"
                               for c in ("red", "green", "blue", "yellow", "cyan")) + "\n")
  out = work / "two_hosts"
  _two_hosts("-m", "vidgen.sample", spec, f"--workdir={work / 'dit'}", f"--prompts={prompts}",
             f"--out={out}", "--frames=5", "--height=32", "--width=32", "--batch=1", "--seed=10",
             *common, cwd=work)
  records = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
  assert [r["seed"] for r in records] == [10, 11, 12, 13, 14]
  assert [r["prompt"].split()[2] for r in records] == ["red", "green", "blue", "yellow", "cyan"]
  assert all((out / r["file"]).exists() for r in records)
  assert (out / "contact_sheet.png").exists() and not list(out.glob("samples.*.jsonl"))


def test_bench_generation_reports_every_goal(trained):
  work, common, spec, _ = trained
  result = _run("-m", "vidgen.bench.generation", spec, f"--workdir={work / 'dit'}", "--num=2",
                "--frames=9", "--loop_frames=8", "--long_frames=17", "--size=32",
                "--schemes=autoregressive,hierarchical",
                "--config.diffusion.sample.window=3", f"--out={work / 'bench_gen'}", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  rows = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
  by = {(r["bench"], r.get("scheme")): r for r in rows}
  assert by[("i2v", None)]["videos"] == 2 and by[("i2v", None)]["given_psnr_mean"] > 0
  assert len(by[("loop", None)]["ratios"]) == 2
  for scheme in ("autoregressive", "hierarchical"):
    row = by[("long_video", scheme)]
    assert row["windows"] > 1 and row["videos"] == 2 and "every_chunk" in row
  assert by[("long_video", "t2v reference")]["windows"] == 1


def test_stage2_without_a_vae_fails_clearly(tmp_path):
  result = _run("-m", "vidgen.train", f"--config={DIT_CONFIG}:smoke",
                f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={tmp_path / 'data'}",
                cwd=tmp_path)
  assert result.returncode != 0 and "vae.checkpoint" in result.stderr


_SHARDED = r"""
import json, sys
import jax, numpy as np
from vidgen import configlib
from vidgen.parallel import mesh as mesh_lib
from vidgen.trainers import dit, loop
config = configlib.load(sys.argv[1], {"data.data_dir": sys.argv[2], "data.num_workers": 0})
task = dit.make_task(config)
batch = next(iter(task.data(config, train=True)))
out = {}
for name, devices, sizes in (("one", jax.devices()[:1], dict(data=1, fsdp=1, tensor=1, context=1)),
                             ("eight", jax.devices(), dict(data=2, fsdp=2, tensor=2, context=1))):
  mesh = mesh_lib.make_mesh(configlib.ConfigDict(sizes), devices)
  s = loop.setup(config, task, mesh)
  state = loop.init_state(s, jax.random.key(0, impl="rbg"))
  params = jax.device_put(task.pretrained(state.params), s.shardings.params)
  state = state.replace(params=params, opt_state=s.tx.init(params))
  before = jax.device_get(state.params)
  step = loop.compile_train_step(s, task, config, batch)
  losses = []
  for i in range(2):
    with mesh_lib.activate(s.mesh, s.rules):
      from vidgen.parallel import multihost
      b = multihost.global_batch(batch, s.mesh, s.rules, task.batch_keys)
      state, m = step(state, b, jax.random.key(3))
    losses.append(float(m["loss"]))
  after = jax.device_get(state.params)
  same = lambda k: all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[k]), jax.tree.leaves(after[k])))
  out[name] = dict(losses=losses, vae_frozen=same("vae"), latent_frozen=same("latent"),
                   dit_moved=not same("dit"),
                   sharded=str(jax.tree.leaves(state.params["dit"])[0].sharding.spec))
print(json.dumps(out))
"""


def test_8_devices_with_fsdp_and_tensor_sharding_give_the_loss_of_1_device(stage1):
  work, _ = stage1
  spec = f"{DIT_CONFIG}:smoke,vae={work / 'vae'},latents={work / 'latents'}"
  result = _run("-c", _SHARDED, spec, str(work / "data"), cwd=work,
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert result.returncode == 0, result.stderr[-4000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(out["eight"]["losses"], out["one"]["losses"], rtol=1e-4)
  for run in out.values():
    assert run["vae_frozen"] and run["latent_frozen"] and run["dit_moved"]


def test_a_tiny_model_overfits_one_batch():
  """Fixed times and noise: the trainer's loss on one batch falls close to zero."""
  config = configlib.load(f"{DIT_CONFIG}:smoke")
  models = dit_task.Models(
      dit=dit_lib.dit_from_config(config),
      text=encoder_lib.encoder_from_config(config.text, vocab_size=64),
      vae=vae_lib.vae_from_config(config.vae), diffusion=flow.RectifiedFlow())
  cfg = config.diffusion
  rng = np.random.default_rng(0)
  batch = {"mean": rng.normal(size=(2, 2, 4, 4, 4)).astype(np.float32),
           "logvar": np.full((2, 2, 4, 4, 4), -30.0, np.float32),
           "tokens": np.array([[5, 6, 2, 0], [7, 8, 2, 0]], np.int32),
           "token_mask": np.array([[1, 1, 1, 0], [1, 1, 1, 0]], bool)}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  mask = batch["token_mask"]
  emb = jnp.zeros((1, 4, models.text.width))
  params = nn.unbox({
      "dit": models.dit.init(jax.random.key(0), batch["mean"][:1], jnp.ones((1, 2)), emb,
                             mask[:1])["params"],
      "text": models.text.init(jax.random.key(1), batch["tokens"], mask)["params"]})
  params["latent"] = {"shift": jnp.zeros(4), "scale": jnp.ones(4)}
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  grads = jax.jit(lambda p: dit_task.grads(p, batch, jax.random.key(5), 0, models=models,
                                           cfg=cfg, trainable=("dit", "text")))
  first = None
  for _ in range(150):
    g, metrics = grads(params)
    first = float(metrics["loss"]) if first is None else first
    updates, opt = tx.update(g, opt, params)
    params = optax.apply_updates(params, updates)
  last = float(metrics["loss"])
  assert last < 0.05 * first, (first, last)


def test_frozen_groups_get_no_update_and_no_optimizer_state():
  optim = configlib.optim_config()
  optim.warmup_steps = 0
  tx = optim_lib.optimizer(optim, 10, frozen=("vae",))
  params = {"dit": jnp.ones(3), "vae": jnp.ones(3)}
  state = tx.init(params)
  updates, _ = tx.update({"dit": jnp.ones(3), "vae": jnp.ones(3)}, state, params)
  assert float(jnp.abs(updates["vae"]).max()) == 0.0
  assert float(jnp.abs(updates["dit"]).max()) > 0.0
  sizes = sum(x.size for x in jax.tree.leaves(state))
  assert sizes < 3 * 3 + 10  # Adam moments for "dit" only (plus counters)


def test_a_frozen_text_encoder_warm_started_from_another_run_stays_as_loaded(trained):
  work, common, spec, _ = trained
  result = _run("-m", "vidgen.train", spec + ",steps=2", f"--workdir={work / 'frozen'}",
                f"--config.text.encoder.checkpoint={work / 'dit'}",
                "--config.text.encoder.trainable=False", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  script = (
      "import sys, jax, numpy as np\n"
      "from vidgen import configlib\n"
      "from vidgen.trainers import dit, loop\n"
      "cfg = configlib.load(sys.argv[1], {'data.data_dir': sys.argv[2]})\n"
      "task = dit.make_task(cfg, for_inference=True)\n"
      "a = loop.restore_for_inference(cfg, task, sys.argv[3])[1]['text']\n"
      "b = loop.restore_for_inference(cfg, task, sys.argv[4])[1]['text']\n"
      "same = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))\n"
      "print('SAME' if same else 'DIFFERENT')\n")
  spec_path = spec.removeprefix("--config=")
  check = _run("-c", script, spec_path, str(work / "data"), str(work / "dit"),
               str(work / "frozen"), cwd=work)
  assert check.returncode == 0, check.stderr[-4000:]
  assert check.stdout.strip().splitlines()[-1] == "SAME"


def test_sample_without_prompts_or_with_a_stage1_config_fails_clearly(tmp_path):
  result = _run("-m", "vidgen.sample", f"--config={DIT_CONFIG}:smoke", f"--workdir={tmp_path}",
                cwd=tmp_path)
  assert result.returncode != 0 and "give prompts" in result.stderr
  result = _run("-m", "vidgen.sample", f"--config={VAE_CONFIG}:smoke", f"--workdir={tmp_path}",
                "--prompt=a red square", cwd=tmp_path)
  assert result.returncode != 0 and "task=dit" in result.stderr


def test_evaluate_reports_round_trip_denoising_and_sampling_accuracy(trained):
  work, common, spec, _ = trained
  result = _run("-m", "vidgen.evaluate", spec, f"--workdir={work / 'dit'}", "--max_batches=1",
                "--denoise_times=0.5", *common, cwd=work)
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["task"] == "dit" and report["clips"] > 0
  for name in ("vae_round_trip", "denoise_t0.5", "samples"):
    assert set(report[name]) == {"color", "shape", "size", "motion", "count", "all"}
    assert all(0.0 <= v <= 1.0 for v in report[name].values())
  assert os.path.exists(work / "dit" / "eval" / "dit_latents.png")
