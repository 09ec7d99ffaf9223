"""`python -m vidgen.bench.vae` on the smoke config: every JSON line and field, both peer paths.

Only the output's form is checked (fields present, finite, positive): speed is
measured by running the benchmark, never by tests.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["--config=configs/shapes/vae.py:smoke", "--size=32", "--frames=9", "--batch=1",
         "--reps=1"]
HAS_PEER = all(importlib.util.find_spec(m) is not None for m in ("torch", "diffusers"))

THROUGHPUT = ("clips_per_s", "params", "gflop_per_clip", "batch", "frames", "size", "reps",
              "peak_rss_mb")
PEER = ("peer_clips_per_s", "ratio_vs_peer", "peer_params")
MEMORY = ("frames", "peak_rss_mb", "baseline_rss_mb", "decode_s", "chunk_latent_frames",
          "unchunked_peak_rss_mb", "unchunked_decode_s", "output_mb", "xla_temp_mb",
          "unchunked_xla_temp_mb", "frames_per_s")


def _run(*args: str) -> list[dict]:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "vidgen.bench.vae", *SMOKE, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = result.stdout.splitlines()
  assert lines, result.stderr[-4000:]
  return [json.loads(line) for line in lines]  # every stdout line is JSON


def _positive(line: dict, keys: tuple[str, ...]) -> None:
  for key in keys:
    value = line[key]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
    assert math.isfinite(value) and value > 0, (key, value)


def test_throughput_and_chunked_memory():
  args = ["--memory_frames=5,9", "--chunk=1", "--params=random"]
  args += [] if HAS_PEER else ["--peer=none"]
  lines = _run(*args)
  assert [l["bench"] for l in lines] == ["vae_throughput", "vae_chunked_memory",
                                         "vae_chunked_memory", "vae_chunked_memory_growth"]
  tp = lines[0]
  _positive(tp, THROUGHPUT)
  assert (tp["batch"], tp["frames"], tp["size"], tp["reps"]) == (1, 9, 32, 1)
  assert tp["latent_shape"] == [3, 4, 4, 4]  # smoke: 4 latent channels, x4 time, x8 space
  if HAS_PEER:
    _positive(tp, PEER)
    assert tp["peer"] == "diffusers.AutoencoderKLCogVideoX"
    assert tp["peer_config"]["latent_channels"] == 4
    assert tp["peer_config"]["temporal_compression_ratio"] == 4
    assert len(tp["peer_config"]["block_out_channels"]) == 4  # 3 spatial downsamples: x8
    assert math.isclose(tp["ratio_vs_peer"], tp["clips_per_s"] / tp["peer_clips_per_s"],
                        rel_tol=0.01)

  for line, frames in zip(lines[1:3], (5, 9)):
    _positive(line, MEMORY)
    assert line["frames"] == frames and line["chunk_latent_frames"] == 1
    assert line["peak_rss_mb"] >= line["baseline_rss_mb"]
    assert line["added_mb"] >= 0

  growth = lines[3]
  assert growth["frames"] == [5, 9]
  for key in ("rss_mb_per_frame", "added_mb_per_frame", "output_mb_per_frame"):
    assert math.isfinite(growth[key]), (key, growth[key])  # slopes: noise can make them < 0
  assert growth["output_mb_per_frame"] > 0
  assert growth["growth"] in ("sub-linear", "linear", "super-linear", "unknown")
  assert isinstance(growth["no_faster_than_linear"], bool)


def test_throughput_without_peer():
  (tp,) = _run("--what=throughput", "--peer=none")  # and the default params=init
  assert tp["bench"] == "vae_throughput"
  _positive(tp, THROUGHPUT)
  for key in ("peer", *PEER):
    assert tp[key] is None, key
