"""`python -m vidgen.bench.train_step` at a tiny size: one JSON line, every field, the peer matched.

Only the output's form is checked (fields present, finite, positive; the
peer's parameter count within 5% of ours): speed is measured by running the
benchmark, never by tests. Both precisions (fp32; bf16 mixed precision on both
sides) run. tiny at depth 4 (410k parameters) is matched by a
3-layer Latte; the variant's own depth 2 has no Latte depth within 5%.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--variant=tiny", "--depth=4", "--frames=2", "--height=4", "--width=4", "--batch=1",
        "--reps=1", "--peak_sizes=256", "--peak_reps=1"]
HAS_PEER = all(importlib.util.find_spec(m) is not None for m in ("torch", "diffusers"))

POSITIVE = ("tokens_per_s", "peer_tokens_per_s", "ratio_vs_peer", "step_s_median",
            "peer_step_s_median", "params", "peer_params", "params_ratio",
            "model_flops_per_step", "xla_flops_per_step", "xla_vs_model_flops",
            "measured_peak_flops", "torch_matmul_peak_flops", "mfu_vs_measured_peak",
            "xla_flops_per_s", "model_flops_per_s", "peer_model_flops_per_s", "compile_s")


@pytest.mark.skipif(not HAS_PEER, reason="needs torch and diffusers (make install-test)")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_train_step_line(dtype):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "vidgen.bench.train_step", *TINY,
                           f"--dtype={dtype}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = result.stdout.splitlines()
  assert len(lines) == 1, result.stdout[-2000:]
  line = json.loads(lines[0])
  assert line["bench"] == "dit_train_step"
  for key in POSITIVE:
    value = line[key]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
    assert math.isfinite(value) and value > 0, (key, value)
  assert abs(line["params_ratio"] - 1) <= 0.05, line["params_ratio"]
  assert math.isclose(line["params_ratio"], line["peer_params"] / line["params"], rel_tol=1e-3)
  assert math.isclose(line["ratio_vs_peer"], line["tokens_per_s"] / line["peer_tokens_per_s"],
                      rel_tol=0.01)
  assert math.isclose(line["mfu_vs_measured_peak"],
                      line["model_flops_per_step"] / line["step_s_median"]
                      / line["measured_peak_flops"], rel_tol=0.01)
  settings = line["settings"]
  assert settings["tokens_per_clip"] == 2 * 2 * 2 and settings["batch"] == 1
  assert settings["depth"] == 4 and settings["width"] == 64
  assert settings["dtype"] == dtype  # ours computes in it; the peer runs under autocast to it
  assert line["peer_num_layers"] == 3
  assert line["peer_config"]["num_attention_heads"] * line["peer_config"]["attention_head_dim"] \
      == settings["width"]
  assert line["steps_taken"] == 2  # warm-up + one timed step, state donated through both
  assert math.isfinite(line["loss_first"])
