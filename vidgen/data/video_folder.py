"""Bring your own videos: a folder of files, its array_record build, and TFDS data sets.

A video folder holds video files (mp4, webm, avi, gif; png/jpg images are
one-frame clips) anywhere below it, plus `captions.jsonl`, one JSON object a
line:

    {"file": "relative/path.mp4", "caption": "a dog runs on the beach"}

Three `clips.ClipSource`s read such data:

* `VideoFolderSource(folder)`: reads the folder directly (no build step).
* `ArrayRecordVideoSource`: reads the array_record data set the `VideoFolder`
  TFDS builder wrote from a folder (`ArrayRecordVideoSource.from_folder`
  builds it on first use). The build stores each file's bytes and probed
  metadata, and records bad files with their reason instead of failing.
* `TfdsVideoSource(name)`: any TFDS video data set already prepared in a local
  data_dir, video stored decoded (uint8 frames), encoded (file bytes) or as
  one encoded image per frame.

All three turn a record into a clip the same way: pick frame indices with
`clips.sample_frame_indices`, decode only those frames (encoded sources
decode straight to the cover size with swscale, see `video_io.decode`), and
crop as `clips.resize_and_crop` does. Captions pass through as bytes;
checking them (empty, not UTF-8, too long) is the pipeline's job.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from vidgen.data import clips, video_io
from vidgen.data.clips import (
    CORRUPT,
    MISSING_FILE,
    REASONS,
    ZERO_BYTE,
    BadExample,
    ClipInfo,
    Sampling,
)

CAPTIONS_FILE = "captions.jsonl"
_UTF8_BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------------------
# captions.jsonl


def _to_bytes(text: str) -> bytes:
  """Undoes the surrogateescape decoding of `read_captions`: the raw bytes."""
  try:
    return text.encode("utf-8", "surrogateescape")
  except UnicodeEncodeError:  # A JSON escape like "\ud800": keep it, invalid.
    return text.encode("utf-8", "surrogatepass")


def read_captions(
    folder: str | os.PathLike[str],
    filename: str = CAPTIONS_FILE,
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
  """Reads `folder/filename` (JSON lines) into [{'file': str, 'caption': bytes}].

  The file is read as bytes and parsed line by line. A caption that is not
  valid UTF-8 keeps its raw bytes (the pipeline later skips it as
  BAD_CAPTION_ENCODING); a missing or null caption becomes b"" (skipped as
  EMPTY_CAPTION). Lines that are not JSON objects with a string "file" and a
  string (or null) "caption" are skipped and logged, never fatal.

  Args:
    folder: the video folder.
    filename: the captions file inside it.
    skipped: if given, a description of each skipped line is appended.

  Raises:
    FileNotFoundError if the captions file does not exist.
  """
  path = os.path.join(os.fspath(folder), filename)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: a video folder needs a {filename} with lines like "
        '{"file": "clips/a.mp4", "caption": "a dog runs on the beach"}'
    )
  with open(path, "rb") as f:
    raw = f.read()
  entries = []
  bad = []
  for lineno, line in enumerate(raw.splitlines(), start=1):
    if lineno == 1 and line.startswith(_UTF8_BOM):
      line = line[len(_UTF8_BOM):]
    if not line.strip():
      continue
    try:
      obj = json.loads(line.decode("utf-8", "surrogateescape"))
    except ValueError as e:
      bad.append(f"{filename}:{lineno}: not JSON ({e})")
      continue
    if not isinstance(obj, dict) or not isinstance(obj.get("file"), str) or not obj["file"]:
      bad.append(f"{filename}:{lineno}: needs a JSON object with a non-empty string 'file'")
      continue
    caption = obj.get("caption")
    if caption is None:
      caption = ""
    if not isinstance(caption, str):
      bad.append(f"{filename}:{lineno}: 'caption' is {type(caption).__name__}, not a string")
      continue
    entries.append({"file": obj["file"], "caption": _to_bytes(caption)})
  if bad:
    logging.warning(
        "%s: skipped %d malformed line(s) of %d, e.g. %s", path, len(bad),
        len(entries) + len(bad), bad[0],
    )
  if skipped is not None:
    skipped.extend(bad)
  return entries


def read_file(path: str) -> bytes:
  """The bytes of `path`; BadExample(MISSING_FILE) if unreadable, ZERO_BYTE if empty."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:  # Not found, a directory, no permission, I/O error.
    raise BadExample(MISSING_FILE, f"{path}: {type(e).__name__}: {e.strerror or e}") from e
  if not data:
    raise BadExample(ZERO_BYTE, path)
  return data


