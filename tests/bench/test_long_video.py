"""`python -m vidgen.bench.long_video` on the smoke config: every JSON line and its form.

Only the output's form is checked (every scheme x multiple present, windows
as make_plan plans them, positive times and memory, growth lines, brute
force's table limit and memory lines): speed is measured by running the
benchmark, never by tests. Window 3 and multiples 1, 6 put brute force's
6x (18 latent frames) past the smoke DiT's 16-frame position table, so the
enlarged-table path runs too.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from vidgen.diffusion import long_video

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WINDOW, MULTIPLES, TABLE = 3, (1, 6), 16  # the smoke DiT: patch 1x2x2, 16 patch frames
ARGS = ["--config=configs/shapes/dit.py:smoke", "--height=32", "--width=32", f"--window={WINDOW}",
        "--multiples=" + ",".join(map(str, MULTIPLES)), "--steps=1", "--reps=1",
        "--brute_max_multiple=12", "--memory_budget_gb=64"]


def _positive(line: dict, keys: tuple[str, ...]) -> None:
  for key in keys:
    value = line[key]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
    assert math.isfinite(value) and value > 0, (key, value)


def _windows(scheme: str, frames: int) -> int:
  if scheme == "brute_force" or frames <= WINDOW:
    return 1
  return len(long_video.make_plan(scheme, frames, WINDOW, max_span=TABLE).steps)


def test_long_video_lines():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "vidgen.bench.long_video", *ARGS], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  lines = [json.loads(line) for line in result.stdout.splitlines()]  # every stdout line is JSON
  by_bench: dict[str, list[dict]] = {}
  for line in lines:
    by_bench.setdefault(line["bench"], []).append(line)

  cases = {(l["scheme"], l["multiple"]): l for l in by_bench["long_video"]}
  assert set(cases) == {(s, m) for s in long_video.SCHEMES for m in MULTIPLES}
  for (scheme, m), line in cases.items():
    frames = m * WINDOW
    assert line["ran"] and line["error"] is None, line
    assert line["latent_frames"] == frames and line["pixel_frames"] == 1 + (frames - 1) * 4
    assert line["windows"] == _windows(scheme, frames), line
    assert line["model_calls"] == 2 * line["windows"]  # 1 step, text guidance: 2 calls
    _positive(line, ("seconds", "seconds_per_window", "peak_rss_mb", "baseline_rss_mb",
                     "compile_seconds", "xla_temp_mb", "xla_argument_mb", "tokens_per_call"))
    assert len(line["seconds_all"]) == 1
    assert line["peak_rss_mb"] >= line["baseline_rss_mb"]
    if line["peak_reset"]:  # Linux: the high-water mark was reset before the timed runs
      assert isinstance(line["run_added_mb"], float), line
    assert line["call_latent_frames"] == (frames if scheme == "brute_force" else
                                          min(frames, WINDOW))
  brute = cases["brute_force", 6]
  assert brute["table"] == "enlarged" and brute["table_patch_frames"] == 18
  assert "position tables" in brute["table_error"]
  assert cases["brute_force", 1]["table"] == "config"
  assert cases["brute_force", 1]["table_error"] is None

  growth = {l["scheme"]: l for l in by_bench["long_video_growth"]}
  assert set(growth) == set(long_video.SCHEMES)
  for line in growth.values():
    assert line["latent_frames"] == [m * WINDOW for m in MULTIPLES]
    for key in ("seconds_per_latent_frame", "proportionality", "rss_growth_mb"):
      assert math.isfinite(line[key]), (key, line[key])
    assert line["linearity"] is None  # two lengths: nothing left to fit a line to

  (limit,) = by_bench["long_video_brute_force_limit"]
  assert limit["table_latent_frames"] == TABLE
  assert limit["first_failing_multiple"] == 6 and limit["first_failing_latent_frames"] == 18
  assert "position tables" in limit["error"]

  memory = by_bench["long_video_brute_force_memory"]
  assert [l["multiple"] for l in memory] == [1, 6, 12]
  for line in memory:
    _positive(line, ("xla_temp_mb", "xla_argument_mb", "compiled_mb", "compile_seconds"))
    assert line["fits_budget"] is True
  assert memory[-1]["xla_temp_mb"] > memory[0]["xla_temp_mb"]
  (budget,) = by_bench["long_video_brute_force_budget"]
  assert budget["memory_budget_gb"] == 64 and budget["first_over_budget_latent_frames"] is None
  assert budget["fits_up_to_latent_frames"] == 36
  assert budget["fit_bytes"] is not None and math.isfinite(budget["fit_rel_error_longest"])
  assert "EXTRAPOLATION" in budget["extrapolation"]["label"]
  assert budget["extrapolation"]["latent_frames"] > 36
