"""Tests of vidgen.data.video_folder: folder source, array_record build, TFDS source."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vidgen.data import clips, video_folder, video_io
from vidgen.data.clips import BadExample, Sampling

NEAR = Sampling(random_start=False)  # first frames, centre crop
RANDOM = Sampling(stride=1, random_start=True, random_crop=True)


# ---------------------------------------------------------------------------
# captions.jsonl


def test_read_captions(folder_case):
  skipped = []
  entries = video_folder.read_captions(folder_case.folder, skipped=skipped)
  assert [e["file"] for e in entries] == folder_case.files
  assert [e["caption"] for e in entries] == folder_case.captions
  assert all(isinstance(e["caption"], bytes) for e in entries)
  assert len(skipped) == folder_case.malformed_lines
  latin1 = entries[folder_case.key("clips/a.mp4", b"caf\xe9 in latin-1")]["caption"]
  with pytest.raises(UnicodeDecodeError):
    latin1.decode("utf-8")


def test_read_captions_edge_cases(tmp_path):
  lines = [
      b"\xef\xbb\xbf" + json.dumps({"file": "a.mp4", "caption": "with BOM"}).encode(),
      json.dumps({"file": "b.mp4"}).encode(),  # no caption -> b""
      json.dumps({"file": "c.mp4", "caption": None}).encode(),
      b'{"file": "d.mp4", "caption": "lone \\ud800 surrogate"}',
      json.dumps({"file": "e.mp4", "caption": 7}).encode(),  # skipped
      json.dumps({"file": "", "caption": "x"}).encode(),  # skipped
      b"   ",
      json.dumps({"file": "f.mp4", "caption": "crlf", "extra": 1}).encode(),
  ]
  (tmp_path / "captions.jsonl").write_bytes(b"\r\n".join(lines))
  skipped = []
  entries = video_folder.read_captions(tmp_path, skipped=skipped)
  assert [e["file"] for e in entries] == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "f.mp4"]
  assert entries[0]["caption"] == b"with BOM"
  assert entries[1]["caption"] == entries[2]["caption"] == b""
  with pytest.raises(UnicodeDecodeError):
    entries[3]["caption"].decode("utf-8")
  assert entries[4]["caption"] == b"crlf"
  assert len(skipped) == 2
  with pytest.raises(FileNotFoundError, match="captions.jsonl"):
    video_folder.read_captions(tmp_path / "nowhere")


# ---------------------------------------------------------------------------
# Folder source and array_record source.


@pytest.fixture(scope="module")
def sources(folder_case, built_folder):
  return {
      "folder": video_folder.VideoFolderSource(folder_case.folder),
      "records": video_folder.ArrayRecordVideoSource(
          built_folder.as_data_source()["train"]),
  }


@pytest.mark.parametrize("kind", ["folder", "records"])
def test_every_entry_gives_a_clip_or_its_reason(kind, sources, folder_case):
  source = sources[kind]
  assert len(source) == len(folder_case.files)
  for key, file in enumerate(folder_case.files):
    expected = folder_case.record_reason[key]
    if expected is not None:
      with pytest.raises(BadExample) as e:
        source.record(key)
      assert e.value.reason == expected, (file, e.value)
      assert file in str(e.value)
      continue
    record = source.record(key)
    info = source.info(record)
    assert info.num_frames >= 1 and info.height > 0 and info.width > 0
    expected = folder_case.clip_reason[key]
    if expected is not None:
      with pytest.raises(BadExample) as e:
        source.clip(record, 8, 32, 32, NEAR, np.random.default_rng(0))
      assert e.value.reason == expected, (file, e.value)
      continue
    out = source.clip(record, 8, 32, 32, NEAR, np.random.default_rng(0))
    assert set(out) == {"video", "caption", "file"}
    assert out["video"].shape == (8, 32, 32, 3) and out["video"].dtype == np.uint8
    assert out["video"].flags.c_contiguous
    assert out["caption"] == folder_case.captions[key]  # bytes, unchecked
    assert source.caption(record) == folder_case.captions[key]
    assert out["file"] == file


def test_builder_records_bad_files_without_crashing(built_folder, folder_case):
  rows = built_folder.as_data_source()["train"]
  assert len(rows) == len(folder_case.files)
  for key, file in enumerate(folder_case.files):
    row = rows[key]
    assert row["file"].decode() == file
    assert row["caption"] == folder_case.captions[key]
    assert row["error"].decode() == (folder_case.record_reason[key] or "")
    if folder_case.record_reason[key]:
      assert row["video_bytes"] == b"" and row["num_frames"] == 0
      assert row["error_detail"]
    else:
      info = video_io.probe(row["video_bytes"])
      assert (row["num_frames"], row["fps"], row["height"], row["width"]) == (
          info.num_frames, info.fps, info.height, info.width)
  counts = built_folder.build_counts
  assert counts == {"ok": 11, "corrupt": 2, "zero_byte": 1, "missing_file": 1,
                    "malformed_lines": folder_case.malformed_lines}


@pytest.mark.parametrize("shape", [(8, 32, 32), (4, 40, 24), (6, 16, 64), (2, 96, 80)])
@pytest.mark.parametrize("sampling", [NEAR, RANDOM, Sampling(stride=2, random_crop=True),
                                      Sampling(fps=5.0)], ids=["near", "random", "stride2", "fps5"])
def test_folder_and_records_agree_exactly(shape, sampling, sources, folder_case):
  t, h, w = shape
  compared = 0
  for key in range(len(folder_case.files)):
    try:
      a_rec = sources["folder"].record(key)
    except BadExample:
      continue
    b_rec = sources["records"].record(key)
    assert a_rec == b_rec
    for seed in range(2):
      try:
        a = sources["folder"].clip(a_rec, t, h, w, sampling, np.random.default_rng(seed))
      except BadExample as e:
        with pytest.raises(BadExample) as e2:
          sources["records"].clip(b_rec, t, h, w, sampling, np.random.default_rng(seed))
        assert e2.value.reason == e.reason
        continue
      b = sources["records"].clip(b_rec, t, h, w, sampling, np.random.default_rng(seed))
      np.testing.assert_array_equal(a["video"], b["video"])
      assert a["caption"] == b["caption"] and a["file"] == b["file"]
      compared += 1
  assert compared >= 8


def test_clip_frames_follow_sampling(sources, folder_case, helpers):
  source = sources["folder"]
  key = folder_case.key("clips/a.mp4")
  original = folder_case.originals["clips/a.mp4"]  # 16 frames, 48x64, 10 fps
  record = source.record(key)
  out = source.clip(record, 8, 48, 64, Sampling(stride=2, random_start=False),
                    np.random.default_rng(0))["video"]
  assert helpers.frame_ids(out, original) == list(range(0, 16, 2))
  assert helpers.psnr(out, original[0:16:2]) > 30
  out = source.clip(record, 4, 48, 64, Sampling(fps=2.5, random_start=False),
                    np.random.default_rng(0))["video"]  # 10 fps / 2.5 fps: every 4th
  assert helpers.frame_ids(out, original) == [0, 4, 8, 12]
  starts = set()
  for seed in range(20):
    out = source.clip(record, 4, 48, 64, RANDOM, np.random.default_rng(seed))["video"]
    ids = helpers.frame_ids(out, original)
    assert ids == list(range(ids[0], ids[0] + 4))
    starts.add(ids[0])
  assert len(starts) > 3


@pytest.mark.parametrize("out_hw", [(32, 32), (40, 24), (16, 64), (96, 80), (48, 64)])
def test_non_square_resize_and_crop(out_hw, sources, folder_case):
  """Cover-resize then crop, like clips.resize_and_crop on the decoded frames."""
  h, w = out_hw
  source = sources["folder"]
  record = source.record(folder_case.key("clips/a.mp4"))  # 48x64
  indices = clips.sample_frame_indices(record.info, 4, NEAR, np.random.default_rng(0))
  full = video_io.decode(record.data, indices)
  ref = clips.resize_and_crop(full, h, w)
  got = source.clip(record, 4, h, w, NEAR, np.random.default_rng(0))["video"]
  assert got.shape == (4, h, w, 3)
  diff = np.abs(got.astype(int) - ref.astype(int)).mean()
  assert diff < 3.0, diff
  # Random crops: the offsets move and each crop is a window of the cover-resized frames.
  rh, rw = clips.cover_size(48, 64, h, w)
  cover = video_io.decode(record.data, indices, size=(rh, rw))
  offsets = set()
  for seed in range(12):
    rng = np.random.default_rng(seed)
    got = source.clip(record, 4, h, w, Sampling(random_start=False, random_crop=True), rng)
    rng = np.random.default_rng(seed)
    clips.sample_frame_indices(record.info, 4, NEAR, rng)
    y, x = clips.crop_offsets(rh, rw, h, w, True, rng) if (48, 64) != (h, w) else (0, 0)
    np.testing.assert_array_equal(got["video"], cover[:, y : y + h, x : x + w])
    offsets.add((y, x))
  assert len(offsets) > 1 or (rh, rw) == (h, w)


def test_images_are_one_frame_clips(sources, folder_case):
  for file in ("images/e.png", "images/f.jpg"):
    for kind in ("folder", "records"):
      record = sources[kind].record(folder_case.key(file))
      assert sources[kind].info(record) == clips.ClipInfo(1, 0.0, 40, 56)
      out = sources[kind].clip(record, 1, 32, 32, RANDOM, np.random.default_rng(1))
      assert out["video"].shape == (1, 32, 32, 3)


def test_truncated_after_header_gives_real_frames_or_a_reason(sources, folder_case):
  key = folder_case.key("bad/truncated_faststart.mp4")
  for kind in ("folder", "records"):
    source = sources[kind]
    record = source.record(key)
    assert record.info.num_frames == 24  # what the header promises
    out = source.clip(record, 4, 48, 64, NEAR, np.random.default_rng(0))["video"]
    assert (out.reshape(4, -1).max(axis=1) > 0).all()
    for t, sampling in ((24, NEAR), (12, Sampling(stride=2, random_start=False))):
      with pytest.raises(BadExample) as e:
        source.clip(record, t, 48, 64, sampling, np.random.default_rng(0))
      assert e.value.reason in (clips.TOO_FEW_FRAMES, clips.CORRUPT)
      assert "truncated_faststart" in str(e.value)


def test_verified_build_counts_decodable_frames(folder_case, tmp_path):
  builder = video_folder.VideoFolder(folder=folder_case.folder, data_dir=str(tmp_path),
                                     verify=True)
  builder.download_and_prepare()
  source = video_folder.ArrayRecordVideoSource(builder.as_data_source()["train"])
  record = source.record(folder_case.key("bad/truncated_faststart.mp4"))
  n = record.info.num_frames
  assert 0 < n < 24
  out = source.clip(record, n, 48, 64, NEAR, np.random.default_rng(0))["video"]
  assert len(out) == n
  good = source.record(folder_case.key("clips/a.mp4"))
  assert good.info.num_frames == 16


def test_sources_pickle(sources, folder_case):
  key = folder_case.key("clips/b.webm")
  for source in sources.values():
    copy = pickle.loads(pickle.dumps(source))
    assert len(copy) == len(source)
    a = source.clip(source.record(key), 4, 24, 24, RANDOM, np.random.default_rng(3))
    b = copy.clip(copy.record(key), 4, 24, 24, RANDOM, np.random.default_rng(3))
    np.testing.assert_array_equal(a["video"], b["video"])


def test_builder_pickles(built_folder, folder_case):
  copy = pickle.loads(pickle.dumps(built_folder))
  assert copy.builder_config.name == built_folder.builder_config.name
  assert len(copy.as_data_source()["train"]) == len(folder_case.files)


def test_config_names_keep_folders_apart(tmp_path):
  a = video_folder.folder_config_name(tmp_path / "x" / "My Videos!")
  b = video_folder.folder_config_name(tmp_path / "y" / "My Videos!")
  assert a != b and a.startswith("my_videos_") and b.startswith("my_videos_")
  assert video_folder.folder_config_name(tmp_path / "x" / "My Videos!" / "") == a
  assert video_folder.folder_config_name("relative/../vids") == (
      video_folder.folder_config_name(pathlib.Path("vids").absolute()))


def test_built_data_set_reads_by_name(built_folder, folder_case):
  data_dir = pathlib.Path(str(built_folder.data_dir)).parents[2]
  name = f"video_folder/{video_folder.folder_config_name(folder_case.folder)}"
  by_name = video_folder.ArrayRecordVideoSource(
      tfds.data_source(name, split="train", data_dir=str(data_dir), download=False))
  direct = video_folder.ArrayRecordVideoSource.from_folder(folder_case.folder, data_dir)
  assert len(by_name) == len(direct) == len(folder_case.files)
  key = folder_case.key("clips/c.avi")
  a = by_name.clip(by_name.record(key), 4, 16, 16, NEAR, np.random.default_rng(0))
  b = direct.clip(direct.record(key), 4, 16, 16, NEAR, np.random.default_rng(0))
  np.testing.assert_array_equal(a["video"], b["video"])


def test_builder_needs_a_folder_to_build(tmp_path):
  with pytest.raises(ValueError, match="folder"):
    video_folder.VideoFolder(data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="folder="):
    video_folder.VideoFolder(config="nothing_here", data_dir=str(tmp_path)).download_and_prepare()


# ---------------------------------------------------------------------------
# TfdsVideoSource on a small TFDS data set built here.

LABELS = ["jump", "run", "wave"]
TOY_SHAPES = [(12, 48, 64), (10, 40, 40), (16, 36, 60), (1, 30, 20), (3, 32, 32)]


class VidgenToyActions(tfds.core.GeneratorBasedBuilder):
  """Toy action-recognition data set: the same clips stored three ways."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Toy."}

  def __init__(self, *, make_frames=None, **kwargs):
    self._make_frames = make_frames  # Only needed to build.
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(
                shape=(None, None, None, 3), dtype=np.uint8, encoding="bytes"),
            "video_file": tfds.features.Tensor(shape=(), dtype=np.object_),
            "video_pngs": tfds.features.Tensor(shape=(None,), dtype=np.object_),
            "grey": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8,
                                         encoding="bytes"),
            "label": tfds.features.ClassLabel(names=LABELS),
            "caption": tfds.features.Text(),
            "fps": tfds.features.Scalar(dtype=np.float32),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0), "test": self._generate_examples(1)}

  def _generate_examples(self, seed):
    for i, (t, h, w) in enumerate(TOY_SHAPES):
      frames = self._make_frames(t, h, w, seed=10 * seed + i)
      yield i, {
          "video": frames,
          "video_file": video_io.encode(frames, 8.0, "mp4") if t > 1 else
                        video_io.encode_image(frames[0]),
          "video_pngs": np.array([video_io.encode_image(f) for f in frames], dtype=object),
          "grey": frames[..., 1],
          "label": i % len(LABELS),
          "caption": f"toy clip {i}",
          "fps": 8.0,
      }