# ---------------------------------------------------------------------------
# Records to clips (shared by every source here).


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """An encoded video (or image) and what is known about it before decoding.

  Attributes:
    file: path relative to the folder (or another name for the example).
    caption: caption bytes, unchecked (may be empty or not UTF-8).
    data: the encoded file's bytes.
    info: its probed metadata.
  """

  file: str
  caption: bytes
  data: bytes
  info: ClipInfo


@dataclasses.dataclass(frozen=True)
class FramesRecord:
  """A video stored decoded (e.g. a TFDS uint8 Tensor feature).

  Attributes:
    file: a name for the example (for logs).
    caption: caption bytes, unchecked.
    frames: (T, H, W, 3) uint8.
    info: its metadata (fps from the data set or a default).
  """

  file: str
  caption: bytes
  frames: np.ndarray
  info: ClipInfo


@dataclasses.dataclass(frozen=True)
class ImageFramesRecord:
  """A video stored as one encoded image (PNG/JPEG) per frame.

  Attributes:
    file: a name for the example (for logs).
    caption: caption bytes, unchecked.
    frames: (T,) object array of image bytes.
    info: its metadata (size from the first frame, fps from the data set or a default).
  """

  file: str
  caption: bytes
  frames: np.ndarray
  info: ClipInfo


def clip_from_bytes(
    data: bytes, info: ClipInfo, num_frames: int, height: int, width: int,
    sampling: Sampling, rng: np.random.Generator, threads: int = 1,
) -> np.ndarray:
  """(num_frames, height, width, 3) uint8 from an encoded video.

  Same frames and geometry as `clips.resize_and_crop` on the fully decoded
  sampled frames (cover-resize, then centre or random crop, using `rng` in the
  same order), but only the sampled frames are decoded, and they are resized
  to the cover size by swscale while being converted to RGB.

  Raises:
    BadExample(TOO_FEW_FRAMES | CORRUPT ...).
  """
  indices = clips.sample_frame_indices(info, num_frames, sampling, rng)
  if (info.height, info.width) == (height, width):
    return video_io.decode(data, indices, size=(height, width), threads=threads)
  rh, rw = clips.cover_size(info.height, info.width, height, width)
  video = video_io.decode(data, indices, size=(rh, rw), threads=threads)
  y, x = clips.crop_offsets(rh, rw, height, width, sampling.random_crop, rng)
  return np.ascontiguousarray(video[:, y : y + height, x : x + width])


def clip_from_frames(
    frames: np.ndarray, info: ClipInfo, num_frames: int, height: int, width: int,
    sampling: Sampling, rng: np.random.Generator,
) -> np.ndarray:
  """(num_frames, height, width, 3) uint8 from decoded (T, H, W, 3) frames."""
  indices = clips.sample_frame_indices(info, num_frames, sampling, rng)
  return clips.resize_and_crop(frames[indices], height, width, sampling.random_crop, rng)


