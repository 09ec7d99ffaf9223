"""Multi-host data: the DiT trains on 4 processes, resumes on 2, with the same global stream.

Slow (several minutes on 2 cores: every process compiles the DiT's train
step): `launch/local.sh` starts 4 processes x 2 simulated CPU devices on a
`data 2 x fsdp 2 x context 2` mesh with `data.shards=4`; they train the smoke
DiT (the frozen smoke VAE encodes the videos on the fly) for 2 steps and
checkpoint; 2 processes x 4 devices resume for 2 more. With
`train.log_batch_keys` every process logs the keys of its rows of each batch;
stacked in process order they must be the global batches of the one-process
pipeline with the same 4 shards (the uninterrupted stream), and each process
must have read only keys of the shards it owns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vidgen import configlib
from vidgen.data import pipeline

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VAE_CONFIG = os.path.join(ROOT, "configs/shapes/vae.py")
DIT_CONFIG = os.path.join(ROOT, "configs/shapes/dit.py")
SHARDS = 4
BUCKETS = "5x32x32:4"  # one bucket: one train-step compile per run


# Cheaper XLA CPU compiles (LLVM barely optimises): compiling dominates these runs.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _env() -> dict[str, str]:
  xla = os.environ.get("XLA_FLAGS", "")
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{xla} {FAST_COMPILE}".strip())


def _tail(result: subprocess.CompletedProcess, n: int = 6000) -> str:
  return (result.stdout + result.stderr)[-n:]


def _launch(processes: int, devices: int, *args: str, cwd) -> subprocess.CompletedProcess:
  return subprocess.run(
      ["bash", os.path.join(ROOT, "launch", "local.sh"), str(processes),
       "--devices_per_process", str(devices), "--grace_seconds", "10", sys.executable,
       "-m", "vidgen.train", *args],
      cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)


def _overrides(data_dir) -> dict:
  return {"data.data_dir": str(data_dir), "data.num_workers": 0, "data.shards": SHARDS,
          "data.buckets": BUCKETS, "mesh.data": 2, "mesh.fsdp": 2, "mesh.context": 2,
          # The scale from a fixed value: measuring it reads data outside the shards.
          "dit.latent_scale": 1.0, "train.picture_every": 0, "train.log_batch_keys": True,
          "optim.ema_decay": 0.0}


def _flags(overrides: dict) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def _logged(workdir) -> dict[tuple[int, int], dict[int, dict]]:
  """(process, process count) -> step -> the last line logged for it."""
  out = {}
  folder = workdir / "batch_keys"
  for name in sorted(os.listdir(folder)):
    index, count = (int(x) for x in name.removeprefix("process_").removesuffix(".jsonl")
                    .split("-of-"))
    lines = [json.loads(x) for x in (folder / name).read_text().splitlines()]
    out[(index, count)] = {line["step"]: line for line in lines}
  return out


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
  """A smoke VAE trained 1 step (stage 2 needs one), and the data dir with its tokenizer."""
  work = tmp_path_factory.mktemp("multihost")
  result = subprocess.run(
      [sys.executable, "-m", "vidgen.train", f"--config={VAE_CONFIG}:smoke,steps=1",
       f"--workdir={work / 'vae'}", f"--config.data.data_dir={work / 'data'}",
       "--config.data.num_workers=0", "--config.train.picture_every=0"],
      cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, _tail(result)
  return work


def test_dit_on_4_processes_resumes_on_2_with_the_same_global_data_stream(vae):
  work = vae
  overrides = _overrides(work / "data")
  spec = f"{DIT_CONFIG}:smoke,vae={work / 'vae'}"
  common = [f"--workdir={work / 'dit'}", *_flags(overrides)]

  result = _launch(4, 2, f"--config={spec},steps=2", *common, cwd=work)
  assert result.returncode == 0, (
      "4 processes x 2 devices, mesh data 2 x fsdp 2 x context 2:\n" + _tail(result))
  saved = sorted(f for f in os.listdir(work / "dit" / "checkpoints" / "2" / "data")
                 if f.startswith("process_"))
  assert saved == [f"process_{i}-of-4.json" for i in range(4)]

  result = _launch(2, 4, f"--config={spec},steps=4", *common, cwd=work)
  assert result.returncode == 0, "2 processes x 4 devices, resuming:\n" + _tail(result)
  assert "resumed from step 2" in result.stdout + result.stderr
  assert "starts afresh" not in result.stdout + result.stderr

  logged = _logged(work / "dit")
  assert sorted(logged) == [(0, 2), (0, 4), (1, 2), (1, 4), (2, 4), (3, 4)]
  got = {}
  for count, steps in ((4, (1, 2)), (2, (3, 4))):
    for index in range(count):
      owned = list(pipeline.owned_shards(index, count, SHARDS))
      for step in steps:
        line = logged[(index, count)][step]
        # Each process reads only its own shards: shard j holds keys[j::S].
        assert line["shards"] == owned
        assert {k % SHARDS for k in line["keys"]} <= set(owned), (index, count, line)
      assert sorted(logged[(index, count)]) == list(steps)
    for step in steps:
      got[step] = np.concatenate([logged[(i, count)][step]["keys"] for i in range(count)])

  # The uninterrupted stream: one process reading all 4 shards.
  config = configlib.load(f"{spec}", overrides)
  reference = iter(pipeline.dataset_from_config(config, train=True, num_workers=0))
  for step in range(1, 5):
    np.testing.assert_array_equal(got[step], next(reference)["key"], err_msg=f"step {step}")