@pytest.fixture(scope="module")
def toy_data_dir(tmp_path_factory, helpers):
  data_dir = tmp_path_factory.mktemp("toy_tfds")
  VidgenToyActions(data_dir=str(data_dir), file_format="array_record",
                   make_frames=helpers.make_frames).download_and_prepare()
  return str(data_dir)


def test_toy_builder_is_found_by_name(toy_data_dir):
  ds = tfds.data_source("vidgen_toy_actions", split="train", data_dir=toy_data_dir,
                        download=False)
  assert len(ds) == len(TOY_SHAPES)


def test_tfds_source_label_captions(toy_data_dir):
  source = video_folder.TfdsVideoSource(
      "vidgen_toy_actions:1.0.0", split="train", data_dir=toy_data_dir, label_key="label",
      caption_template="a video of {label}")
  assert len(source) == len(TOY_SHAPES)
  assert source.label_names == LABELS
  for key, (t, h, w) in enumerate(TOY_SHAPES):
    record = source.record(key)
    assert source.info(record) == clips.ClipInfo(t, 25.0 if t > 1 else 0.0, h, w)
    want = f"a video of {LABELS[key % 3]}".encode()
    n = min(t, 2)
    out = source.clip(record, n, 24, 32, RANDOM, np.random.default_rng(key))
    assert out["video"].shape == (n, 24, 32, 3)
    assert out["caption"] == source.caption(record) == want
    assert out["file"] == f"vidgen_toy_actions:1.0.0[train]#{key}"


