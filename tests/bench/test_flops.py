"""vidgen.bench.flops: analytic params and FLOPs against the real model and XLA, and the CLI.

The parameter formula must equal the count of the real modules' `eval_shape`d
init exactly; the FLOP formula must agree with XLA's cost_analysis of the
compiled forward (and training step) within 10% (XLA also counts the
elementwise work: norms, softmax, GELU, so analytic / XLA sits a little below
1). Compiles stay tiny: the `tiny` variant on small latent grids.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from vidgen.bench import flops

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = (4, 8, 8)  # latent T x H x W: divides by 1x2x2 and 2x2x2 patches


@pytest.mark.parametrize("variant", ["tiny", "S"])
@pytest.mark.parametrize("patch", ["1x2x2", "2x2x2"])
def test_analytic_params_equal_the_model(variant, patch):
  config = flops.flops_config(variant, patch, SMALL, channels=16, text_len=32)
  assert flops.exact_params(config, SMALL) == flops.params_analytic(config, SMALL)


def test_analytic_params_follow_the_options():
  """qk_norm off, other channels, bigger position tables: still exact."""
  config = flops.flops_config("tiny", "1x4x4", (2, 16, 8), channels=4, text_len=8,
                              max_grid=(5, 7, 3))
  config.dit.qk_norm = False
  config.text.encoder.width = 48
  assert flops.exact_params(config, (2, 16, 8)) == flops.params_analytic(config, (2, 16, 8))


def test_analytic_counts_follow_the_size_overrides():
  """dit.width/depth/heads in place of the variant's: params exact, FLOPs follow."""
  config = flops.flops_config("tiny", "1x2x2", SMALL, channels=4, text_len=8)
  base = flops.config_flops(config, SMALL)
  config.dit.width, config.dit.depth, config.dit.heads = 96, 3, 4
  assert flops.exact_params(config, SMALL) == flops.params_analytic(config, SMALL)
  got = flops.config_flops(config, SMALL)
  assert (got["width"], got["depth"], got["heads"]) == (96, 3, 4)
  assert got["params_analytic"] > base["params_analytic"]
  assert got["dit_forward_flops"] > base["dit_forward_flops"]


def test_params_do_not_depend_on_the_clip_but_flops_do():
  a = flops.dit_flops("S", "1x2x2", (4, 8, 8), max_grid=(16, 16, 16))
  b = flops.dit_flops("S", "1x2x2", (16, 32, 32))
  assert a["params_analytic"] == b["params_analytic"]
  assert b["forward_flops"] > a["forward_flops"]


def test_forward_flops_match_xla_within_10_percent():
  config = flops.flops_config("tiny", "1x2x2", (4, 16, 16), channels=16, text_len=32,
                              dtype="float32")
  analytic = flops.config_flops(config, (4, 16, 16), batch=2)
  xla, method = flops.xla_forward_flops(config, (4, 16, 16), batch=2)
  assert method == "compiled at depth 2"
  ratio = analytic["forward_flops"] / xla
  assert 0.9 <= ratio <= 1.1, (analytic["forward_flops"], xla, ratio)
  assert ratio < 1.0  # XLA also counts the elementwise work the formula leaves out


@pytest.mark.parametrize("remat", ["none", "full"])
def test_train_flops_match_xla_within_10_percent(remat):
  line = flops.measure("tiny", "1x2x2", SMALL, batch=2, text_len=16, channels=16,
                       dtype="float32", remat=remat, xla_train=True)
  ratio = line["train_analytic_over_xla"]
  assert 0.9 <= ratio <= 1.1, (remat, line["train_flops_per_step"], line["xla_train_flops"])
  assert line["xla_train_method"] == "compiled at depth 2"
  if remat == "full":  # the recomputed blocks are a visible part of the step
    assert line["recompute_flops"] > 0.2 * line["forward_flops"]


def test_depth_extrapolation_is_exact():
  """XLA's FLOPs are linear in the number of (identical) blocks: depth 3 from depths 1 and 2."""
  config = flops.flops_config("tiny", "1x2x2", (2, 8, 8), channels=4, text_len=8,
                              dtype="float32")
  f = {d: flops._compiled_flops(config, (2, 8, 8), 1, 8, d, train=False) for d in (1, 2, 3)}
  assert f[3] == pytest.approx(f[1] + 2 * (f[2] - f[1]), rel=1e-6)


