"""Conditioning modes as pixel canvases: which frames of the output are given, and their pixels.

Every generation mode of the seed is the masked-frame mechanism with a
different set of known frames. A mode builds a `Canvas` of the output's
length in pixels: the given frames placed where they belong and a mask of
them. The generator encodes the canvas with the (causal) VAE and keeps the
latent frames whose pixel frames are all given (`Canvas.latent_known`); the
DiT generates the rest, and the whole latent video is decoded.

With a causal VAE of time factor f, latent frame 0 holds pixel frame 0 and
latent frame j >= 1 pixel frames f (j - 1) + 1 .. f j. So a block of c known
latent frames is 1 + f (c - 1) pixel frames at the start of a video and f c
pixel frames anywhere else. The modes (T output frames, c = `context`):

  t2v          nothing given.
  i2v          an image as frame 0.
  extend       the last 1 + f (c - 1) frames of a video at the start; the
               output continues it forwards.
  extend_back  the first f c frames of a video at the end; the output leads
               into it (the video is generated backwards in time).
  interpolate  image A as frame 0 and image B as the last f frames (held).
  stitch       video A's tail at the start, video B's head at the end; the
               output is the transition between them.
  loop         two passes in latent space (`loop_lengths`): a
               text-to-video clip, then a transition from its end back
               into its start, generated on its latents (no pixel round trip).

Pixel frames the canvas does not give are filled with the next given frame
(else the previous one) before encoding: the causal encoder's latents of a
given block then see still frames before them rather than black ones.
Images and videos of another size are centre-cropped to the output's aspect
ratio and resized.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image

MODES = ("t2v", "i2v", "extend", "extend_back", "interpolate", "stitch", "loop")
# Inputs each mode takes: (images, videos).
INPUTS = {"t2v": (0, 0), "i2v": (1, 0), "extend": (0, 1), "extend_back": (0, 1),
          "interpolate": (2, 0), "stitch": (0, 2), "loop": (0, 0)}


@dataclasses.dataclass(frozen=True)
class Canvas:
  """The output's pixel frames with the given ones in place.

  Attributes:
    pixels: uint8 (T, H, W, 3); frames not given are filled (see module doc).
    given: bool (T,), True for the frames the mode gives.
  """

  pixels: np.ndarray
  given: np.ndarray

  def latent_known(self, time_factor: int) -> np.ndarray:
    """bool (T',): latent frames all of whose pixel frames are given."""
    return latent_known(self.given, time_factor)


def latent_frames(frames: int, time_factor: int) -> int:
  """Latent frames of a clip of `frames` pixel frames (1 + k * time_factor)."""
  if frames < 1 or (frames - 1) % time_factor:
    raise ValueError(f"a clip has 1 + k * {time_factor} frames (the VAE's time factor); "
                     f"got {frames}")
  return 1 + (frames - 1) // time_factor


def latent_known(given: np.ndarray, time_factor: int) -> np.ndarray:
  """bool (T',) from bool (T,) pixel frames: latent j is known when all its pixel frames are."""
  given = np.asarray(given, bool)
  n = latent_frames(len(given), time_factor)
  rest = given[1:].reshape(n - 1, time_factor).all(axis=1)
  return np.concatenate([given[:1], rest])


def fit(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (T, h, w, 3) or (h, w, 3) -> (T, H, W, 3): centre crop to the aspect ratio, resize."""
  frames = np.asarray(frames)
  if frames.ndim == 3:
    frames = frames[None]
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"expected uint8 (T, H, W, 3) or (H, W, 3) frames; got {frames.dtype} "
                     f"{frames.shape}")
  h, w = frames.shape[1:3]
  if (h, w) == (height, width):
    return frames
  # Largest centred crop of the target aspect ratio.
  if h * width > w * height:
    ch, cw = max(1, round(w * height / width)), w
  else:
    ch, cw = h, max(1, round(h * width / height))
  top, left = (h - ch) // 2, (w - cw) // 2
  out = [np.asarray(Image.fromarray(f[top:top + ch, left:left + cw]).resize(
      (width, height), Image.BILINEAR)) for f in frames]
  return np.stack(out)


def _fill(pixels: np.ndarray, given: np.ndarray) -> np.ndarray:
  """Frames not given take the next given frame, else the previous one (else stay black)."""
  out = pixels.copy()
  idx = np.flatnonzero(given)
  if not len(idx):
    return out
  for t in np.flatnonzero(~given):
    later = idx[idx > t]
    out[t] = pixels[later[0] if len(later) else idx[idx < t][-1]]
  return out


def _start_block(video: np.ndarray, context: int, time_factor: int) -> np.ndarray:
  """The last 1 + f (c' - 1) frames of `video`, c' <= context latent frames as many as it has."""
  c = min(context, latent_frames_floor(len(video), time_factor))
  return video[len(video) - (1 + time_factor * (c - 1)):]


def _end_block(video: np.ndarray, context: int, time_factor: int) -> np.ndarray:
  """The first f c' frames of `video` (c' <= context); a video shorter than f is padded in front."""
  if len(video) < time_factor:
    video = np.concatenate([np.repeat(video[:1], time_factor - len(video), axis=0), video])
  c = min(context, len(video) // time_factor)
  return video[:time_factor * c]


def latent_frames_floor(frames: int, time_factor: int) -> int:
  """Latent frames of the longest 1 + k f clip within `frames` frames (>= 1 for frames >= 1)."""
  return 1 + (frames - 1) // time_factor


def build(mode: str, frames: int, height: int, width: int, *, time_factor: int,
          context: int = 1, images: Sequence[np.ndarray] = (),
          videos: Sequence[np.ndarray] = ()) -> Canvas:
  """The canvas of `mode` for an output of (frames, height, width) pixels.

  Args:
    mode: one of MODES but "loop" (made in latent space: `loop_lengths`).
    frames: output frames T = 1 + k * time_factor.
    height, width: output size in pixels.
    time_factor: the VAE's time compression f.
    context: latent frames of each given video to keep (extend, extend_back,
      stitch), fewer if the video is shorter.
    images: uint8 (H, W, 3) images (i2v: 1; interpolate: 2).
    videos: uint8 (T, H, W, 3) videos (extend, extend_back: 1; stitch: 2).

  Returns:
    The Canvas; at least one latent frame is left to generate.
  """
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; valid: {MODES}")
  n_images, n_videos = INPUTS[mode]
  if len(images) != n_images or len(videos) != n_videos:
    raise ValueError(f"mode {mode} takes {n_images} image(s) and {n_videos} video(s); got "
                     f"{len(images)} and {len(videos)}")
  if context < 1:
    raise ValueError(f"context must be >= 1 latent frame; got {context}")
  n = latent_frames(frames, time_factor)
  images = [fit(i, height, width)[0] for i in images]
  videos = [fit(v, height, width) for v in videos]
  pixels = np.zeros((frames, height, width, 3), np.uint8)
  given = np.zeros(frames, bool)

  def put(start, block):
    pixels[start:start + len(block)] = block
    given[start:start + len(block)] = True

  if mode == "i2v":
    put(0, images[0][None])
  elif mode == "extend":
    put(0, _start_block(videos[0], context, time_factor))
  elif mode == "extend_back":
    block = _end_block(videos[0], context, time_factor)
    put(frames - len(block), block)
  elif mode == "interpolate":
    put(0, images[0][None])
    put(frames - time_factor, np.repeat(images[1][None], time_factor, axis=0))
  elif mode == "stitch":
    put(0, _start_block(videos[0], context, time_factor))
    block = _end_block(videos[1], context, time_factor)
    put(frames - len(block), block)
  canvas = Canvas(_fill(pixels, given), given)
  known = canvas.latent_known(time_factor)
  if known.all() or (mode != "t2v" and not known.any()):
    raise ValueError(f"mode {mode} with {frames} frames and context {context} leaves "
                     f"{int((~known).sum())} of {n} latent frames to generate and "
                     f"{int(known.sum())} given; give more frames or less context")
  return canvas


def loop_lengths(frames: int, window: int, time_factor: int, context: int) -> tuple[int, int]:
  """(n, g): latent frames of a loop's text-to-video pass and of its transition.

  A loop is made in latent space (`dit.Generator.loop_latents`): a
  text-to-video pass of n latent frames z, then one window of
  `context` latent frames of z's end, g new ones and `context` latent frames
  from z's latent frame 1 on. The loop is latent frames 1 .. n - 1 of z and
  the g new ones: f (n - 1 + g) pixel frames, each transition latent made
  to lead into the cycle's first. Latent frame 0 (one pixel frame) is left
  out: it starts a clip, not a cycle. So `frames` is the loop's length when
  it is a multiple of f; a 1 + f k clip (`frames`, as for the other modes)
  gives its f k frames, as its last frame would repeat the first.
  `window`: latent frames per sampler call (0: no limit).
  """
  if frames >= time_factor and frames % time_factor == 0:
    k = frames // time_factor
  elif frames > time_factor and (frames - 1) % time_factor == 0:
    k = (frames - 1) // time_factor
  else:
    raise ValueError(f"a loop has a multiple of {time_factor} frames (the VAE's time factor; "
                     f"1 + k * {time_factor} gives k * {time_factor}); got {frames}")
  if context < 1:
    raise ValueError(f"context must be >= 1 latent frame; got {context}")
  room = window - 2 * context if window else k - context
  g = min(room, k - context)
  if g < 1:
    raise ValueError(f"loop needs a window of more than 2 x context ({context}) latent frames "
                     f"and more than {context * time_factor} frames; got window {window}, "
                     f"{frames} frames")
  return k - g + 1, g


def loop_known(g: int, context: int) -> np.ndarray:
  """bool (2 context + g,): the transition window's given latent frames (both ends)."""
  return np.array([True] * context + [False] * g + [True] * context)