def test_tfds_source_decoded_frames_match_resize_and_crop(toy_data_dir, helpers):
  source = video_folder.TfdsVideoSource(
      "vidgen_toy_actions", split="test", data_dir=toy_data_dir, caption_key="caption",
      fps_key="fps")
  record = source.record(0)
  original = helpers.make_frames(*TOY_SHAPES[0], seed=10)
  assert record.info == clips.ClipInfo(12, 8.0, 48, 64)
  np.testing.assert_array_equal(record.frames, original)
  sampling = Sampling(fps=4.0, random_start=True, random_crop=True)  # stride 2
  for seed in range(3):
    out = source.clip(record, 5, 40, 24, sampling, np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    idx = clips.sample_frame_indices(record.info, 5, sampling, rng)
    np.testing.assert_array_equal(
        out["video"], clips.resize_and_crop(original[idx], 40, 24, True, rng))
    assert out["caption"] == b"toy clip 0"
  with pytest.raises(BadExample) as e:
    source.clip(source.record(4), 8, 16, 16, NEAR, np.random.default_rng(0))
  assert e.value.reason == clips.TOO_FEW_FRAMES


def test_tfds_source_encoded_videos(toy_data_dir, helpers):
  kwargs = dict(split="train", data_dir=toy_data_dir, caption_key="caption")
  decoded = video_folder.TfdsVideoSource("vidgen_toy_actions", **kwargs)
  encoded = video_folder.TfdsVideoSource("vidgen_toy_actions", video_key="video_file", **kwargs)
  pngs = video_folder.TfdsVideoSource("vidgen_toy_actions", video_key="video_pngs", **kwargs)
  grey = video_folder.TfdsVideoSource("vidgen_toy_actions", video_key="grey", **kwargs)
  for key, (t, h, w) in enumerate(TOY_SHAPES):
    n = min(t, 3)
    outs = {}
    for name, source in (("decoded", decoded), ("encoded", encoded), ("pngs", pngs),
                         ("grey", grey)):
      record = source.record(key)
      info = source.info(record)
      assert (info.num_frames, info.height, info.width) == (t, h, w), name
      outs[name] = source.clip(record, n, 20, 28, NEAR, np.random.default_rng(0))["video"]
      assert outs[name].shape == (n, 20, 28, 3)
    # PNG frames are lossless and resized by the same PIL filters: identical.
    np.testing.assert_array_equal(outs["pngs"], outs["decoded"])
    assert helpers.psnr(outs["encoded"], outs["decoded"]) > 28
    np.testing.assert_array_equal(outs["grey"][..., 0], outs["grey"][..., 2])
  # The mp4's own frame rate wins over the default.
  assert encoded.info(encoded.record(0)).fps == 8.0


def test_tfds_source_pickles(toy_data_dir):
  source = video_folder.TfdsVideoSource(
      "vidgen_toy_actions", data_dir=toy_data_dir, video_key="video_file", label_key="label")
  len(source)
  copy = pickle.loads(pickle.dumps(source))
  assert copy._source is None  # reopened lazily in the worker
  a = source.clip(source.record(2), 4, 16, 16, RANDOM, np.random.default_rng(5))
  b = copy.clip(copy.record(2), 4, 16, 16, RANDOM, np.random.default_rng(5))
  np.testing.assert_array_equal(a["video"], b["video"])
  assert a["caption"] == b["caption"] == b"a video of wave"


def test_tfds_source_errors(toy_data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="never downloads"):
    video_folder.TfdsVideoSource("vidgen_toy_actions", data_dir=str(tmp_path),
                                 label_key="label")
  with pytest.raises(ValueError, match="exactly one"):
    video_folder.TfdsVideoSource("vidgen_toy_actions", data_dir=toy_data_dir)
  with pytest.raises(ValueError, match="exactly one"):
    video_folder.TfdsVideoSource("vidgen_toy_actions", data_dir=toy_data_dir,
                                 label_key="label", caption_key="caption")
  with pytest.raises(ValueError, match="no feature 'clip'"):
    video_folder.TfdsVideoSource("vidgen_toy_actions", data_dir=toy_data_dir,
                                 video_key="clip", label_key="label")


@pytest.mark.parametrize("caption_key,want", [("", b"a video of "), ("caption", b"toy clip ")])
def test_tfds_source_from_a_config(toy_data_dir, caption_key, want):
  from vidgen import configlib
  from vidgen.data import pipeline
  config = configlib.base_config()
  config.data.source = "tfds:vidgen_toy_actions"
  config.data.data_dir = str(toy_data_dir)
  config.data.tfds.caption_key = caption_key  # label_key stays at its default
  configlib.validate(config)
  source = pipeline.make_source(config.data, "train")
  assert source.caption(source.record(0)).startswith(want)