def test_flops_scale_as_expected():
  base = flops.dit_flops("B", "1x2x2", (8, 16, 16), batch=1)
  double = flops.dit_flops("B", "1x2x2", (8, 16, 16), batch=2)
  for key in ("forward_flops", "train_flops_per_step", "dit_forward_flops",
              "text_encoder_forward_flops", "activation_memory_bytes_estimate"):
    assert double[key] == 2 * base[key], key
  assert double["params_analytic"] == base["params_analytic"]
  assert base["train_flops_per_step"] == 3 * base["forward_flops"]  # no remat
  # Twice the frames: 2x tokens; temporal attention (over T' keys) 4x, spatial (over S) 2x.
  frames = flops.dit_flops("B", "1x2x2", (16, 16, 16), batch=1)
  p, q = base["flops_breakdown"], frames["flops_breakdown"]
  assert frames["tokens_per_clip"] == 2 * base["tokens_per_clip"]
  assert q["temporal_attn"] == 4 * p["temporal_attn"]
  assert q["spatial_attn"] == 2 * p["spatial_attn"]
  assert q["mlp"] == 2 * p["mlp"] and q["spatial_proj"] == 2 * p["spatial_proj"]
  # Twice the height: spatial attention 4x. A 2x2x2 patch: half the tokens.
  tall = flops.dit_flops("B", "1x2x2", (8, 32, 16), batch=1)
  assert tall["flops_breakdown"]["spatial_attn"] == 4 * p["spatial_attn"]
  cube = flops.dit_flops("B", "2x2x2", (8, 16, 16), batch=1)
  assert cube["tokens_per_clip"] == base["tokens_per_clip"] // 2
  # Remat: full adds the blocks' forward, dots only their attention products.
  full = flops.dit_flops("B", "1x2x2", (8, 16, 16), remat="full")
  dots = flops.dit_flops("B", "1x2x2", (8, 16, 16), remat="dots")
  attn = sum(p[k] for k in ("spatial_attn", "temporal_attn", "cross_attn"))
  assert dots["recompute_flops"] == attn
  assert attn < full["recompute_flops"] < base["forward_flops"]
  mem = [x["activation_memory_bytes_estimate"] for x in (base, dots, full)]
  assert mem[0] > mem[1] > mem[2]
  # bfloat16 activations take about half the bytes of float32 ones (softmax stays float32).
  f32 = flops.dit_flops("B", "1x2x2", (8, 16, 16), dtype="float32")
  assert 0.5 < base["activation_memory_bytes_estimate"] / f32[
      "activation_memory_bytes_estimate"] < 0.6


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="do not divide"):
    flops.dit_flops("S", "2x2x2", (5, 8, 8))
  with pytest.raises(ValueError, match="unknown variant 'Q'"):
    flops.dit_flops("Q")
  with pytest.raises(ValueError, match="bad patch"):
    flops.parse_patch("2x2")


FIELDS = ("bench", "variant", "patch", "latents", "grid", "tokens_per_clip", "batch", "params",
          "params_analytic", "text_encoder_params", "text_encoder_params_analytic",
          "train_flops_per_step", "forward_flops", "dit_forward_flops",
          "text_encoder_forward_flops", "recompute_flops", "train_flops_per_token",
          "activation_memory_bytes_estimate", "activation_breakdown", "flops_breakdown",
          "params_match", "xla_forward_flops", "xla_method", "analytic_over_xla",
          "xla_compile_s", "jax_residual_bytes", "estimate_over_residuals")


def test_cli_prints_one_json_line_per_variant():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "vidgen.bench.flops", "--variants=tiny,S/2x2x2", "--patch=1x2x2",
       "--frames=2", "--height=8", "--width=8", "--batch=2", "--text_len=8", "--channels=4",
       "--dtype=float32", "--remat=dots", "--xla_check", "--residuals"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
  assert [(l["variant"], l["patch"]) for l in lines] == [("tiny", [1, 2, 2]), ("S", [2, 2, 2])]
  for line in lines:
    missing = [k for k in FIELDS if k not in line]
    assert not missing, missing
    assert line["params"] == line["params_analytic"] and line["params_match"] is True
    assert (line["batch"], line["latents"], line["remat"]) == (2, [2, 8, 8], "dots")
    assert line["tokens_per_clip"] == math.prod(line["grid"])
    for key in ("train_flops_per_step", "forward_flops", "activation_memory_bytes_estimate",
                "xla_forward_flops", "jax_residual_bytes"):
      assert isinstance(line[key], (int, float)) and math.isfinite(line[key]) and line[key] > 0
    assert 0.8 < line["analytic_over_xla"] <= 1.05, line["analytic_over_xla"]
  assert lines[0]["xla_method"] == "compiled at depth 2"
  assert lines[1]["xla_method"] == "extrapolated to depth 12 from depths 1 and 2"


def test_cli_rejects_a_bad_variant_before_any_work():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "vidgen.bench.flops", "--variants=tiny,Q/2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert result.stdout == ""
  assert "unknown variant 'Q/2'" in result.stderr


def test_cli_size_flags_override_every_variant():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  args = [sys.executable, "-m", "vidgen.bench.flops", "--variants=tiny", "--frames=2",
          "--height=8", "--width=8", "--text_len=8", "--channels=4"]
  result = subprocess.run(args + ["--dit_width=96", "--dit_depth=3", "--dit_heads=4"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  line = json.loads(result.stdout)
  assert (line["width"], line["depth"], line["heads"]) == (96, 3, 4)
  assert line["params"] == line["params_analytic"] and line["params_match"] is True
  bad = subprocess.run(args + ["--dit_width=96", "--dit_heads=5"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and bad.stdout == ""
  assert "the heads divide the width" in bad.stderr
