"""Bring your own videos: `vidgen.prepare` on a folder with good and bad files."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_build_tokenizer_export_and_sheet_from_a_video_folder(folder_case, tmp_path):
  config = os.path.join(ROOT, "configs/folder/data.py") + f":folder={folder_case.folder}"
  out = tmp_path / "export"
  result = subprocess.run(
      [sys.executable, "-m", "vidgen.prepare", f"--config={config}",
       f"--workdir={tmp_path / 'w'}", "--mode=build,tokenizer,export,sheet", "--num=3",
       f"--out={out}", f"--config.data.data_dir={tmp_path / 'data'}",
       "--config.data.num_workers=0", "--config.data.buckets=8x32x32:3,1x32x32:2",
       "--config.data.max_bad_fraction=0.9", "--config.data.sampling.fps=0"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / "data" / "tokenizer.model").exists()
  assert (tmp_path / "w" / "contact_sheet.png").exists()
  lines = [json.loads(l) for l in (out / "prompts.jsonl").read_text().splitlines()]
  assert len(lines) == 3 and all(set(l) == {"file", "prompt"} for l in lines)
  assert lines[0]["prompt"] == "a red square slides right"
  for line in lines:
    import numpy as np
    video = np.load(out / line["file"])
    assert video.shape == (8, 32, 32, 3) and video.dtype == np.uint8
