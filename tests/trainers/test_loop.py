"""The trainer's mechanics on a toy model: steps, skips, checkpoints, resume, meshes, processes.

In-process tests use the toy Task directly; tests that need several devices,
several processes, SIGKILL or a fresh JAX run `toy.py` in subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import portpicker
import pytest

import toy
from vidgen import configlib
from vidgen.data import pipeline
from vidgen.trainers import checkpoint as ckpt_lib
from vidgen.trainers import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/shapes/vae.py")
TOY = os.path.join(ROOT, "tests/trainers/toy.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("toydata")
  pipeline.ensure_tokenizer(_config(path))
  return path


def _overrides(data_dir, **extra):
  base = {
      "data.data_dir": str(data_dir), "data.num_workers": 0, "train.log_every": 1,
      "train.picture_every": 0, "train.eval_every": 0, "train.eval_batches": 1,
      "optim.schedule": "constant", "optim.warmup_steps": 0, "optim.lr": 0.01,
  }
  base.update(extra)
  return base


def _config(data_dir, steps=8, **extra):
  return configlib.load(f"{CONFIG}:smoke,steps={steps}", _overrides(data_dir, **extra))


def _losses(workdir):
  m = toy.read_metrics(str(workdir))
  return {s: (v["loss"], v["batch_checksum"]) for s, v in sorted(m.items())}


def _run_toy(workdir, data_dir, steps, *, devices=1, extra=(), process=None, wait=True,
             timeout=240, **overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.join(ROOT, "tests/trainers"))
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  args = [sys.executable, TOY, f"--config={CONFIG}:smoke,steps={steps}",
          f"--workdir={workdir}", *extra]
  args += [f"--config.{k}={v}" for k, v in _overrides(data_dir, **overrides).items()]
  if process is not None:
    port, index, count = process
    args += [f"--coordinator_address=localhost:{port}", f"--num_processes={count}",
             f"--process_id={index}"]
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  if not wait:
    return proc
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def _last_json(out):
  return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


# ---------------------------------------------------------------------------
# In-process.


def test_a_few_steps_write_checkpoints_metrics_pictures_and_eval(tmp_path, data_dir):
  config = _config(data_dir, steps=4, **{"train.picture_every": 2, "train.checkpoint_every": 2})
  result = loop.train(config, str(tmp_path), toy.make_task())
  assert result.step == 4 and not result.stopped_early and result.skipped == 0
  assert result.eval["count"] > 0 and np.isfinite(result.eval["mse"])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert sorted(os.listdir(tmp_path / "pictures")) == ["frames_0000002.png", "frames_0000004.png"]
  assert os.listdir(tmp_path / "tensorboard")
  metrics = toy.read_metrics(str(tmp_path))
  assert sorted(metrics) == [1, 2, 3, 4]
  assert {"loss", "grad_norm", "lr", "steps_per_s", "clips_per_s"} <= set(metrics[4])


def test_a_non_finite_step_leaves_params_and_optimizer_unchanged(data_dir):
  config = _config(data_dir)
  task = toy.make_task(nan_at=(1,))
  s = loop.setup(config, task)
  state = loop.init_state(s, jax.random.key(0))
  batch = {"video": np.random.default_rng(0).integers(0, 255, (4, 5, 32, 32, 3), np.uint8)}
  step = jax.jit(lambda st, b, r: loop.train_step(st, b, r, grads_fn=task.grads, tx=s.tx,
                                                  ema_decay=0.0))
  state1, m1 = step(state, batch, jax.random.key(1))  # step 0: finite
  assert float(m1["finite"]) == 1.0
  before = jax.device_get(state1)
  state2, m2 = step(state1, batch, jax.random.key(1))  # step 1: NaN loss
  after = jax.device_get(state2)
  assert float(m2["finite"]) == 0.0 and int(after.skipped) == 1 and int(after.step) == 2
  jax.tree.map(np.testing.assert_array_equal, before.params, after.params)
  jax.tree.map(np.testing.assert_array_equal, before.opt_state, after.opt_state)


def test_ema_warms_up_then_averages_at_the_configured_decay(data_dir):
  config = _config(data_dir, **{"optim.ema_decay": 0.99})
  task = toy.make_task()
  s = loop.setup(config, task)
  state = loop.init_state(s, jax.random.key(0))
  batch = {"video": np.random.default_rng(0).integers(0, 255, (4, 5, 32, 32, 3), np.uint8)}
  step = jax.jit(lambda st, b, r: loop.train_step(st, b, r, grads_fn=task.grads, tx=s.tx,
                                                  ema_decay=0.99))
  ema0 = jax.device_get(state.ema_params)
  state1, _ = step(state, batch, jax.random.key(1))  # step 0: decay min(0.99, 1/10)
  p1, e1 = jax.device_get((state1.params, state1.ema_params))
  jax.tree.map(lambda e, a, b: np.testing.assert_allclose(e, 0.1 * a + 0.9 * b, rtol=1e-5,
                                                          atol=1e-6), e1, ema0, p1)
  st = state1.replace(step=jnp.asarray(10_000, jnp.int32))  # late: the configured decay
  st2, _ = step(st, batch, jax.random.key(1))
  p2, e2 = jax.device_get((st2.params, st2.ema_params))
  jax.tree.map(lambda e, a, b: np.testing.assert_allclose(e, 0.99 * a + 0.01 * b, rtol=1e-5,
                                                          atol=1e-6), e2, e1, p2)


def test_skipped_steps_are_counted_and_too_many_in_a_row_stop_the_run(tmp_path, data_dir):
  result = loop.train(_config(data_dir, steps=6), str(tmp_path / "a"), toy.make_task(nan_at=(2, 4)))
  assert result.skipped == 2 and result.step == 6
  config = _config(data_dir, steps=8, **{"train.max_consecutive_skips": 3})
  with pytest.raises(loop.NonFiniteError, match="3 non-finite steps in a row"):
    loop.train(config, str(tmp_path / "b"), toy.make_task(nan_at=(2, 3, 4)))


def test_a_checkpoint_of_another_model_shape_fails_naming_the_parameter(tmp_path, data_dir):
  loop.train(_config(data_dir, steps=2), str(tmp_path), toy.make_task(width=8))
  with pytest.raises(ckpt_lib.CheckpointMismatch, match=r"parameter 'params/dec/kernel': checkpoint shape \(8, 3\), model shape \(16, 3\)"):
    loop.train(_config(data_dir, steps=4), str(tmp_path), toy.make_task(width=16))


class _StopAfter:
  """A data factory whose train iterator raises SIGTERM after drawing `n` batches."""

  def __init__(self, n):
    self.n = n

  def __call__(self, config, train=True, **kw):
    ds = pipeline.dataset_from_config(config, train=train, **kw)
    return ds if not train else _Iterable(ds, self.n)


class _Iterable:
  def __init__(self, ds, n):
    self.ds, self.n = ds, n

  def __iter__(self):
    return _Iter(iter(self.ds), self.n)


class _Iter:
  def __init__(self, it, n):
    self.it, self.n, self.drawn = it, n, 0

  def __next__(self):
    self.drawn += 1
    if self.drawn == self.n:
      signal.raise_signal(signal.SIGTERM)
    return next(self.it)

  def get_state(self):
    return self.it.get_state()

  def set_state(self, state):
    self.it.set_state(state)


def test_sigterm_saves_and_a_resume_is_bit_identical(tmp_path, data_dir):
  straight = tmp_path / "straight"
  loop.train(_config(data_dir, steps=8), str(straight), toy.make_task())
  parts = tmp_path / "parts"
  first = loop.train(_config(data_dir, steps=8), str(parts), toy.make_task(),
                     data_factory=_StopAfter(3))
  assert first.stopped_early and first.preempted and first.step == 3
  assert ckpt_lib.Checkpointer(str(parts / "checkpoints")).latest_step() == 3
  second = loop.train(_config(data_dir, steps=8), str(parts), toy.make_task())
  assert second.step == 8 and not second.stopped_early
  assert _losses(parts) == _losses(straight)  # same losses and same batches, bit for bit


# ---------------------------------------------------------------------------
# Subprocesses: SIGKILL, several devices, several processes.


def test_kill_9_during_async_saves_leaves_a_usable_checkpoint(tmp_path, data_dir):
  work = tmp_path / "w"
  proc = _run_toy(work, data_dir, 400, wait=False, **{"train.checkpoint_every": 1})
  deadline = time.time() + 120
  while time.time() < deadline:
    done = [d for d in os.listdir(work / "checkpoints")] if (work / "checkpoints").exists() else []
    if len([d for d in done if d.isdigit()]) >= 2:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  ckpt = ckpt_lib.Checkpointer(str(work / "checkpoints"))
  latest = ckpt.latest_step()
  assert latest is not None and latest >= 1
  ckpt.close()
  code, out, err = _run_toy(work, data_dir, latest + 2)
  assert code == 0, err[-3000:]
  assert _last_json(out)["step"] == latest + 2
  # The killed-and-resumed run saw the same batches and losses as a straight one.
  straight = tmp_path / "straight"
  code, out, err = _run_toy(straight, data_dir, latest + 2)
  assert code == 0, err[-3000:]
  resumed = _losses(work)
  for step, value in _losses(straight).items():
    assert resumed[step] == value, step


def test_8_devices_match_1_device_and_restore_onto_2_devices(tmp_path, data_dir):
  one, eight = tmp_path / "one", tmp_path / "eight"
  common = {"data.buckets": "5x16x16:8"}
  code, out, err = _run_toy(one, data_dir, 6, devices=1, **common)
  assert code == 0, err[-3000:]
  code, out, err = _run_toy(eight, data_dir, 4, devices=8,
                            **common, **{"mesh.data": 2, "mesh.fsdp": 4})
  assert code == 0, err[-3000:]
  assert _last_json(out)["devices"] == 8
  # Saved on 8 devices (fsdp 4), resumed on 2 (data 2): the run goes on.
  code, out, err = _run_toy(eight, data_dir, 6, devices=2, **common)
  assert code == 0, err[-3000:]
  assert _last_json(out)["devices"] == 2
  a, b = _losses(one), _losses(eight)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for s in a:
    np.testing.assert_allclose(a[s], b[s], rtol=2e-5)


def test_two_processes_train_and_checkpoint_and_one_process_resumes(tmp_path, data_dir):
  work = tmp_path / "w"
  port = portpicker.pick_unused_port()
  procs = [_run_toy(work, data_dir, 4, devices=1, wait=False, process=(port, i, 2))
           for i in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  got = sorted(_last_json(out)["process"] for out, _ in outs)
  assert got == [0, 1] and all(_last_json(out)["devices"] == 2 for out, _ in outs)
  data_files = sorted(f for f in os.listdir(work / "checkpoints" / "4" / "data")
                      if f.startswith("process_"))
  assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
  # Saved by 2 processes, resumed by 1: the model state is restored, the data
  # stream starts afresh (with a warning).
  code, out, err = _run_toy(work, data_dir, 6, devices=1)
  assert code == 0, err[-3000:]
  assert _last_json(out)["step"] == 6
  assert "data stream starts afresh" in err
