"""Scoring generated videos: alignment, consistency and pixel checks with a stand-in captioner."""

from __future__ import annotations

import numpy as np

from vidgen.data import moving_shapes as ms
from vidgen.eval import generated


def _clips(n=3, frames=9, size=32):
  cfg = ms.ShapesConfig(height=size, width=size, frames=frames, num_objects=1)
  objects = [ms.sample_objects(cfg, "test", i) for i in range(n)]
  return [ms.render(o, frames, size, size) for o in objects], [ms.caption(o) for o in objects]


def test_a_captioner_that_reads_the_truth_scores_every_attribute_right():
  videos, prompts = _clips()
  truth = {v.tobytes(): p for v, p in zip(videos, prompts)}
  seen_shapes = []

  def caption(batch):
    seen_shapes.append(batch.shape)
    # Whole clips are looked up; parts get the caption of the clip they came from.
    return [truth.get(c.tobytes()) or next(p for v, p in zip(videos, prompts)
                                           if (v[:len(c)] == c).all() or (v[-len(c):] == c).all())
            for c in batch]

  results = generated.evaluate_videos(videos, prompts, caption, (9, 32, 32), chunks=2)
  summary = generated.summarize(results)
  assert summary["videos"] == 3 and summary["alignment"]["exact"] == 1.0
  assert summary["consistent"] == 1.0 and summary["consistent_pixels"] == 1.0
  assert summary["pixels"]["color"] == 1.0
  assert seen_shapes == [(3, 9, 32, 32, 3), (6, 4, 32, 32, 3)]  # wholes, then 2 parts each


def test_a_captioner_that_changes_its_mind_is_inconsistent():
  videos, prompts = _clips(2)
  other = "a small blue circle staying still"
  calls = []

  def caption(batch):
    calls.append(len(batch))
    if len(calls) == 1:
      return list(prompts)
    return [prompts[i // 2] if i % 2 == 0 else other for i in range(len(batch))]

  results = generated.evaluate_videos(videos, prompts, caption, (9, 32, 32), chunks=2)
  assert all(r["alignment"]["exact"] for r in results)
  assert not any(r["consistent"] for r in results)


def test_free_text_prompts_get_exact_match_only(tmp_path):
  videos = [np.zeros((5, 16, 16, 3), np.uint8)] * 2
  prompts = ["a cat on a sofa", "waves at sunset"]
  results = generated.evaluate_videos(videos, prompts, lambda b: ["a cat on a sofa"] * len(b),
                                      (4, 16, 16), chunks=2)
  assert [r["alignment"] for r in results] == [{"exact": True}, {"exact": False}]
  assert all(r["consistent"] for r in results) and "pixels" not in results[0]
  page = generated.write_page(str(tmp_path), [dict(r, file=f"{i}.mp4") for i, r in
                                              enumerate(results)], videos,
                              generated.summarize(results))
  assert "waves at sunset" in open(page).read()
