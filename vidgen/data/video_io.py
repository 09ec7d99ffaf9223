"""Reading and writing video files in memory with PyAV (FFmpeg), images with PIL.

Three functions carry the data layer:

* `probe(data)` -> `ClipInfo`: frame count, fps and size without decoding
  (header fields; for containers without a frame count in the header, WebM
  for instance, packets are counted by demuxing, which does not decode).
* `decode(data, indices, size)` -> (T, H, W, 3) uint8 RGB: decodes only up to
  the last requested frame, converts (and, with `size`, resizes) only the
  requested frames with one reused swscale context, and returns exactly the
  requested frames in the requested order (indices may repeat).
* `encode(frames, fps, fmt)` -> bytes, for mp4, webm, avi and gif.

Frames are numbered in presentation order as the decoder outputs them,
starting at 0; that is what `probe` counts. PNG and JPEG bytes (recognised by
their magic bytes) are one-frame clips with fps 0, read with PIL. Stream
rotation metadata and non-square sample aspect ratios are ignored: frames come
back as stored.

Bad input never crashes and never yields made-up frames: empty bytes raise
`BadExample(ZERO_BYTE)`; bytes FFmpeg or PIL cannot read raise
`BadExample(CORRUPT, detail)`; a requested frame past the point where a
truncated stream ends raises `BadExample(TOO_FEW_FRAMES, detail)` (or
`CORRUPT` when the decoder itself fails, or when no frame decodes at all).
Nothing is ever padded with black or repeated frames.

Encoders (checked against `av.codecs_available` of the installed PyAV):

| fmt  | codec (fallback)        | pixel format                                |
|------|-------------------------|---------------------------------------------|
| mp4  | libx264 (mpeg4)         | yuv420p; yuv444p for odd sizes (see below)  |
| webm | libvpx-vp9 (libvpx/vp8) | yuv420p (odd sizes allowed)                 |
| avi  | mpeg4 (mjpeg)           | yuv420p (mjpeg: yuvj444p)                   |
| gif  | gif                     | pal8, one 256-colour palette for the clip   |

libx264 refuses yuv420p at odd widths or heights; rather than padding (which
would change the clip's size) such clips are written in yuv444p ("High 4:4:4"
profile), which FFmpeg and PyAV read back exactly at the stored size, though
browsers and QuickTime do not play it. Pass even sizes for playable mp4.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image

from vidgen.data.clips import (
    CORRUPT,
    TOO_FEW_FRAMES,
    ZERO_BYTE,
    BadExample,
    ClipInfo,
)

VIDEO_FORMATS = ("mp4", "webm", "avi", "gif")
IMAGE_FORMATS = ("png", "jpg", "jpeg")
# File suffixes (lower case, with the dot) this module reads.
SUFFIXES = tuple("." + f for f in VIDEO_FORMATS + IMAGE_FORMATS)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

# Quality settings: visually near-lossless, small files for short clips.
_X264_OPTIONS = {"crf": "18", "preset": "fast"}
_VP9_OPTIONS = {"crf": "24", "b:v": "0", "deadline": "good", "cpu-used": "4"}
_VP8_OPTIONS = {"crf": "10", "b:v": "2M"}
# `-q:v 2` for FFmpeg's own mpeg4 / mjpeg encoders (2 * FF_QP2LAMBDA).
_QSCALE_OPTIONS = {"flags": "+qscale", "global_quality": str(2 * 118)}


# ---------------------------------------------------------------------------
# Probing.


def is_image(data: bytes) -> bool:
  """True for PNG or JPEG bytes (read with PIL as one-frame clips)."""
  return data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC)


def _check_nonempty(data: bytes) -> None:
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise TypeError(f"expected bytes, got {type(data).__name__}")
  if len(data) == 0:
    raise BadExample(ZERO_BYTE, "empty file")


def _corrupt(what: str, e: BaseException) -> BadExample:
  return BadExample(CORRUPT, f"{what}: {type(e).__name__}: {e}")


def probe(data: bytes, count_packets: bool = False) -> ClipInfo:
  """Frame count, fps and size of an encoded video (or a PNG/JPEG image).

  Args:
    data: the file's bytes.
    count_packets: count frames by demuxing every packet even when the header
      has a frame count (cheap, no decoding; finds files truncated after a
      header that promises more frames). Used anyway when the header has none.

  Raises:
    BadExample(ZERO_BYTE) for empty bytes, BadExample(CORRUPT) for bytes that
    do not open as a video or image, have no video stream, or no frames.
  """
  _check_nonempty(data)
  if is_image(data):
    return _probe_image(data)
  try:
    with av.open(io.BytesIO(data), mode="r") as container:
      if not container.streams.video:
        raise BadExample(CORRUPT, "no video stream")
      stream = container.streams.video[0]
      height = stream.codec_context.height
      width = stream.codec_context.width
      rate = stream.average_rate or stream.guessed_rate or stream.base_rate
      fps = float(rate) if rate else 0.0
      num_frames = int(stream.frames or 0)
      if num_frames <= 0 or count_packets:
        counted = sum(1 for p in container.demux(stream) if p.size > 0)
        num_frames = counted if num_frames <= 0 else min(num_frames, counted)
  except BadExample:
    raise
  except Exception as e:  # av.FFmpegError and friends: any failure is bad input.
    raise _corrupt("probe failed", e) from e
  if num_frames <= 0:
    raise BadExample(CORRUPT, "no video frames")
  if height <= 0 or width <= 0:
    raise BadExample(CORRUPT, f"bad frame size {height}x{width}")
  return ClipInfo(num_frames=num_frames, fps=fps, height=height, width=width)


def _probe_image(data: bytes) -> ClipInfo:
  try:
    with Image.open(io.BytesIO(data)) as im:
      width, height = im.size
      im.verify()  # PNG: chunk CRCs; cheap, no pixel decoding.
  except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
    raise _corrupt("image probe failed", e) from e
  if height <= 0 or width <= 0:
    raise BadExample(CORRUPT, f"bad image size {height}x{width}")
  return ClipInfo(num_frames=1, fps=0.0, height=height, width=width)


# ---------------------------------------------------------------------------
# Decoding.


def decode(
    data: bytes,
    indices: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    threads: int = 1,
) -> np.ndarray:
  """Decodes the requested frames of an encoded video (or image) to RGB.

  Decoding stops at the last requested frame; frames not requested are not
  converted. With `size`, frames are resized by swscale while converting to
  RGB: area averaging when shrinking, bilinear when growing (the choice
  `clips.resize_and_crop` makes with PIL); the aspect ratio is not kept, so
  callers ask for `clips.cover_size(...)` and crop.

  Args:
    data: the file's bytes.
    indices: 1-D stored-frame indices (any order, repeats allowed); None for
      every frame.
    size: (height, width) of the returned frames; None for the stored size.
    threads: decoder threads; 1 (default) suits data loaders that already run
      one decoder per worker process, 0 lets FFmpeg choose.

  Returns:
    (len(indices), H, W, 3) uint8, frame k being stored frame indices[k].

  Raises:
    BadExample(ZERO_BYTE | CORRUPT | TOO_FEW_FRAMES); never pads.
    ValueError for negative indices or a non-positive size (caller bugs).
  """
  _check_nonempty(data)
  if indices is not None:
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and indices.min() < 0:
      raise ValueError(f"negative frame index in {indices}")
  if size is not None:
    size = (int(size[0]), int(size[1]))
    if size[0] <= 0 or size[1] <= 0:
      raise ValueError(f"bad size {size}")
  if is_image(data):
    return _decode_image(data, indices, size)
  return _decode_video(data, indices, size, threads)


def _decode_image(
    data: bytes, indices: np.ndarray | None, size: tuple[int, int] | None
) -> np.ndarray:
  if indices is None:
    indices = np.zeros(1, np.int64)
  if indices.size and indices.max() > 0:
    raise BadExample(
        TOO_FEW_FRAMES, f"an image has 1 frame; asked for frame {indices.max()}"
    )
  try:
    with Image.open(io.BytesIO(data)) as im:
      im = im.convert("RGB")  # Loads the pixels: truncation shows up here.
      if size is not None and (size[0], size[1]) != (im.height, im.width):
        shrink = size[0] < im.height
        resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        im = im.resize((size[1], size[0]), resample)
      frame = np.asarray(im, dtype=np.uint8)
  except Exception as e:
    raise _corrupt("image decode failed", e) from e
  return np.ascontiguousarray(np.broadcast_to(frame, (len(indices),) + frame.shape))


def _decode_video(
    data: bytes, indices: np.ndarray | None, size: tuple[int, int] | None,
    threads: int,
) -> np.ndarray:
  wanted = None if indices is None else set(indices.tolist())
  last = None if indices is None else (int(indices.max()) if indices.size else -1)
  frames: dict[int, np.ndarray] = {}
  reformatter = VideoReformatter()  # One swscale context for every frame.
  n = 0  # Frames decoded so far.
  try:
    with av.open(io.BytesIO(data), mode="r") as container:
      if not container.streams.video:
        raise BadExample(CORRUPT, "no video stream")
      stream = container.streams.video[0]
      stream.codec_context.thread_count = threads
      if threads != 1:
        stream.thread_type = "AUTO"
      if last is not None and last < 0:  # Empty request: still check it opens.
        return np.zeros((0, *(size or (stream.codec_context.height,
                                       stream.codec_context.width)), 3), np.uint8)
      for frame in container.decode(stream):
        i = n
        n += 1
        if wanted is None or i in wanted:
          if size is None:
            out = reformatter.reformat(frame, format="rgb24")
          else:
            interp = (Interpolation.AREA if size[0] < frame.height
                      else Interpolation.BILINEAR)
            out = reformatter.reformat(
                frame, width=size[1], height=size[0], format="rgb24",
                interpolation=interp,
            )
          frames[i] = out.to_ndarray()
        if last is not None and i >= last:
          break
  except BadExample:
    raise
  except Exception as e:
    raise _corrupt(f"decoding failed after {n} frames", e) from e
  if n == 0:
    raise BadExample(CORRUPT, "no frame decodes")
  if last is not None and last >= n:
    raise BadExample(
        TOO_FEW_FRAMES,
        f"stream ends after {n} decodable frames; frame {last} was requested",
    )
  order = list(range(n)) if indices is None else indices.tolist()
  shapes = {a.shape for a in frames.values()}
  if len(shapes) > 1:  # Resolution changes mid-stream without `size`.
    raise BadExample(CORRUPT, f"frame size changes within the stream: {shapes}")
  return np.stack([frames[i] for i in order])


def count_decodable_frames(data: bytes) -> int:
  """Frames that decode before the stream ends or the decoder fails (no RGB conversion).

  For checking files once (e.g. at build time): a truncated file's count is
  the frames before the damage. Images count 1 if their pixels load.

  Raises:
    BadExample(ZERO_BYTE | CORRUPT) if no frame decodes.
  """
  _check_nonempty(data)
  if is_image(data):
    _decode_image(data, np.zeros(1, np.int64), (1, 1))
    return 1
  n = 0
  try:
    with av.open(io.BytesIO(data), mode="r") as container:
      if not container.streams.video:
        raise BadExample(CORRUPT, "no video stream")
      stream = container.streams.video[0]
      stream.codec_context.thread_count = 1
      for _ in container.decode(stream):
        n += 1
  except BadExample:
    raise
  except Exception as e:
    if n == 0:
      raise _corrupt("decoding failed", e) from e
  if n == 0:
    raise BadExample(CORRUPT, "no frame decodes")
  return n


# ---------------------------------------------------------------------------
# Encoding.


@functools.cache
def _has_encoder(name: str) -> bool:
  if name not in av.codecs_available:
    return False
  try:
    av.codec.Codec(name, "w")
  except Exception:
    return False
  return True


def _codec_for(fmt: str, height: int, width: int) -> tuple[str, str, dict[str, str]]:
  """(codec, pixel format, codec options) for a container format and size."""
  even = height % 2 == 0 and width % 2 == 0
  if fmt == "mp4":
    if _has_encoder("libx264"):
      return "libx264", "yuv420p" if even else "yuv444p", dict(_X264_OPTIONS)
    return "mpeg4", "yuv420p", dict(_QSCALE_OPTIONS)
  if fmt == "webm":
    if _has_encoder("libvpx-vp9"):
      return "libvpx-vp9", "yuv420p", dict(_VP9_OPTIONS)
    return "libvpx", "yuv420p", dict(_VP8_OPTIONS)
  if fmt == "avi":
    if _has_encoder("mpeg4"):
      return "mpeg4", "yuv420p", dict(_QSCALE_OPTIONS)
    return "mjpeg", "yuvj444p", dict(_QSCALE_OPTIONS)
  if fmt == "gif":
    return "gif", "pal8", {}
  raise ValueError(f"unknown video format {fmt!r}; known: {VIDEO_FORMATS}")


def available_encoders() -> dict[str, str]:
  """The codec `encode` uses for each format with the installed PyAV."""
  return {fmt: _codec_for(fmt, 2, 2)[0] for fmt in VIDEO_FORMATS}


def _check_frames(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(
        f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
    )
  if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
    raise ValueError(f"empty frames {frames.shape}")
  return frames


def _palette_frames(frames: np.ndarray) -> list[av.VideoFrame]:
  """pal8 frames sharing one median-cut palette computed from up to 32 frames."""
  t, h, w, _ = frames.shape
  sample = frames[np.linspace(0, t - 1, min(t, 32)).round().astype(int)]
  mosaic = Image.fromarray(np.ascontiguousarray(sample.reshape(-1, w, 3)))
  palette_image = mosaic.quantize(
      256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
  )
  rgb = np.asarray(palette_image.getpalette("RGB"), np.uint8).reshape(-1, 3)[:256]
  argb = np.zeros((256, 4), np.uint8)
  argb[:, 0] = 255
  argb[: len(rgb), 1:] = rgb
  out = []
  for f in frames:
    idx = Image.fromarray(f).quantize(palette=palette_image, dither=Image.Dither.NONE)
    out.append(av.VideoFrame.from_ndarray(
        (np.ascontiguousarray(np.asarray(idx, np.uint8)), argb), format="pal8"
    ))
  return out


def encode(
    frames: np.ndarray, fps: float, fmt: str, faststart: bool = False
) -> bytes:
  """Encodes (T, H, W, 3) uint8 RGB frames into a video file's bytes.

  Args:
    frames: (T, H, W, 3) uint8.
    fps: frame rate (> 0); stored as a fraction with denominator <= 1001
      (gif stores delays in 1/100 s, so its rate is rounded to that).
    fmt: one of `VIDEO_FORMATS` (codecs in the module docstring).
    faststart: mp4 only: put the index (moov) before the data, for streaming
      playback. FFmpeg rewrites the file for it, so this goes through a
      temporary file instead of memory.

  Returns:
    The encoded file's bytes.
  """
  frames = _check_frames(frames)
  if not fps > 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  fmt = fmt.lower().lstrip(".")
  t, h, w, _ = frames.shape
  codec, pix_fmt, options = _codec_for(fmt, h, w)
  if faststart:
    if fmt != "mp4":
      raise ValueError("faststart is for mp4 only")
    container_options = {"movflags": "faststart"}
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "video.mp4")
      _encode_into(path, frames, fps, fmt, codec, pix_fmt, options, container_options)
      with open(path, "rb") as f:
        return f.read()
  buf = io.BytesIO()
  _encode_into(buf, frames, fps, fmt, codec, pix_fmt, options, {})
  return buf.getvalue()


def _encode_into(
    target: Any, frames: np.ndarray, fps: float, fmt: str, codec: str,
    pix_fmt: str, options: dict[str, str], container_options: dict[str, str],
) -> None:
  _, h, w, _ = frames.shape
  rate = Fraction(fps).limit_denominator(1001)
  with av.open(target, mode="w", format=fmt, options=container_options) as container:
    stream = container.add_stream(codec, rate=rate, options=options)
    stream.width = w
    stream.height = h
    stream.pix_fmt = pix_fmt
    if codec == "gif":
      av_frames = _palette_frames(frames)
    else:
      av_frames = (av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames)
    for i, frame in enumerate(av_frames):
      frame.pts = i
      frame.time_base = 1 / rate
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():  # Flush.
      container.mux(packet)


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: float) -> None:
  """Writes frames to `path`; the format comes from the suffix.

  Video suffixes: .mp4 (written with faststart), .webm, .avi, .gif. Image
  suffixes (.png, .jpg, .jpeg) take a one-frame clip.
  """
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1].lower().lstrip(".")
  if suffix in IMAGE_FORMATS:
    frames = _check_frames(frames)
    if frames.shape[0] != 1:
      raise ValueError(f"an image file holds 1 frame, got {frames.shape[0]}")
    data = encode_image(frames[0], suffix)
  elif suffix in VIDEO_FORMATS:
    data = encode(frames, fps, suffix, faststart=suffix == "mp4")
  else:
    raise ValueError(f"unknown video suffix {suffix!r} of {path}; known: {SUFFIXES}")
  with open(path, "wb") as f:
    f.write(data)


def encode_image(frame: np.ndarray, fmt: str = "png") -> bytes:
  """(H, W, 3) uint8 -> PNG or JPEG bytes."""
  frame = _check_frames(np.asarray(frame)[None])[0]
  fmt = fmt.lower().lstrip(".")
  buf = io.BytesIO()
  if fmt == "png":
    Image.fromarray(frame).save(buf, format="PNG")
  elif fmt in ("jpg", "jpeg"):
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
  else:
    raise ValueError(f"unknown image format {fmt!r}; known: {IMAGE_FORMATS}")
  return buf.getvalue()