def clip_from_images(
    images: np.ndarray, info: ClipInfo, num_frames: int, height: int, width: int,
    sampling: Sampling, rng: np.random.Generator,
) -> np.ndarray:
  """(num_frames, height, width, 3) uint8 from per-frame image bytes.

  Decodes only the sampled frames, each straight to the cover size.
  """
  indices = clips.sample_frame_indices(info, num_frames, sampling, rng)
  rh, rw = clips.cover_size(info.height, info.width, height, width)
  decoded = {
      i: video_io.decode(_as_bytes(images[i]), size=(rh, rw))[0]
      for i in dict.fromkeys(indices.tolist())
  }
  video = np.stack([decoded[i] for i in indices.tolist()])
  if (info.height, info.width) != (height, width):
    y, x = clips.crop_offsets(rh, rw, height, width, sampling.random_crop, rng)
    video = video[:, y : y + height, x : x + width]
  return np.ascontiguousarray(video)


def _record_clip(
    record: Record, num_frames: int,
    height: int, width: int, sampling: Sampling, rng: np.random.Generator,
    threads: int,
) -> dict[str, Any]:
  if isinstance(record, FramesRecord):
    video = clip_from_frames(record.frames, record.info, num_frames, height, width,
                             sampling, rng)
  elif isinstance(record, ImageFramesRecord):
    video = clip_from_images(record.frames, record.info, num_frames, height, width,
                             sampling, rng)
  else:
    video = clip_from_bytes(record.data, record.info, num_frames, height, width,
                            sampling, rng, threads)
  return {"video": video, "caption": record.caption, "file": record.file}


# ---------------------------------------------------------------------------
# A folder, read directly.


Record = VideoRecord | FramesRecord | ImageFramesRecord


class _RecordSource:
  """What every source here shares: `record()` gives a `Record`, read the same way."""

  threads: int

  def info(self, record: Record) -> ClipInfo:
    return record.info

  def caption(self, record: Record) -> bytes:
    """The record's caption bytes, unchecked (cheap: no decoding)."""
    return record.caption

  def clip(
      self, record: Record, num_frames: int, height: int, width: int,
      sampling: Sampling, rng: np.random.Generator,
  ) -> dict[str, Any]:
    """{'video': (T, H, W, 3) uint8, 'caption': bytes, 'file': str}."""
    return _with_file(record.file, _record_clip, record, num_frames, height, width,
                      sampling, rng, self.threads)


class VideoFolderSource(_RecordSource):
  """ClipSource over a video folder with `captions.jsonl`, read directly.

  Keys index the valid lines of `captions.jsonl` in file order. Picklable
  (the parsed caption list travels with it to Grain workers).

  Attributes:
    folder: the folder.
    entries: [{'file': str, 'caption': bytes}] from `read_captions`.
    skipped_lines: descriptions of malformed caption lines left out.
    count_packets: passed to `video_io.probe`.
    threads: decoder threads (see `video_io.decode`).
  """

  def __init__(
      self, folder: str | os.PathLike[str], captions_file: str = CAPTIONS_FILE,
      count_packets: bool = False, threads: int = 1,
  ):
    self.folder = os.fspath(folder)
    self.skipped_lines: list[str] = []
    self.entries = read_captions(self.folder, captions_file, self.skipped_lines)
    self.count_packets = count_packets
    self.threads = threads

  def __len__(self) -> int:
    return len(self.entries)

  def __repr__(self) -> str:
    return f"VideoFolderSource({self.folder!r}, {len(self)} clips)"

  def path(self, key: int) -> str:
    return os.path.join(self.folder, self.entries[int(key)]["file"])

  def record(self, key: int) -> VideoRecord:
    """Reads and probes the file. Raises BadExample(MISSING_FILE | ZERO_BYTE | CORRUPT)."""
    entry = self.entries[int(key)]
    data = read_file(self.path(key))
    try:
      info = video_io.probe(data, count_packets=self.count_packets)
    except BadExample as e:
      raise _named(e, entry["file"]) from None
    return VideoRecord(file=entry["file"], caption=entry["caption"], data=data, info=info)


def _named(e: BadExample, file: str) -> BadExample:
  """`e`, its detail naming `file` (once)."""
  if file in e.detail:
    return e
  return BadExample(e.reason, f"{file}: {e.detail}" if e.detail else file)


