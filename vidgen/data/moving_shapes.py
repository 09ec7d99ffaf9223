"""Moving Shapes: the built-in text-video world.

Captioned clips of coloured shapes gliding over a black torus, generated on
demand in well under a millisecond each, with captions whose every word is
checkable in the pixels. This module implements the contract of
`MOVING_SHAPES.md` exactly; evaluation tools outside the project read videos
and captions by those rules, so every constant below is part of it.

A clip of `T` frames on an `H x W` canvas (any `H, W >= 16`, non-square
included):

- background black (0, 0, 0); each object filled with its exact RGB colour,
  no outline and no anti-aliasing, so every pixel is either black or exactly
  one object's colour;
- sizes: the bounding-box side is `round(SIZES[size] * min(H, W))` pixels
  (Python's `round`, i.e. half to even);
- a pixel `(i, j)` is covered by an object when its centre `(i + 0.5, j + 0.5)`
  lies in the shape, measured with torus (wrap-around) offsets from the
  object's centre, so an object straddling an edge is drawn on both sides;
  intervals are half-open, so a square covers exactly `side x side` pixels
  wherever it is;
- circle: diameter `side` (an open disc: its pixels span `side` or
  `side - 1` rows and columns, never more); square: axis aligned, `side x side`; triangle:
  equilateral, apex up (smallest row index), base `side`, height
  `side * sqrt(3) / 2`, its bounding box centred on the object's centre;
- motion `left`, `right`, `up`, `down` at `min(H, W) / 32` pixels per frame,
  or `still`; the centre at frame `t` is `start + t * velocity`, wrapped;
- objects are drawn in caption order (the second on top); two objects have
  different colours.

Start positions are stored as fractions `(fy, fx)` of the canvas, drawn
uniformly on a grid of `1 / 65536` of the canvas, so that the same example
`(seed, split, index)` has the same objects at every render size; the pixel
start is `(fy * H, fx * W)` at the size rendered. Rasterisation works on
centres quantised to `1 / 65536` pixel (a no-op for sampled objects) and
the speed is a multiple of 1/32 pixel, so square and circle coverage is
decided in exact float64 arithmetic and the triangle's (with sqrt(3)) by
IEEE-rounded operations: the same pixels on every machine.

Shape legend: T frames, H height, W width, C=3 channels, N objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from vidgen.data import clips

# ---------------------------------------------------------------------------
# The contract's constants.

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (220, 220, 40),
    "green": (40, 200, 40),
    "cyan": (40, 200, 220),
    "blue": (40, 60, 220),
    "magenta": (200, 40, 200),
}
COLOR_NAMES = tuple(COLORS)
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.20, "large": 0.35}
SIZE_NAMES = tuple(SIZES)
MOTIONS = ("left", "right", "up", "down", "still")
FPS = 8
SPLITS = ("train", "test", "holdout")

# Seed-stream id of each split: train and test draw from disjoint streams.
SPLIT_ID = {"train": 0, "test": 1, "holdout": 2}
# Every (color, shape) pair in canonical order (colors major).
ALL_PAIRS = tuple((c, s) for c in COLOR_NAMES for s in SHAPES)
# Unit velocity (dy, dx) of each motion, in rows and columns.
_DIRECTION = {
    "left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0),
    "still": (0, 0),
}
# Start positions are multiples of 1 / _GRID of the canvas.
_GRID = 65536
_SQRT3 = math.sqrt(3.0)


def side_pixels(size: str, height: int, width: int) -> int:
  """Bounding-box side of an object of `size` on an `height x width` canvas."""
  return round(SIZES[size] * min(height, width))


def speed_pixels(height: int, width: int) -> float:
  """Pixels per frame of a moving object: `min(H, W) / 32`."""
  return min(height, width) / 32


# ---------------------------------------------------------------------------
# Configuration and ground truth.


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
  """What a Moving Shapes data set is.

  Attributes:
    height: canvas height in pixels (>= 16).
    width: canvas width in pixels (>= 16).
    frames: frames per clip (>= 1).
    num_objects: objects in every clip, 1 or 2.
    holdout: `(color, shape)` pairs that never appear in the train and test
      splits and make up the holdout split (its first object); normalised to
      a de-duplicated tuple of tuples in canonical order (as in `ALL_PAIRS`),
      so that equal sets make equal configs.
    seed: non-negative integer; example `i` of a split is a function of
      `(seed, split, i)` only.
  """

  height: int = 64
  width: int = 64
  frames: int = 16
  num_objects: int = 1
  holdout: tuple[tuple[str, str], ...] = ()
  seed: int = 0

  def __post_init__(self):
    for name in ("height", "width", "frames", "num_objects", "seed"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"ShapesConfig.{name} must be an int, got {value!r}")
      object.__setattr__(self, name, int(value))
    if self.height < 16:
      raise ValueError(f"ShapesConfig.height must be >= 16, got {self.height}")
    if self.width < 16:
      raise ValueError(f"ShapesConfig.width must be >= 16, got {self.width}")
    if self.frames < 1:
      raise ValueError(f"ShapesConfig.frames must be >= 1, got {self.frames}")
    if self.num_objects not in (1, 2):
      raise ValueError(
          f"ShapesConfig.num_objects must be 1 or 2, got {self.num_objects}")
    if self.seed < 0:
      raise ValueError(f"ShapesConfig.seed must be >= 0, got {self.seed}")
    pairs = set()
    if isinstance(self.holdout, (str, bytes)) or not isinstance(
        self.holdout, Sequence):
      raise ValueError(
          "ShapesConfig.holdout must be a sequence of (color, shape) pairs, "
          f"got {self.holdout!r}")
    for pair in self.holdout:
      if isinstance(pair, (str, bytes)) or len(pair) != 2:
        raise ValueError(
            f"ShapesConfig.holdout: {pair!r} is not a (color, shape) pair")
      color, shape = pair
      if color not in COLORS:
        raise ValueError(
            f"ShapesConfig.holdout: unknown color {color!r} in {tuple(pair)!r}; "
            f"colors: {COLOR_NAMES}")
      if shape not in SHAPES:
        raise ValueError(
            f"ShapesConfig.holdout: unknown shape {shape!r} in {tuple(pair)!r}; "
            f"shapes: {SHAPES}")
      pairs.add((color, shape))
    object.__setattr__(
        self, "holdout", tuple(p for p in ALL_PAIRS if p in pairs))
    allowed = self.allowed_pairs
    if not allowed:
      raise ValueError(
          "ShapesConfig.holdout holds out every (color, shape) pair: the train "
          "split would be empty")
    if self.num_objects == 2 and len({c for c, _ in allowed}) < 2:
      raise ValueError(
          "ShapesConfig.holdout leaves one color only, but num_objects=2 needs "
          "two objects of different colors")

  @property
  def allowed_pairs(self) -> tuple[tuple[str, str], ...]:
    """The (color, shape) pairs of train and test, in canonical order."""
    return tuple(p for p in ALL_PAIRS if p not in self.holdout)


@dataclasses.dataclass(frozen=True)
class ShapeObject:
  """One object of a clip, independent of the render size.

  Attributes:
    color: a key of `COLORS`.
    shape: one of `SHAPES`.
    size: a key of `SIZES`.
    motion: one of `MOTIONS`.
    fy: start centre row as a fraction of the canvas height, in [0, 1).
    fx: start centre column as a fraction of the canvas width, in [0, 1).
  """

  color: str
  shape: str
  size: str
  motion: str
  fy: float
  fx: float

  def __post_init__(self):
    for name, known in (("color", COLOR_NAMES), ("shape", SHAPES),
                        ("size", SIZE_NAMES), ("motion", MOTIONS)):
      if getattr(self, name) not in known:
        raise ValueError(
            f"ShapeObject.{name}: unknown {getattr(self, name)!r}; known: {known}")
    for name in ("fy", "fx"):
      value = float(getattr(self, name))
      if not 0.0 <= value < 1.0:
        raise ValueError(f"ShapeObject.{name} must lie in [0, 1), got {value}")
      object.__setattr__(self, name, value)

  @classmethod
  def at(cls, color: str, shape: str, size: str, motion: str, y: float,
         x: float, height: int, width: int) -> ShapeObject:
    """An object whose start centre is pixel `(y, x)` on a `height x width` canvas."""
    fy, fx = (y % height) / height, (x % width) / width
    # A tiny negative coordinate wraps to exactly 1.0 in floating point.
    return cls(color, shape, size, motion, fy if fy < 1 else 0.0,
               fx if fx < 1 else 0.0)

  def side(self, height: int, width: int) -> int:
    """Bounding-box side in pixels: `round(SIZES[size] * min(H, W))`."""
    return side_pixels(self.size, height, width)

  def start(self, height: int, width: int) -> tuple[float, float]:
    """Start centre `(y, x)` in pixels at this canvas size."""
    return self.fy * height, self.fx * width

  def velocity(self, height: int, width: int) -> tuple[float, float]:
    """Pixels per frame `(dy, dx)`."""
    dy, dx = _DIRECTION[self.motion]
    v = speed_pixels(height, width)
    return dy * v, dx * v

  def position(self, t, height: int, width: int):
    """Centre `(y, x)` at frame(s) `t`, wrapped into [0, H) x [0, W)."""
    t = np.asarray(t, np.float64)
    y0, x0 = self.start(height, width)
    vy, vx = self.velocity(height, width)
    return np.mod(y0 + t * vy, height), np.mod(x0 + t * vx, width)

  def as_dict(self, height: int, width: int) -> dict[str, Any]:
    """Ground truth with the start in pixels at this canvas size."""
    y, x = self.start(height, width)
    return dict(color=self.color, shape=self.shape, size=self.size,
                motion=self.motion, y=y, x=x)


def _split_id(split: str) -> int:
  if split not in SPLIT_ID:
    raise ValueError(f"unknown split {split!r}; splits: {SPLITS}")
  return SPLIT_ID[split]


def sample_objects(cfg: ShapesConfig, split: str, index: int) -> tuple[ShapeObject, ...]:
  """The objects of example `index` of `split`; a function of (seed, split, index).

  The draws come from `np.random.PCG64(np.random.SeedSequence([seed,
  SPLIT_ID[split], index]))` as raw 64-bit words (`random_raw`), whose stream
  NumPy keeps stable across versions and machines (unlike `Generator`
  methods). Each object takes five words, in order: its (color, shape) pair,
  size, motion (each `word % count`), start row and start column (each the top
  16 bits: a uniform grid of 1/65536 of the canvas). In train and test every
  pair is a non-holdout pair; in the holdout split the first object's pair is
  a holdout pair and a second object's pair a non-holdout one. A second
  object's color differs from the first's.

  Raises:
    ValueError: unknown split, negative index, or the holdout split of a
      config with no holdout pairs.
  """
  sid = _split_id(split)
  index = int(index)
  if index < 0:
    raise ValueError(f"example index must be >= 0, got {index}")
  if split == "holdout" and not cfg.holdout:
    raise ValueError(
        "the holdout split is empty: ShapesConfig.holdout lists no pairs")
  bits = np.random.PCG64(np.random.SeedSequence([cfg.seed, sid, index]))
  words = [int(w) for w in bits.random_raw(5 * cfg.num_objects)]
  objects = []
  for k in range(cfg.num_objects):
    w_pair, w_size, w_motion, w_y, w_x = words[5 * k : 5 * k + 5]
    if k == 0:
      pairs = cfg.holdout if split == "holdout" else cfg.allowed_pairs
    else:
      pairs = tuple(p for p in cfg.allowed_pairs if p[0] != objects[0].color)
    color, shape = pairs[w_pair % len(pairs)]
    size = SIZE_NAMES[w_size % len(SIZE_NAMES)]
    motion = MOTIONS[w_motion % len(MOTIONS)]
    fy, fx = (w_y >> 48) / _GRID, (w_x >> 48) / _GRID
    objects.append(ShapeObject(color, shape, size, motion, fy, fx))
  return tuple(objects)


# ---------------------------------------------------------------------------
# Rendering.


def _span(start: float, velocity: float, side: int, frames: int, n: int):
  """Pixels along one axis that may be covered, and their offsets from the centre.

  The candidates are the `side` pixels whose centres lie in the half-open
  interval [centre - side/2, centre + side/2). Exact: centres are quantised to
  1/65536 pixel and the speed is a multiple of 1/32, so every number here is
  a dyadic rational that float64 holds.

  Returns:
    index: (T, side) int64 pixel index, wrapped into [0, n).
    offset: (T, side) float64 pixel centre minus object centre, in
      [-side/2, side/2) (the torus offset, as side < n).
  """
  c0 = np.round(start * _GRID) / _GRID
  centre = c0 + np.arange(frames, dtype=np.float64) * velocity  # (T,)
  first = np.ceil(centre - side / 2 - 0.5)  # (T,)
  pos = first[:, None] + np.arange(side, dtype=np.float64)  # (T, side)
  return np.mod(pos.astype(np.int64), n), pos + 0.5 - centre[:, None]


def _covered(obj: ShapeObject, frames: int, height: int, width: int) -> np.ndarray:
  """Flat indices into a (T, H, W) array of the pixels `obj` covers, (P,) int64."""
  s = obj.side(height, width)
  y0, x0 = obj.start(height, width)
  vy, vx = obj.velocity(height, width)
  rows, dy = _span(y0, vy, s, frames, height)  # (T, s)
  cols, dx = _span(x0, vx, s, frames, width)  # (T, s)
  t = np.arange(frames, dtype=np.int64)[:, None, None]
  flat = (t * height + rows[:, :, None]) * width + cols[:, None, :]  # (T, s, s)
  dy, dx = dy[:, :, None], dx[:, None, :]  # (T, s, 1), (T, 1, s)
  r = s / 2
  if obj.shape == "square":  # every candidate
    return flat.reshape(-1)
  if obj.shape == "circle":
    return flat[dy * dy + dx * dx < r * r]
  # Triangle, apex up: depth below the apex in [0, height); the half width
  # grows as depth / sqrt(3), reaching side / 2 at the base.
  tri_h = s * _SQRT3 / 2
  depth = dy + tri_h / 2  # (T, s, 1)
  half_w = np.where((depth >= 0) & (depth < tri_h), depth / _SQRT3, -1.0)
  return flat[(dx >= -half_w) & (dx < half_w)]


def _check_canvas(frames: int, height: int, width: int) -> None:
  if height < 16 or width < 16 or frames < 1:
    raise ValueError(
        f"Moving Shapes needs frames >= 1 and height, width >= 16; got "
        f"T={frames}, H={height}, W={width}")


def object_mask(obj: ShapeObject, frames: int, height: int, width: int) -> np.ndarray:
  """Pixels covered by `obj` in each frame, (T, H, W) bool."""
  _check_canvas(frames, height, width)
  mask = np.zeros(frames * height * width, bool)
  mask[_covered(obj, frames, height, width)] = True
  return mask.reshape(frames, height, width)


def render(objects: Sequence[ShapeObject], frames: int, height: int,
           width: int) -> np.ndarray:
  """Renders objects on black: (T, H, W, 3) uint8, later objects on top."""
  _check_canvas(frames, height, width)
  video = np.zeros((frames * height * width, 3), np.uint8)
  for obj in objects:
    video[_covered(obj, frames, height, width)] = COLORS[obj.color]
  return video.reshape(frames, height, width, 3)


# ---------------------------------------------------------------------------
# Captions.

_OBJECT_RE = re.compile(
    r"a (?P<size>{}) (?P<color>{}) (?P<shape>{}) "
    r"(?:moving (?P<motion>{})|staying still)".format(
        "|".join(SIZE_NAMES), "|".join(COLOR_NAMES), "|".join(SHAPES),
        "|".join(m for m in MOTIONS if m != "still")))


def _field(obj, name):
  return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def caption(objects: Sequence[ShapeObject | Mapping[str, Any]]) -> str:
  """`a {size} {color} {shape} moving {direction}` / `... staying still`, joined by ` and `."""
  parts = []
  for obj in objects:
    motion = _field(obj, "motion")
    verb = "staying still" if motion == "still" else f"moving {motion}"
    parts.append(
        f"a {_field(obj, 'size')} {_field(obj, 'color')} {_field(obj, 'shape')} {verb}")
  return " and ".join(parts)


def parse_caption(text: str | bytes) -> list[dict[str, str]]:
  """Inverse of `caption`: a list of {size, color, shape, motion} (1 or 2).

  Raises:
    ValueError: the text is not in the caption grammar.
  """
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  parts = text.split(" and ")
  if len(parts) > 2:
    raise ValueError(f"a Moving Shapes caption has 1 or 2 objects: {text!r}")
  objects = []
  for part in parts:
    m = _OBJECT_RE.fullmatch(part)
    if m is None:
      raise ValueError(f"not a Moving Shapes caption: {text!r} (at {part!r})")
    objects.append(dict(size=m["size"], color=m["color"], shape=m["shape"],
                        motion=m["motion"] or "still"))
  return objects


# ---------------------------------------------------------------------------
# Examples and sources.


def example(cfg: ShapesConfig, split: str, index: int, frames: int | None = None,
            height: int | None = None, width: int | None = None) -> dict[str, Any]:
  """Example `index` of `split`, rendered at (frames, height, width) (default: cfg's).

  Returns:
    {'video': (T, H, W, 3) uint8, 'caption': str, 'objects': list of
    {color, shape, size, motion, y, x}}, with (y, x) the start centre in
    pixels at the size rendered. The objects are the same at every size.
  """
  t = cfg.frames if frames is None else frames
  h = cfg.height if height is None else height
  w = cfg.width if width is None else width
  objects = sample_objects(cfg, split, index)
  return dict(video=render(objects, t, h, w), caption=caption(objects),
              objects=[o.as_dict(h, w) for o in objects])


def ground_truth_arrays(objects: Sequence[ShapeObject | Mapping[str, Any]],
                        starts: np.ndarray) -> dict[str, np.ndarray]:
  """Fixed-size ground truth for batching.

  Returns:
    `gt_color`, `gt_shape`, `gt_size`, `gt_motion`: int32 (N,) indices into
    `COLOR_NAMES`, `SHAPES`, `SIZE_NAMES`, `MOTIONS`; `gt_start`: float32
    (N, 2) centre (y, x) in pixels at the first frame.
  """
  def index(field, names):
    return np.array([names.index(_field(o, field)) for o in objects], np.int32)

  return dict(
      gt_color=index("color", COLOR_NAMES),
      gt_shape=index("shape", SHAPES),
      gt_size=index("size", SIZE_NAMES),
      gt_motion=index("motion", MOTIONS),
      gt_start=np.asarray(starts, np.float32).reshape(len(objects), 2),
  )


def _check_split(cfg: ShapesConfig, split: str) -> None:
  _split_id(split)
  if split == "holdout" and not cfg.holdout:
    raise ValueError(
        "the holdout split is empty: ShapesConfig.holdout lists no pairs")


def _check_key(key: int, n: int) -> int:
  key = int(key)
  if not 0 <= key < n:
    raise IndexError(f"example key {key} out of range [0, {n})")
  return key


class MovingShapesSource:
  """Moving Shapes rendered on demand: a `clips.ClipSource` with no disk.

  Every clip is fully determined by its key; it is rendered at the requested
  shape (so `info` is None), at 8 fps from frame 0: `sampling` and `rng` are
  unused.

  Attributes:
    cfg: the data set's config.
    split: one of `SPLITS`.
    num_examples: the source's length (any number; examples never repeat).
  """

  def __init__(self, cfg: ShapesConfig, split: str, num_examples: int):
    _check_split(cfg, split)
    if int(num_examples) < 0:
      raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    self.cfg = cfg
    self.split = split
    self.num_examples = int(num_examples)

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, key: int) -> dict[str, Any]:
    """`example(...)` at the config's shape (Grain's RandomAccessDataSource)."""
    return example(self.cfg, self.split, _check_key(key, self.num_examples))

  def __repr__(self) -> str:
    return f"MovingShapesSource({self.cfg}, {self.split!r}, {self.num_examples})"

  def record(self, key: int) -> int:
    return _check_key(key, self.num_examples)

  def caption(self, record: int) -> str:
    return caption(sample_objects(self.cfg, self.split, record))

  def info(self, record: int) -> None:
    return None

  def clip(self, record: int, num_frames: int, height: int, width: int,
           sampling: clips.Sampling | None = None,
           rng: np.random.Generator | None = None) -> dict[str, Any]:
    """{'video': (T, H, W, 3) uint8, 'caption': str, 'gt_*': ground truth}."""
    objects = sample_objects(self.cfg, self.split, record)
    starts = [o.start(height, width) for o in objects]
    return dict(video=render(objects, num_frames, height, width),
                caption=caption(objects), **ground_truth_arrays(objects, starts))


# ---------------------------------------------------------------------------
# Stored data set: a TFDS builder writing array_record (no TensorFlow needed).

def builder_config(shapes: ShapesConfig) -> tfds.core.BuilderConfig:
  """The TFDS config of a ShapesConfig; its name keeps configs apart on disk."""
  if shapes.holdout:
    text = ",".join(f"{c}:{s}" for c, s in shapes.holdout)
    tag = "ho" + hashlib.sha1(text.encode()).hexdigest()[:10]
  else:
    text, tag = "none", "nohold"
  name = (f"h{shapes.height}_w{shapes.width}_t{shapes.frames}_"
          f"o{shapes.num_objects}_s{shapes.seed}_{tag}")
  return tfds.core.BuilderConfig(
      name=name, version=MovingShapes.VERSION,
      description=f"Moving Shapes {shapes}; holdout pairs: {text}")


class MovingShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Moving Shapes written to disk by TFDS (array_record, no TensorFlow).

  Example `i` of a split is stored at position `i` (shuffling is disabled)
  and equals `example(shapes, split, i)`. Splits of size 0 (and the holdout
  split of a config without holdout pairs) are not written.

    builder = MovingShapes(data_dir=d, shapes=ShapesConfig(),
                           split_sizes={'train': 1000, 'test': 100},
                           file_format='array_record')
    builder.download_and_prepare()

  Attributes:
    shapes: the ShapesConfig (its BuilderConfig is derived from it).
    split_sizes: examples per split; None when only reading.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version of the Moving Shapes contract."}

  def __init__(self, *, shapes: ShapesConfig | None = None,
               split_sizes: Mapping[str, int] | None = None, **kwargs):
    self.shapes = shapes or ShapesConfig()
    if split_sizes is not None:
      split_sizes = {k: int(v) for k, v in split_sizes.items()}
      for k, v in split_sizes.items():
        _split_id(k)
        if v < 0:
          raise ValueError(f"split_sizes[{k!r}] must be >= 0, got {v}")
      if split_sizes.get("holdout", 0) > 0 and not self.shapes.holdout:
        raise ValueError(
            "split_sizes['holdout'] > 0 but ShapesConfig.holdout lists no pairs")
    self.split_sizes = split_sizes
    self._vidgen_file_format = kwargs.get("file_format")
    kwargs.pop("config", None)  # always derived from `shapes`
    super().__init__(config=builder_config(self.shapes), **kwargs)
    if split_sizes is not None and self.info.splits:
      stored = {k: v.num_examples for k, v in self.info.splits.items()}
      wanted = {k: v for k, v in split_sizes.items() if v > 0}
      if stored != wanted:
        raise ValueError(
            f"{self.data_dir} already holds splits {stored}, not the requested "
            f"{wanted}; choose another data_dir or delete it")

  def __getstate__(self):
    state = super().__getstate__()
    state["_vidgen"] = dict(shapes=self.shapes, split_sizes=self.split_sizes,
                            file_format=self._vidgen_file_format)
    return state

  def __setstate__(self, state):
    kwargs = dict(state["_original_state"])
    kwargs.pop("config", None)
    self.__init__(**kwargs, **state["_vidgen"])

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "Moving Shapes: captioned videos of coloured shapes moving on a "
            "black torus (vidgen, MOVING_SHAPES.md)."),
        features=tfds.features.FeaturesDict({
            "index": np.int64,
            "video": tfds.features.Tensor(
                shape=(None, None, None, 3), dtype=np.uint8, encoding="bytes"),
            "caption": tfds.features.Text(),
            "objects": tfds.features.Sequence({
                "color": tfds.features.ClassLabel(names=COLOR_NAMES),
                "shape": tfds.features.ClassLabel(names=SHAPES),
                "size": tfds.features.ClassLabel(names=SIZE_NAMES),
                "motion": tfds.features.ClassLabel(names=MOTIONS),
                "y": np.float32,
                "x": np.float32,
            }),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    if self.split_sizes is None:
      raise ValueError("MovingShapes needs split_sizes to generate data")
    return {split: self._generate_examples(split, n)
            for split, n in self.split_sizes.items() if n > 0}

  def _generate_examples(self, split: str, num_examples: int):
    for i in range(num_examples):
      ex = example(self.shapes, split, i)
      yield i, dict(index=i, video=ex["video"], caption=ex["caption"],
                    objects=ex["objects"])


def load_array_record(data_dir: str, shapes: ShapesConfig, split: str):
  """The random-access TFDS data source of a split built by `MovingShapes`."""
  builder = MovingShapes(data_dir=data_dir, shapes=shapes)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"no Moving Shapes data set for {builder.builder_config.name} in "
        f"{data_dir}; build it with MovingShapes(...).download_and_prepare()")
  if split not in builder.info.splits:
    raise ValueError(
        f"split {split!r} not stored in {builder.data_dir}; stored: "
        f"{sorted(builder.info.splits)}")
  return builder.as_data_source()[split]


class MovingShapesRecordSource:
  """Moving Shapes read back from array_record: a `clips.ClipSource`.

  `clip` picks frames with `clips.sample_frame_indices` and resizes with the
  same cover-resize-and-crop as `clips.resize_and_crop`. `gt_start` is each
  object's centre at the first returned frame in output pixels (equal to the
  stored start when the clip is taken at the stored shape from frame 0; after
  a crop it may lie outside the canvas). The data source opens lazily, so the
  object pickles cheaply.

  Attributes:
    data_dir: TFDS data directory the set was built in.
    shapes: its ShapesConfig.
    split: one of `SPLITS`.
  """

  def __init__(self, data_dir: str, shapes: ShapesConfig, split: str):
    _check_split(shapes, split)
    self.data_dir = str(data_dir)
    self.shapes = shapes
    self.split = split
    self._source = None
    len(self)  # fail early if the data set is missing

  @property
  def source(self):
    if self._source is None:
      self._source = load_array_record(self.data_dir, self.shapes, self.split)
    return self._source

  def __getstate__(self):
    return dict(data_dir=self.data_dir, shapes=self.shapes, split=self.split,
                _source=None)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, key: int) -> dict[str, Any]:
    return self.record(key)

  def record(self, key: int) -> dict[str, Any]:
    return self.source[_check_key(key, len(self))]

  def caption(self, record: Mapping[str, Any]) -> bytes:
    return bytes(record["caption"])

  def info(self, record: Mapping[str, Any]) -> clips.ClipInfo:
    t, h, w, _ = record["video"].shape
    return clips.ClipInfo(num_frames=t, fps=FPS, height=h, width=w)

  def clip(self, record: Mapping[str, Any], num_frames: int, height: int,
           width: int, sampling: clips.Sampling,
           rng: np.random.Generator) -> dict[str, Any]:
    """{'video': (T, H, W, 3) uint8, 'caption': bytes, 'gt_*': ground truth}."""
    info = self.info(record)
    idx = clips.sample_frame_indices(info, num_frames, sampling, rng)
    video = np.asarray(record["video"])[idx]  # (T, h, w, 3)
    h, w = info.height, info.width
    objs = record["objects"]
    names = {"color": COLOR_NAMES, "shape": SHAPES, "size": SIZE_NAMES,
             "motion": MOTIONS}
    objects = [{k: names[k][int(objs[k][n])] for k in names}
               for n in range(len(objs["color"]))]
    # Centres at the first returned frame, on the stored canvas.
    v = speed_pixels(h, w)
    starts = []
    for n, o in enumerate(objects):
      dy, dx = _DIRECTION[o["motion"]]
      starts.append(((float(objs["y"][n]) + idx[0] * dy * v) % h,
                     (float(objs["x"][n]) + idx[0] * dx * v) % w))
    starts = np.array(starts, np.float64).reshape(len(objects), 2)
    if (h, w) != (height, width):
      rh, rw = clips.cover_size(h, w, height, width)
      oy, ox = clips.crop_offsets(rh, rw, height, width, sampling.random_crop, rng)
      video = clips.resize(video, rh, rw)[:, oy:oy + height, ox:ox + width]
      starts = starts * np.array([rh / h, rw / w]) - np.array([oy, ox])
    caption_bytes = record["caption"]
    if isinstance(caption_bytes, str):
      caption_bytes = caption_bytes.encode("utf-8")
    return dict(video=np.ascontiguousarray(video, np.uint8),
                caption=bytes(caption_bytes),
                **ground_truth_arrays(objects, starts))
