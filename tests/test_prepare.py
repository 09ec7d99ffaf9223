"""`python -m vidgen.prepare` end to end on the smoke config, through the app bootstrap."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vidgen.data import moving_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prepare(*args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "vidgen.prepare", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  work = tmp_path_factory.mktemp("prepare")
  config = os.path.join(ROOT, "configs/shapes/data.py") + ":smoke,objects=2"
  out = work / "export"
  result = _prepare(f"--config={config}", f"--workdir={work / 'w'}",
                    "--mode=build,tokenizer,export,sheet", "--split=holdout", "--num=6",
                    f"--out={out}", f"--config.data.data_dir={work / 'data'}",
                    "--config.data.num_workers=0", cwd=work)
  assert result.returncode == 0, result.stderr[-3000:]
  return work, out, result


def test_export_writes_npy_and_prompts_exactly(prepared):
  work, out, _ = prepared
  lines = [json.loads(l) for l in (out / "prompts.jsonl").read_text().splitlines()]
  assert [l["file"] for l in lines] == [f"{i}.npy" for i in range(6)]
  assert all(set(l) == {"file", "prompt"} for l in lines)
  cfg = moving_shapes.ShapesConfig(num_objects=2, holdout=(("red", "triangle"), ("cyan", "circle")))
  for i, line in enumerate(lines):
    video = np.load(out / line["file"])
    assert video.shape == (16, 64, 64, 3) and video.dtype == np.uint8
    expected = moving_shapes.example(cfg, "holdout", i)
    np.testing.assert_array_equal(video, expected["video"])
    assert line["prompt"] == expected["caption"]
    first = moving_shapes.parse_caption(line["prompt"])[0]
    assert (first["color"], first["shape"]) in cfg.holdout
  truth = [json.loads(l) for l in (out / "ground_truth.jsonl").read_text().splitlines()]
  assert len(truth) == 6 and truth[0]["objects"][0]["color"] in moving_shapes.COLORS


def test_bootstrap_logs_and_saves_the_resolved_config(prepared):
  work, _, result = prepared
  saved = json.loads((work / "w" / "config.json").read_text())
  assert saved["data"]["num_workers"] == 0  # the override took effect
  assert saved["data"]["shapes"]["num_objects"] == 2
  assert "resolved config" in result.stderr
  assert (work / "w" / "logs" / "log-process0.txt").exists()


def test_build_tokenizer_and_sheet_outputs(prepared):
  work, _, result = prepared
  assert (work / "data" / "tokenizer.model").exists()
  assert list((work / "data").rglob("*.array_record*"))
  assert (work / "w" / "contact_sheet.png").stat().st_size > 1000
  clips = sorted((work / "w" / "clips").glob("*.mp4"))
  assert len(clips) == 6
  assert "contact sheet:" in result.stdout


def test_records_source_reads_what_build_wrote(prepared):
  work, _, _ = prepared
  config = os.path.join(ROOT, "configs/shapes/data.py") + ":smoke,objects=2"
  result = _prepare(f"--config={config}", f"--workdir={work / 'w2'}", "--mode=sheet",
                    "--split=test", "--num=4", f"--config.data.data_dir={work / 'data'}",
                    "--config.data.source=shapes_records", "--config.data.num_workers=0",
                    cwd=work)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (work / "w2" / "contact_sheet.png").exists()


@pytest.mark.parametrize("flag,needle", [
    ("--config.data.num_workers=-3", "'data.num_workers' = -3"),
    ("--config.data.nope=1", "nope"),
    ("--config.data.buckets=16x64", "bad bucket"),
])
def test_bad_overrides_fail_before_any_work_naming_the_key(tmp_path, flag, needle):
  config = os.path.join(ROOT, "configs/shapes/data.py") + ":smoke"
  result = _prepare(f"--config={config}", "--mode=tokenizer", flag,
                    f"--config.data.data_dir={tmp_path / 'data'}", cwd=tmp_path)
  assert result.returncode != 0
  assert needle in result.stderr
  assert not (tmp_path / "data").exists()


def test_two_processes_join_through_jax_distributed(tmp_path):
  import portpicker
  port = portpicker.pick_unused_port()
  config = os.path.join(ROOT, "configs/shapes/data.py") + ":smoke"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "vidgen.prepare", f"--config={config}",
       f"--workdir={tmp_path / 'w'}", "--mode=export", "--num=2",
       f"--out={tmp_path / f'out{i}'}", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"],
      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for i, p in enumerate(procs):
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    log = (tmp_path / "w" / "logs" / f"log-process{i}.txt").read_text()
    assert f"jax.distributed: process {i} of 2" in log
  assert (tmp_path / "w" / "config.json").exists()  # written by process 0 only


def test_coordinator_flags_go_together(tmp_path):
  config = os.path.join(ROOT, "configs/shapes/data.py") + ":smoke"
  result = _prepare(f"--config={config}", "--mode=export", "--num_processes=2",
                    f"--out={tmp_path}", cwd=tmp_path)
  assert result.returncode != 0 and "go together" in result.stderr