def _with_file(file: str, fn, *args) -> Any:
  """Calls fn(*args), naming `file` in any BadExample it raises."""
  try:
    return fn(*args)
  except BadExample as e:
    raise _named(e, file) from None


# ---------------------------------------------------------------------------
# The TFDS builder: a folder -> array_record.


def folder_config_name(folder: str | os.PathLike[str]) -> str:
  """Config name for a folder: its basename and a short hash of its absolute path."""
  path = os.path.abspath(os.fspath(folder))
  base = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path.rstrip(os.sep)).lower())
  base = base.strip("_")[:40] or "folder"
  digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
  return f"{base}_{digest}"


class VideoFolder(tfds.core.GeneratorBasedBuilder):
  """A video folder as an array_record TFDS data set (one split, 'train').

  Build: `VideoFolder(folder=..., data_dir=...).download_and_prepare()`. The
  config name is `folder_config_name(folder)`, so folders do not collide in one
  data_dir. Read back with `builder.as_data_source()['train']`, or by name
  without the folder: `tfds.data_source('video_folder/<config>', ...)`.

  Bad files never stop the build: each example carries `error` ('' or a
  `clips.REASONS` name found at build time: missing_file, zero_byte, corrupt)
  and `error_detail`; bad rows store no video bytes. Caption bytes are stored
  as they are (non-UTF-8 ones included) for the pipeline to check.

  Features: video_bytes (bytes), caption (bytes), file (text), num_frames
  (int32), fps (float64, so clip sampling matches `VideoFolderSource`
  exactly), height, width (int32), error, error_detail (text).

  Attributes:
    build_counts: after a build in this process, examples by outcome ('ok' or
      a reason) plus 'malformed_lines' of captions.jsonl (also logged).

  A changed folder needs a new data_dir or
  `download_config=tfds.download.DownloadConfig(download_mode=
  tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)`: a prepared config is
  never regenerated by itself.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(
      self, *, folder: str | os.PathLike[str] | None = None,
      config: str | tfds.core.BuilderConfig | None = None,
      captions_file: str = CAPTIONS_FILE, count_packets: bool = False,
      verify: bool = False, **kwargs,
  ):
    """Args:

      folder: the video folder (needed to build; not to read a built one).
      config: instead of `folder`, the config name of a built folder.
      captions_file: the captions file in the folder.
      count_packets: count frames by demuxing (see `video_io.probe`).
      verify: decode every file at build time (`video_io.count_decodable_frames`,
        slower): files where no frame decodes are recorded as corrupt, and
        `num_frames` is the number of frames that really decode (a truncated
        file keeps its good frames instead of failing at training time).
      **kwargs: for `tfds.core.DatasetBuilder` (data_dir, ...); file_format
        defaults to array_record.
    """
    if folder is not None:
      self._folder = os.path.abspath(os.fspath(folder))
      config = tfds.core.BuilderConfig(
          name=folder_config_name(self._folder), description=f"Videos in {self._folder}")
    elif isinstance(config, str):
      self._folder = None
      config = tfds.core.BuilderConfig(name=config)
    elif isinstance(config, tfds.core.BuilderConfig):
      self._folder = None
    else:
      raise ValueError("VideoFolder needs folder= (to build) or config= (to read)")
    self._captions_file = captions_file
    self._count_packets = count_packets
    self._verify = verify
    kwargs.setdefault("file_format", "array_record")
    super().__init__(config=config, **kwargs)

  def __getstate__(self) -> dict[str, Any]:
    state = dict(super().__getstate__())
    state["_vidgen"] = dict(folder=self._folder, captions_file=self._captions_file,
                            count_packets=self._count_packets, verify=self._verify)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    kwargs = dict(state["_original_state"])
    extra = state.get("_vidgen", {})
    if extra.get("folder"):
      kwargs.pop("config", None)  # Derived from the folder again.
    self.__init__(**kwargs, **extra)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Videos and captions from a folder (captions.jsonl).",
        features=tfds.features.FeaturesDict({
            "video_bytes": tfds.features.Tensor(shape=(), dtype=np.object_),
            "caption": tfds.features.Tensor(shape=(), dtype=np.object_),
            "file": tfds.features.Text(),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
            "fps": tfds.features.Scalar(dtype=np.float64),
            "height": tfds.features.Scalar(dtype=np.int32),
            "width": tfds.features.Scalar(dtype=np.int32),
            "error": tfds.features.Text(),
            "error_detail": tfds.features.Text(),
        }),
        disable_shuffling=True,  # Keys follow captions.jsonl, as in VideoFolderSource.
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._folder is None:
      raise ValueError(
          f"VideoFolder config {self.builder_config.name!r} is not built in "
          f"{self.data_dir}; building needs folder=")
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    skipped: list[str] = []
    entries = read_captions(self._folder, self._captions_file, skipped)
    counts: collections.Counter[str] = collections.Counter()
    captions: collections.Counter[str] = collections.Counter()
    for key, entry in enumerate(entries):
      example = self._example(entry)
      counts[example["error"] or "ok"] += 1
      caption = entry["caption"]
      if not caption.strip():
        captions["empty"] += 1
      else:
        try:
          caption.decode("utf-8")
        except UnicodeDecodeError:
          captions["not_utf8"] += 1
      yield key, example
    logging.info(
        "VideoFolder %s: %d entries: %s; malformed caption lines skipped: %d; "
        "captions the pipeline will skip: %s", self._folder, len(entries),
        ", ".join(f"{k}={v}" for k, v in sorted(counts.items())), len(skipped),
        dict(captions) or "none",
    )
    self.build_counts = dict(counts, malformed_lines=len(skipped))

  def _example(self, entry: dict[str, Any]) -> dict[str, Any]:
    file = entry["file"]
    example = {
        "video_bytes": b"", "caption": entry["caption"],
        "file": _to_bytes(file), "num_frames": 0, "fps": 0.0, "height": 0,
        "width": 0, "error": "", "error_detail": "",
    }
    try:
      data = read_file(os.path.join(self._folder, file))
      info = video_io.probe(data, count_packets=self._count_packets)
      if self._verify:
        decodable = video_io.count_decodable_frames(data)
        info = dataclasses.replace(info, num_frames=min(info.num_frames, decodable))
    except BadExample as e:
      logging.warning("VideoFolder: %s: %s", file, e)
      example.update(error=e.reason, error_detail=_to_bytes(_named(e, file).detail))
      return example
    example.update(
        video_bytes=data, num_frames=info.num_frames, fps=info.fps,
        height=info.height, width=info.width)
    return example


def build_video_folder(
    folder: str | os.PathLike[str], data_dir: str | os.PathLike[str], **kwargs
) -> VideoFolder:
  """Builds (if not built yet) the array_record data set of a folder."""
  builder = VideoFolder(folder=folder, data_dir=os.fspath(data_dir), **kwargs)
  builder.download_and_prepare()
  return builder


# ---------------------------------------------------------------------------
# The built data set.


def _text(value: Any) -> str:
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8", "surrogateescape")
  return str(value)


def _as_bytes(value: Any) -> bytes:
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, str):
    return value.encode("utf-8")
  return bytes(value)


class ArrayRecordVideoSource(_RecordSource):
  """ClipSource over a built `VideoFolder` data set (any random-access source of its rows).

  Attributes:
    data_source: `builder.as_data_source()[split]`, `tfds.data_source(...)`,
      or any object with `__len__` and `__getitem__(int) -> dict` of the
      `VideoFolder` features. TFDS's array_record sources pickle (Grain).
    threads: decoder threads (see `video_io.decode`).
  """

  def __init__(self, data_source: Any, threads: int = 1):
    self.data_source = data_source
    self.threads = threads

  @classmethod
  def from_folder(
      cls, folder: str | os.PathLike[str], data_dir: str | os.PathLike[str],
      split: str = "train", **kwargs,
  ) -> "ArrayRecordVideoSource":
    """Builds the folder's data set in data_dir unless built, then reads `split`."""
    builder = build_video_folder(folder, data_dir, **kwargs)
    return cls(builder.as_data_source()[split])

  def __len__(self) -> int:
    return len(self.data_source)

  def __repr__(self) -> str:
    return f"ArrayRecordVideoSource({len(self)} clips)"

  def record(self, key: int) -> VideoRecord:
    """The stored row. Raises BadExample with the reason recorded at build time."""
    row = self.data_source[int(key)]
    file = _text(row["file"])
    error = _text(row["error"])
    if error:
      detail = _text(row.get("error_detail", "")) or file
      if error not in REASONS:  # Built by another version of the reasons list.
        error, detail = CORRUPT, f"{error}: {detail}"
      raise BadExample(error, f"recorded at build time: {detail}")
    info = ClipInfo(
        num_frames=int(row["num_frames"]), fps=float(row["fps"]),
        height=int(row["height"]), width=int(row["width"]))
    return VideoRecord(
        file=file, caption=_as_bytes(row["caption"]), data=_as_bytes(row["video_bytes"]),
        info=info)


# ---------------------------------------------------------------------------
# Any prepared TFDS video data set.


class TfdsVideoSource(_RecordSource):
  """ClipSource over a TFDS video data set already prepared in a local data_dir.

  Never downloads or prepares: a data set missing from data_dir is an error.
  Captions come from a text feature (`caption_key`) or from a label feature
  (`label_key`) put into `caption_template` (ClassLabel names are used when
  the feature has them). The video feature may hold decoded frames ((T, H, W,
  3) uint8, or (T, H, W) / (T, H, W, 1) grey, (T, H, W, 4) with alpha
  dropped), an encoded video file (bytes), or a sequence of encoded PNG/JPEG
  frames (only the sampled frames are decoded).

  Note: TFDS's own `tfds.features.Video` feature needs TensorFlow to load its
  feature spec, so such data sets (e.g. ucf101) need TensorFlow installed.

  Attributes:
    name: TFDS name, may carry config and version ('ucf101/ucf101_1_256:2.0.0').
    split: split name or slice ('train', 'train[:90%]').
    data_dir: where it is prepared (None: TFDS's default).
    video_key: the video feature.
    caption_key: a text feature holding captions, or None.
    label_key: a label feature for `caption_template`, or None.
    caption_template: e.g. 'a video of {label}'.
    fps: frame rate of decoded-frame videos (the data set has none); encoded
      videos use their container's rate when it has one.
    fps_key: a feature with each video's fps, or None.
    threads: decoder threads for encoded videos.
  """

  def __init__(
      self, name: str, split: str = "train", data_dir: str | os.PathLike[str] | None = None,
      video_key: str = "video", caption_key: str | None = None,
      label_key: str | None = None, caption_template: str = "a video of {label}",
      fps: float = 25.0, fps_key: str | None = None, threads: int = 1,
  ):
    if (caption_key is None) == (label_key is None):
      raise ValueError("TfdsVideoSource needs exactly one of caption_key or label_key")
    self.name = name
    self.split = split
    self.data_dir = None if data_dir is None else os.fspath(data_dir)
    self.video_key = video_key
    self.caption_key = caption_key
    self.label_key = label_key
    self.caption_template = caption_template
    self.fps = float(fps)
    self.fps_key = fps_key
    self.threads = threads
    self._source = None
    source = self._data_source()
    features = source.dataset_info.features
    for key in (video_key, caption_key, label_key, fps_key):
      if key is not None and key not in features:
        raise ValueError(
            f"TFDS data set {name} has no feature {key!r}; it has {sorted(features.keys())}")
    self.label_names: list[str] | None = None
    if label_key is not None and isinstance(features[label_key], tfds.features.ClassLabel):
      self.label_names = list(features[label_key].names)

  def _data_source(self):
    if self._source is None:
      try:
        self._source = tfds.data_source(
            self.name, split=self.split, data_dir=self.data_dir, download=False)
      except Exception as e:
        raise FileNotFoundError(
            f"TFDS data set {self.name!r} (split {self.split!r}) could not be opened in "
            f"data_dir={self.data_dir!r}; vidgen never downloads or prepares TFDS data "
            f"sets, prepare it first (tfds build {self.name} --data_dir=...). "
            f"Cause: {type(e).__name__}: {e}") from e
    return self._source

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state["_source"] = None  # Reopened lazily in the worker.
    return state

  def __len__(self) -> int:
    return len(self._data_source())

  def __repr__(self) -> str:
    return f"TfdsVideoSource({self.name!r}, split={self.split!r}, {len(self)} clips)"

  def _caption(self, row: dict[str, Any]) -> bytes:
    if self.caption_key is not None:
      return _as_bytes(row[self.caption_key])
    label = row[self.label_key]
    if isinstance(label, np.ndarray):
      label = label.item()
    if self.label_names is not None and isinstance(label, (int, np.integer)):
      label = self.label_names[int(label)]
    elif isinstance(label, bytes):
      label = label.decode("utf-8", "replace")
    return self.caption_template.format(label=label).encode("utf-8")

  def record(self, key: int) -> Record:
    key = int(key)
    row = self._data_source()[key]
    file = f"{self.name}[{self.split}]#{key}"
    caption = self._caption(row)
    fps = float(row[self.fps_key]) if self.fps_key is not None else self.fps
    video = row[self.video_key]
    if isinstance(video, np.ndarray) and video.dtype == np.object_ and video.ndim == 0:
      video = video.item()
    if isinstance(video, (bytes, bytearray)):
      try:
        info = video_io.probe(bytes(video))
      except BadExample as e:
        raise _named(e, file) from None
      if info.fps <= 0 and info.num_frames > 1:
        info = dataclasses.replace(info, fps=fps)
      return VideoRecord(file=file, caption=caption, data=bytes(video), info=info)
    video = np.asarray(video) if not isinstance(video, np.ndarray) else video
    if video.dtype == np.object_ and video.ndim == 1:  # Encoded frames.
      if video.size == 0:
        raise BadExample(CORRUPT, f"{file}: no frames")
      try:
        first = video_io.probe(_as_bytes(video[0]))
      except BadExample as e:
        raise _named(e, f"{file} frame 0") from None
      info = ClipInfo(num_frames=len(video), fps=fps, height=first.height, width=first.width)
      return ImageFramesRecord(file=file, caption=caption, frames=video, info=info)
    frames = _rgb_frames(video, file)
    t, h, w, _ = frames.shape
    return FramesRecord(
        file=file, caption=caption, frames=frames,
        info=ClipInfo(num_frames=t, fps=fps if t > 1 else 0.0, height=h, width=w))


def _rgb_frames(video: np.ndarray, file: str) -> np.ndarray:
  """Decoded frames as (T, H, W, 3) uint8, or BadExample(CORRUPT)."""
  if video.dtype != np.uint8:
    raise BadExample(CORRUPT, f"{file}: video dtype {video.dtype}, expected uint8")
  if video.ndim == 3:
    video = video[..., None]
  if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
    raise BadExample(CORRUPT, f"{file}: video shape {video.shape}, expected (T, H, W, 3)")
  if min(video.shape[:3]) == 0:
    raise BadExample(CORRUPT, f"{file}: empty video {video.shape}")
  if video.shape[-1] == 1:
    video = np.repeat(video, 3, axis=-1)
  elif video.shape[-1] == 4:
    video = video[..., :3]
  return video
