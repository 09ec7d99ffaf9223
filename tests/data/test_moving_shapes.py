"""Conformance tests of Moving Shapes against MOVING_SHAPES.md, read from pixels."""

import hashlib
import math
import pickle
import re

import numpy as np
import pytest

from vidgen.data import clips
from vidgen.data import moving_shapes as ms

BLACK = (0, 0, 0)
CONTRACT_COLORS = {
    "red": (220, 40, 40),
    "yellow": (220, 220, 40),
    "green": (40, 200, 40),
    "cyan": (40, 200, 220),
    "blue": (40, 60, 220),
    "magenta": (200, 40, 200),
}
CAPTION_RE = re.compile(
    r"a (small|large) (red|yellow|green|cyan|blue|magenta) (circle|square|triangle) "
    r"(moving (left|right|up|down)|staying still)"
    r"( and a (small|large) (red|yellow|green|cyan|blue|magenta) (circle|square|triangle) "
    r"(moving (left|right|up|down)|staying still))?")
VELOCITY = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0), "still": (0, 0)}
CANVASES = [(64, 64), (48, 80), (32, 96), (16, 16), (80, 48)]


def contract_side(size, h, w):
  return round({"small": 0.20, "large": 0.35}[size] * min(h, w))


def color_mask(video, color):
  """(..., H, W, 3) -> (..., H, W) bool: pixels exactly of `color`."""
  return np.all(video == np.array(CONTRACT_COLORS[color], np.uint8), axis=-1)


def pixel_colors(video):
  v = video.reshape(-1, 3).astype(np.int32)
  codes = np.unique((v[:, 0] << 16) | (v[:, 1] << 8) | v[:, 2])
  return {(int(c >> 16), int(c >> 8 & 255), int(c & 255)) for c in codes}


def reference_render(objects, frames, h, w):
  """The contract, read literally: every pixel centre tested against every
  object on the torus, frame by frame (slow, for comparison only)."""
  video = np.zeros((frames, h, w, 3), np.uint8)
  py = np.arange(h)[:, None] + 0.5
  px = np.arange(w)[None, :] + 0.5
  speed = min(h, w) / 32
  for t in range(frames):
    for o in objects:
      s = contract_side(o.size, h, w)
      vy, vx = VELOCITY[o.motion]
      cy = (o.fy * h + t * vy * speed) % h
      cx = (o.fx * w + t * vx * speed) % w
      dy = (py - cy + h / 2) % h - h / 2
      dx = (px - cx + w / 2) % w - w / 2
      if o.shape == "square":
        inside = (-s / 2 <= dy) & (dy < s / 2) & (-s / 2 <= dx) & (dx < s / 2)
      elif o.shape == "circle":
        inside = dy**2 + dx**2 < (s / 2) ** 2
      else:
        tri_h = s * math.sqrt(3) / 2
        depth = dy + tri_h / 2
        half = depth / math.sqrt(3)
        inside = (depth >= 0) & (depth < tri_h) & (-half <= dx) & (dx < half)
      video[t][inside] = CONTRACT_COLORS[o.color]
  return video


def bbox(mask):
  rows, cols = np.nonzero(mask)
  return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def circular_centre(mask, n, axis):
  """Torus-aware mean position (pixel-centre coordinates) along `axis` of a 2-D mask."""
  coords = np.nonzero(mask)[axis] + 0.5
  ang = 2 * np.pi * coords / n
  mean = np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())
  return (mean * n / (2 * np.pi)) % n


def torus_diff(a, b, n):
  return (a - b + n / 2) % n - n / 2


def obj(color="red", shape="square", size="large", motion="still", y=32.0, x=32.0,
        h=64, w=64):
  return ms.ShapeObject.at(color, shape, size, motion, y, x, h, w)


# ---------------------------------------------------------------------------
# Constants and config.


def test_constants_match_contract():
  assert ms.COLORS == CONTRACT_COLORS
  assert ms.SHAPES == ("circle", "square", "triangle")
  assert ms.SIZES == {"small": 0.20, "large": 0.35}
  assert ms.MOTIONS == ("left", "right", "up", "down", "still")
  assert ms.FPS == 8
  assert ms.SPLITS == ("train", "test", "holdout")
  cfg = ms.ShapesConfig()
  assert (cfg.height, cfg.width, cfg.frames, cfg.num_objects, cfg.holdout) == (
      64, 64, 16, 1, ())


@pytest.mark.parametrize("kwargs, field", [
    (dict(height=15), "height"),
    (dict(width=8), "width"),
    (dict(frames=0), "frames"),
    (dict(num_objects=3), "num_objects"),
    (dict(num_objects=0), "num_objects"),
    (dict(seed=-1), "seed"),
    (dict(holdout=(("pink", "circle"),)), "holdout"),
    (dict(holdout=(("red", "hexagon"),)), "holdout"),
    (dict(holdout=("red",)), "holdout"),
    (dict(holdout=tuple(ms.ALL_PAIRS)), "holdout"),
    (dict(num_objects=2, holdout=tuple(p for p in ms.ALL_PAIRS if p[0] != "red")),
     "holdout"),
])
def test_config_rejects_bad_values(kwargs, field):
  with pytest.raises(ValueError, match=field):
    ms.ShapesConfig(**kwargs)


def test_config_normalises_holdout():
  a = ms.ShapesConfig(holdout=[["blue", "square"], ("red", "circle"), ("red", "circle")])
  b = ms.ShapesConfig(holdout=(("red", "circle"), ("blue", "square")))
  assert a == b and a.holdout == (("red", "circle"), ("blue", "square"))
  assert hash(a) == hash(b)
  assert ms.builder_config(a).name == ms.builder_config(b).name
  assert ms.builder_config(a).name != ms.builder_config(ms.ShapesConfig()).name


@pytest.mark.parametrize("kwargs, field", [
    (dict(color="pink"), "color"), (dict(shape="oval"), "shape"), (dict(size="medium"), "size"),
    (dict(motion="spin"), "motion"), (dict(fy=1.0), "fy"), (dict(fx=-0.1), "fx")])
def test_shape_object_rejects_bad_values(kwargs, field):
  good = dict(color="red", shape="circle", size="small", motion="left", fy=0.5, fx=0.5)
  with pytest.raises(ValueError, match=field):
    ms.ShapeObject(**{**good, **kwargs})


@pytest.mark.parametrize("h, w, small, large", [
    (64, 64, 13, 22), (48, 80, 10, 17), (32, 96, 6, 11), (16, 16, 3, 6),
    (128, 128, 26, 45)])
def test_side_table(h, w, small, large):
  assert ms.side_pixels("small", h, w) == contract_side("small", h, w) == small
  assert ms.side_pixels("large", h, w) == contract_side("large", h, w) == large


# ---------------------------------------------------------------------------
# Determinism.

def digest(video):
  return hashlib.sha256(np.ascontiguousarray(video).tobytes()).hexdigest()[:16]


def test_determinism_same_example_twice():
  for num_objects in (1, 2):
    a = ms.example(ms.ShapesConfig(num_objects=num_objects), "train", 7)
    b = ms.example(ms.ShapesConfig(num_objects=num_objects), "train", 7)
    np.testing.assert_array_equal(a["video"], b["video"])
    assert a["caption"] == b["caption"] and a["objects"] == b["objects"]


def test_determinism_different_keys_differ():
  cfg = ms.ShapesConfig()
  seen = {(ms.example(cfg, "train", i)["caption"],
           digest(ms.example(cfg, "train", i)["video"])) for i in range(20)}
  assert len(seen) == 20
  train = [ms.sample_objects(cfg, "train", i) for i in range(50)]
  test = [ms.sample_objects(cfg, "test", i) for i in range(50)]
  assert train != test
  other_seed = [ms.sample_objects(ms.ShapesConfig(seed=1), "train", i) for i in range(50)]
  assert train != other_seed


def test_objects_independent_of_render_size():
  cfg = ms.ShapesConfig()
  a = ms.example(cfg, "train", 3)
  b = ms.example(cfg, "train", 3, frames=5, height=32, width=96)
  assert a["caption"] == b["caption"]
  for oa, ob in zip(a["objects"], b["objects"]):
    assert oa["y"] / 64 == pytest.approx(ob["y"] / 32)
    assert oa["x"] / 64 == pytest.approx(ob["x"] / 96)
  assert b["video"].shape == (5, 32, 96, 3)


# Pinned at release: example i of a split with seed s is the same clip on every
# machine and every run. A change here breaks the contract (and every stored
# data set): bump MovingShapes.VERSION and say so in the docs.
PINNED = [
    # (seed, num_objects, split, index), caption, (y, x) starts, sha256[:16] of the video
    ((0, 1, "train", 0), "a large cyan triangle staying still",
     [(1.0576171875, 52.048828125)], "2358513acfcc863e"),
    ((0, 1, "test", 0), "a small blue square moving right",
     [(61.216796875, 3.7509765625)], "4b60a3df48619acb"),
    ((3, 2, "train", 5),
     "a small green circle moving down and a large magenta triangle moving left",
     [(37.1865234375, 45.2978515625), (16.201171875, 62.3466796875)], "be8f1e7517867b60"),
]


@pytest.mark.parametrize("key, text, starts, video_digest", PINNED)
def test_pinned_examples(key, text, starts, video_digest):
  seed, n, split, index = key
  e = ms.example(ms.ShapesConfig(seed=seed, num_objects=n), split, index)
  assert e["caption"] == text
  assert [(o["y"], o["x"]) for o in e["objects"]] == starts
  assert digest(e["video"]) == video_digest


# ---------------------------------------------------------------------------
# Pixels: colours, sizes, shapes.


@pytest.mark.parametrize("num_objects", [1, 2])
@pytest.mark.parametrize("h, w", [(64, 64), (48, 80), (16, 16)])
def test_every_pixel_black_or_an_object_color(num_objects, h, w):
  cfg = ms.ShapesConfig(num_objects=num_objects, height=h, width=w, frames=8)
  for i in range(40):
    e = ms.example(cfg, "train", i)
    assert e["video"].dtype == np.uint8 and e["video"].shape == (8, h, w, 3)
    allowed = {BLACK} | {CONTRACT_COLORS[o["color"]] for o in e["objects"]}
    present = pixel_colors(e["video"])
    assert present <= allowed
    # The last-drawn object is never hidden; the background always shows.
    assert CONTRACT_COLORS[e["objects"][-1]["color"]] in present
    assert BLACK in present


@pytest.mark.parametrize("h, w", CANVASES)
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("y, x", [(20.0, 30.0), (20.3, 30.71), (25.5, 33.999)])
def test_square_is_exactly_side_by_side(h, w, size, y, x):
  y, x = y * h / 64, x * w / 64  # away from the edges at every canvas
  video = ms.render([obj("green", "square", size, "still", y, x, h, w)], 1, h, w)
  m = color_mask(video[0], "green")
  s = contract_side(size, h, w)
  r0, r1, c0, c1 = bbox(m)
  assert (r1 - r0, c1 - c0) == (s, s)
  assert m.sum() == s * s
  # Centred on the object: pixel centres in [y - s/2, y + s/2).
  assert r0 + 0.5 >= y - s / 2 and r1 - 0.5 < y + s / 2


@pytest.mark.parametrize("h, w", [(64, 64), (48, 80)])
def test_square_covers_side_squared_anywhere(h, w):
  rng = np.random.default_rng(0)
  for _ in range(30):
    size = ["small", "large"][rng.integers(2)]
    o = obj("blue", "square", size, "still", rng.uniform(0, h), rng.uniform(0, w), h, w)
    m = color_mask(ms.render([o], 1, h, w)[0], "blue")
    s = contract_side(size, h, w)
    assert m.sum() == s * s
    # On the torus it is s full rows and s full columns' worth.
    assert np.count_nonzero(m.any(axis=1)) == s
    assert np.count_nonzero(m.any(axis=0)) == s


@pytest.mark.parametrize("h, w", CANVASES)
@pytest.mark.parametrize("size", ["small", "large"])
def test_circle_diameter(h, w, size):
  s = contract_side(size, h, w)
  for y, x in [(h / 2, w / 2), (h / 2 + 0.5, w / 2 + 0.5), (h / 2 + 0.3, w / 2 - 0.2)]:
    m = color_mask(ms.render([obj("cyan", "circle", size, "still", y, x, h, w)], 1, h, w)[0],
                   "cyan")
    r0, r1, c0, c1 = bbox(m)
    assert s - 1 <= r1 - r0 <= s and s - 1 <= c1 - c0 <= s
    assert m.sum() == pytest.approx(math.pi * s * s / 4, rel=0.2, abs=s + 1)
    # Round: the widest row and the tallest column agree.
    assert abs(m.sum(axis=1).max() - m.sum(axis=0).max()) <= 1
    # Not a square: the corners of the bounding box are empty.
    if s >= 10:
      assert not m[r0, c0] and not m[r1 - 1, c1 - 1]


@pytest.mark.parametrize("h, w", CANVASES)
@pytest.mark.parametrize("size", ["small", "large"])
def test_triangle_equilateral_apex_up(h, w, size):
  s = contract_side(size, h, w)
  y, x = h / 2 + 0.37, w / 2 - 0.21
  m = color_mask(
      ms.render([obj("magenta", "triangle", size, "still", y, x, h, w)], 1, h, w)[0],
      "magenta")
  r0, r1, c0, c1 = bbox(m)
  widths = m[r0:r1].sum(axis=1)
  assert np.all(np.diff(widths) >= 0)  # widens downwards: apex up
  assert widths[0] <= 3  # narrow top row
  assert s - 2 <= widths[-1] <= s  # base = side
  assert s - 2 <= c1 - c0 <= s
  assert abs((r1 - r0) - s * math.sqrt(3) / 2) <= 1  # height
  # Its bounding box is centred on the object's centre.
  assert abs((r0 + r1) / 2 - y) <= 1 and abs((c0 + c1) / 2 - x) <= 1
  # Each row is one run of pixels, centred.
  for row in m[r0:r1]:
    cols = np.nonzero(row)[0]
    assert np.all(np.diff(cols) == 1)
    if len(cols):
      assert abs((cols[0] + cols[-1] + 1) / 2 - x) <= 1
  # Area of an equilateral triangle of side s.
  assert m.sum() == pytest.approx(math.sqrt(3) / 4 * s * s, rel=0.2, abs=s + 1)


@pytest.mark.parametrize("h, w", [(64, 64), (48, 80), (16, 24), (33, 17)])
@pytest.mark.parametrize("num_objects", [1, 2])
def test_matches_literal_reading_of_contract(h, w, num_objects):
  cfg = ms.ShapesConfig(num_objects=num_objects)
  for i in range(25):
    objects = ms.sample_objects(cfg, "train", i)
    np.testing.assert_array_equal(ms.render(objects, 6, h, w),
                                  reference_render(objects, 6, h, w))


# ---------------------------------------------------------------------------
# Motion.


@pytest.mark.parametrize("h, w", [(64, 64), (48, 80)])
@pytest.mark.parametrize("shape", ms.SHAPES)
@pytest.mark.parametrize("motion", ms.MOTIONS)
def test_speed_and_direction_from_centroid(h, w, shape, motion):
  speed = min(h, w) / 32
  assert speed == {(64, 64): 2.0, (48, 80): 1.5}[(h, w)]
  frames = 9
  dy, dx = VELOCITY[motion]
  # Start so the whole path stays clear of the edges (no wrapping).
  y = h / 2 - dy * speed * (frames - 1) / 2 + 0.3
  x = w / 2 - dx * speed * (frames - 1) / 2 + 0.3
  video = ms.render([obj("yellow", shape, "small", motion, y, x, h, w)], frames, h, w)
  m = color_mask(video, "yellow")
  assert not m[:, 0].any() and not m[:, -1].any()
  assert not m[:, :, 0].any() and not m[:, :, -1].any()
  t = np.arange(frames)
  cy = np.array([np.nonzero(f)[0].mean() for f in m])
  cx = np.array([np.nonzero(f)[1].mean() for f in m])
  vy = np.polyfit(t, cy, 1)[0]
  vx = np.polyfit(t, cx, 1)[0]
  assert vy == pytest.approx(dy * speed, abs=0.1)
  assert vx == pytest.approx(dx * speed, abs=0.1)
  # Whole displacement over the clip, to within a pixel.
  assert cy[-1] - cy[0] == pytest.approx(dy * speed * (frames - 1), abs=1)
  assert cx[-1] - cx[0] == pytest.approx(dx * speed * (frames - 1), abs=1)
  if motion == "still":
    assert np.all(video == video[:1])


@pytest.mark.parametrize("h, w", [(64, 64), (48, 80), (32, 96)])
@pytest.mark.parametrize("shape", ms.SHAPES)
@pytest.mark.parametrize("motion", ["left", "right", "up", "down"])
def test_wraparound_is_a_torus_shift(h, w, shape, motion):
  """Objects near an edge show at both sides; frames are exact torus shifts."""
  speed = min(h, w) / 32
  dy, dx = VELOCITY[motion]
  # Frames k apart move by a whole number of pixels.
  k = 1 if speed == int(speed) else 2
  shift = int(speed * k)
  # Start astride the edge the object moves towards.
  y = h / 2 + 0.25 if dy == 0 else (h - 1.0 if dy > 0 else 1.0)
  x = w / 2 + 0.25 if dx == 0 else (w - 1.0 if dx > 0 else 1.0)
  frames = 2 * max(h, w) // int(max(speed, 1)) + 1
  o = obj("red", shape, "large", motion, y, x, h, w)
  video = ms.render([o], frames, h, w)
  m = color_mask(video, "red")
  # Drawn at both sides in the first frame.
  if dx:
    assert m[0][:, 0].any() and m[0][:, -1].any()
  else:
    assert m[0][0].any() and m[0][-1].any()
  for t in range(frames - k):
    np.testing.assert_array_equal(
        video[t + k], np.roll(video[t], (dy * shift, dx * shift), axis=(0, 1)))
  # Pixel count conserved across frames k apart (exactly, for every frame
  # when the speed is whole).
  counts = m.reshape(frames, -1).sum(axis=1)
  np.testing.assert_array_equal(counts[k:], counts[:-k])
  if shape == "square":
    assert np.all(counts == contract_side("large", h, w) ** 2)


@pytest.mark.parametrize("h, w", [(64, 64), (32, 96)])
def test_long_clip_period(h, w):
  speed = min(h, w) / 32
  cfg = ms.ShapesConfig(height=h, width=w, frames=256)
  for i in range(6):
    e = ms.example(cfg, "train", i)
    v = e["video"]
    assert v.shape == (256, h, w, 3)
    (o,) = e["objects"]
    if o["motion"] in ("left", "right"):
      period = int(w / speed)
    elif o["motion"] in ("up", "down"):
      period = int(h / speed)
    else:
      period = 1
    if period < 256:
      np.testing.assert_array_equal(v[period:], v[:-period])
    counts = color_mask(v, o["color"]).reshape(256, -1).sum(axis=1)
    assert counts.min() > 0


def test_large_and_odd_canvases_render():
  for h, w, t in [(256, 384, 4), (17, 33, 3), (16, 200, 2)]:
    cfg = ms.ShapesConfig(height=h, width=w, frames=t, num_objects=2)
    for i in range(3):
      e = ms.example(cfg, "train", i)
      assert e["video"].shape == (t, h, w, 3)
      assert pixel_colors(e["video"]) <= {BLACK} | {
          CONTRACT_COLORS[o["color"]] for o in e["objects"]}


# ---------------------------------------------------------------------------
# Captions and ground truth.


def test_caption_examples():
  a = ms.ShapeObject("red", "circle", "large", "left", 0.1, 0.2)
  b = ms.ShapeObject("cyan", "square", "small", "still", 0.3, 0.4)
  text = "a large red circle moving left and a small cyan square staying still"
  assert ms.caption([a, b]) == text  # the contract's own example
  assert ms.caption([b]) == "a small cyan square staying still"
  assert ms.caption([a.as_dict(64, 64)]) == "a large red circle moving left"
  assert ms.parse_caption(text) == [
      dict(size="large", color="red", shape="circle", motion="left"),
      dict(size="small", color="cyan", shape="square", motion="still")]


@pytest.mark.parametrize("num_objects", [1, 2])
def test_caption_grammar_round_trip(num_objects):
  cfg = ms.ShapesConfig(num_objects=num_objects)
  for split in ("train", "test"):
    for i in range(300):
      objects = ms.sample_objects(cfg, split, i)
      text = ms.caption(objects)
      assert CAPTION_RE.fullmatch(text), text
      assert text == text.lower() and not text.endswith(".")
      assert text.count(" and ") == num_objects - 1
      assert ms.parse_caption(text) == [
          dict(size=o.size, color=o.color, shape=o.shape, motion=o.motion) for o in objects]
      assert ms.parse_caption(text.encode()) == ms.parse_caption(text)


@pytest.mark.parametrize("text", [
    "", "a large red circle", "a large red circle moving left.",
    "A large red circle moving left", "an large red circle moving left",
    "a huge red circle moving left", "a large pink circle moving left",
    "a large red hexagon moving left", "a large red circle moving sideways",
    "a large red circle staying left", "a large red circle moving still",
    "a large red circle moving left and",
    "a large red circle moving left  and a small red square staying still",
    "a large red circle moving left and a small red square staying still and "
    "a small blue circle staying still",
    " a large red circle moving left", "a large red circle moving left\n",
])
def test_parse_caption_rejects(text):
  with pytest.raises(ValueError):
    ms.parse_caption(text)


@pytest.mark.parametrize("num_objects", [1, 2])
def test_ground_truth_matches_caption_and_pixels(num_objects):
  h, w = 48, 80
  cfg = ms.ShapesConfig(num_objects=num_objects, height=h, width=w, frames=4)
  speed = min(h, w) / 32
  for i in range(60):
    e = ms.example(cfg, "test", i)
    objects = e["objects"]
    assert len(objects) == num_objects
    assert ms.parse_caption(e["caption"]) == [
        {k: o[k] for k in ("size", "color", "shape", "motion")} for o in objects]
    for o in objects:
      assert 0 <= o["y"] < h and 0 <= o["x"] < w
    if num_objects == 2:
      assert objects[0]["color"] != objects[1]["color"]
      continue
    (o,) = objects
    m = color_mask(e["video"], o["color"])
    s = contract_side(o["size"], h, w)
    # The centre of the bounding box (the centroid, but for the triangle,
    # whose centroid is h/6 below) is the ground-truth start.
    off = s * math.sqrt(3) / 2 / 6 if o["shape"] == "triangle" else 0.0
    cy = circular_centre(m[0], h, 0) - off
    cx = circular_centre(m[0], w, 1)
    assert abs(torus_diff(cy, o["y"], h)) <= 0.75
    assert abs(torus_diff(cx, o["x"], w)) <= 0.75
    # Motion: the centre moves by the captioned velocity (2 frames = 3 px).
    dy = torus_diff(circular_centre(m[2], h, 0), circular_centre(m[0], h, 0), h)
    dx = torus_diff(circular_centre(m[2], w, 1), circular_centre(m[0], w, 1), w)
    vy, vx = VELOCITY[o["motion"]]
    assert dy == pytest.approx(2 * vy * speed, abs=0.5)
    assert dx == pytest.approx(2 * vx * speed, abs=0.5)


def test_choices_roughly_uniform():
  cfg = ms.ShapesConfig(num_objects=1)
  n = 3000
  objects = [ms.sample_objects(cfg, "train", i)[0] for i in range(n)]
  for field, values in [("color", ms.COLORS), ("shape", ms.SHAPES), ("size", ms.SIZES),
                        ("motion", ms.MOTIONS)]:
    counts = np.array([sum(getattr(o, field) == v for o in objects) for v in values])
    expected = n / len(values)
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected)), (field, counts)
  fy = np.array([o.fy for o in objects])
  fx = np.array([o.fx for o in objects])
  for f in (fy, fx):
    hist = np.histogram(f, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(hist - n / 10) < 5 * math.sqrt(n / 10))


# ---------------------------------------------------------------------------
# Holdout.

RED_PAIRS = tuple(("red", s) for s in ms.SHAPES)
MIXED = (("red", "circle"), ("blue", "square"), ("green", "triangle"))


@pytest.mark.parametrize("num_objects", [1, 2])
@pytest.mark.parametrize("holdout", [RED_PAIRS, MIXED])
def test_holdout_never_in_train_or_test(num_objects, holdout):
  cfg = ms.ShapesConfig(num_objects=num_objects, holdout=holdout, frames=2, height=32, width=32)
  held = set(holdout)
  for split in ("train", "test"):
    for i in range(1500):
      objects = ms.sample_objects(cfg, split, i)
      assert not {(o.color, o.shape) for o in objects} & held
      if num_objects == 2:
        assert objects[0].color != objects[1].color
    for i in range(150):
      e = ms.example(cfg, split, i)
      parsed = ms.parse_caption(e["caption"])
      assert not {(p["color"], p["shape"]) for p in parsed} & held
      if holdout == RED_PAIRS:  # no red pixel anywhere
        assert not color_mask(e["video"], "red").any()


@pytest.mark.parametrize("num_objects", [1, 2])
@pytest.mark.parametrize("holdout", [RED_PAIRS, MIXED, (("cyan", "triangle"),)])
def test_holdout_split_always_has_a_holdout_pair(num_objects, holdout):
  cfg = ms.ShapesConfig(num_objects=num_objects, holdout=holdout, frames=2, height=32, width=32)
  held = set(holdout)
  firsts = set()
  for i in range(400):
    objects = ms.sample_objects(cfg, "holdout", i)
    assert (objects[0].color, objects[0].shape) in held
    firsts.add((objects[0].color, objects[0].shape))
    if num_objects == 2:
      assert (objects[1].color, objects[1].shape) not in held
      assert objects[1].color != objects[0].color
  assert firsts == held  # every holdout pair shows up
  for i in range(50):
    e = ms.example(cfg, "holdout", i)
    first = ms.parse_caption(e["caption"])[0]
    assert (first["color"], first["shape"]) in held
    if holdout == RED_PAIRS and num_objects == 1:
      assert color_mask(e["video"], "red").any()


def test_empty_holdout_split_raises():
  cfg = ms.ShapesConfig()
  with pytest.raises(ValueError, match="holdout"):
    ms.sample_objects(cfg, "holdout", 0)
  with pytest.raises(ValueError, match="holdout"):
    ms.example(cfg, "holdout", 0)
  with pytest.raises(ValueError, match="holdout"):
    ms.MovingShapesSource(cfg, "holdout", 10)
  with pytest.raises(ValueError, match="split"):
    ms.sample_objects(cfg, "validation", 0)


# ---------------------------------------------------------------------------
# Two objects.


def test_second_object_drawn_on_top():
  a = obj("red", "square", "large", "still", 30.0, 30.0)
  b = obj("blue", "circle", "large", "still", 34.0, 36.0)
  ab = ms.render([a, b], 1, 64, 64)[0]
  ba = ms.render([b, a], 1, 64, 64)[0]
  only_a = color_mask(ms.render([a], 1, 64, 64)[0], "red")
  only_b = color_mask(ms.render([b], 1, 64, 64)[0], "blue")
  overlap = only_a & only_b
  assert overlap.sum() > 50
  assert color_mask(ab, "blue")[overlap].all()
  assert color_mask(ba, "red")[overlap].all()
  np.testing.assert_array_equal(color_mask(ab, "red"), only_a & ~only_b)
  np.testing.assert_array_equal(color_mask(ab, "blue"), only_b)


def test_sampled_pairs_layer_in_caption_order():
  cfg = ms.ShapesConfig(num_objects=2, frames=4)
  overlaps = 0
  for i in range(100):
    e = ms.example(cfg, "train", i)
    first, second = e["objects"]
    assert first["color"] != second["color"]
    m1 = color_mask(e["video"], first["color"])
    m2 = color_mask(e["video"], second["color"])
    # Rendered alone, the first object covers these pixels; those the second
    # object covers show the second colour.
    objs = ms.sample_objects(cfg, "train", i)
    alone1 = color_mask(ms.render(objs[:1], 4, 64, 64), first["color"])
    alone2 = color_mask(ms.render(objs[1:], 4, 64, 64), second["color"])
    np.testing.assert_array_equal(m2, alone2)
    np.testing.assert_array_equal(m1, alone1 & ~alone2)
    overlaps += int((alone1 & alone2).any())
  assert overlaps > 0


# ---------------------------------------------------------------------------
# Sources.


def test_on_demand_source():
  cfg = ms.ShapesConfig(num_objects=2)
  src = ms.MovingShapesSource(cfg, "train", 50)
  assert len(src) == 50
  assert src.info(src.record(3)) is None
  with pytest.raises(IndexError):
    src.record(50)
  with pytest.raises(IndexError):
    src.record(-1)
  c = src.clip(src.record(3), 8, 32, 96, clips.Sampling(), np.random.default_rng(0))
  e = ms.example(cfg, "train", 3, frames=8, height=32, width=96)
  np.testing.assert_array_equal(c["video"], e["video"])
  assert c["video"].shape == (8, 32, 96, 3) and c["video"].dtype == np.uint8
  assert isinstance(c["caption"], str) and c["caption"] == e["caption"]
  for key in ("gt_color", "gt_shape", "gt_size", "gt_motion"):
    assert c[key].dtype == np.int32 and c[key].shape == (2,)
  assert c["gt_start"].dtype == np.float32 and c["gt_start"].shape == (2, 2)
  parsed = ms.parse_caption(c["caption"])
  assert [ms.COLOR_NAMES[k] for k in c["gt_color"]] == [p["color"] for p in parsed]
  assert [ms.SHAPES[k] for k in c["gt_shape"]] == [p["shape"] for p in parsed]
  assert [ms.SIZE_NAMES[k] for k in c["gt_size"]] == [p["size"] for p in parsed]
  assert [ms.MOTIONS[k] for k in c["gt_motion"]] == [p["motion"] for p in parsed]
  np.testing.assert_allclose(c["gt_start"], [[o["y"], o["x"]] for o in e["objects"]])
  # Grain RandomAccessDataSource and pickling.
  item = src[3]
  np.testing.assert_array_equal(item["video"], ms.example(cfg, "train", 3)["video"])
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(
      clone.clip(3, 8, 32, 96, clips.Sampling(), np.random.default_rng(1))["video"], c["video"])


def test_builder_and_record_source(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  cfg = ms.ShapesConfig(num_objects=2, holdout=MIXED, frames=8, height=32, width=48, seed=5)
  sizes = {"train": 12, "test": 4, "holdout": 5}
  builder = ms.MovingShapes(data_dir=tmp_path, shapes=cfg, split_sizes=sizes,
                            file_format="array_record")
  builder.download_and_prepare()
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == sizes
  for split, n in sizes.items():
    data = ms.load_array_record(tmp_path, cfg, split)
    assert len(data) == n
    for i in range(n):
      stored, fresh = data[i], ms.example(cfg, split, i)
      assert stored["index"] == i
      np.testing.assert_array_equal(stored["video"], fresh["video"])
      assert stored["caption"].decode() == fresh["caption"]
      for k, names in (("color", ms.COLOR_NAMES), ("shape", ms.SHAPES),
                       ("size", ms.SIZE_NAMES), ("motion", ms.MOTIONS)):
        assert [names[j] for j in stored["objects"][k]] == [o[k] for o in fresh["objects"]]
      np.testing.assert_allclose(stored["objects"]["y"], [o["y"] for o in fresh["objects"]])

  # The record source gives the on-demand clip at the stored shape.
  rec_src = pickle.loads(pickle.dumps(ms.MovingShapesRecordSource(tmp_path, cfg, "holdout")))
  live = ms.MovingShapesSource(cfg, "holdout", 5)
  assert len(rec_src) == 5
  sampling = clips.Sampling(random_start=False)
  for i in range(5):
    rec = rec_src.record(i)
    assert rec_src.info(rec) == clips.ClipInfo(num_frames=8, fps=8, height=32, width=48)
    a = rec_src.clip(rec, 8, 32, 48, sampling, np.random.default_rng(0))
    b = live.clip(live.record(i), 8, 32, 48, sampling, np.random.default_rng(0))
    assert a["caption"] == b["caption"].encode()
    for k in b:
      if k != "caption":
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == b[k].dtype
  # A later window: starts move with the objects.
  rec = rec_src.record(0)
  a = rec_src.clip(rec, 4, 32, 48, clips.Sampling(stride=1, random_start=True),
                   np.random.default_rng(3))
  first = np.nonzero([np.array_equal(a["video"][0], f) for f in rec["video"]])[0]
  b = ms.example(cfg, "holdout", 0)
  speed = 1.0
  for n, o in enumerate(b["objects"]):
    vy, vx = VELOCITY[o["motion"]]
    t0 = first[0] if vy or vx else 0
    np.testing.assert_allclose(a["gt_start"][n], [(o["y"] + t0 * vy * speed) % 32,
                                                   (o["x"] + t0 * vx * speed) % 48], atol=1e-4)
  # Resized and cropped.
  c = rec_src.clip(rec, 3, 16, 16, clips.Sampling(stride=2), np.random.default_rng(0))
  assert c["video"].shape == (3, 16, 16, 3) and c["gt_start"].shape == (2, 2)
  with pytest.raises(clips.BadExample):
    rec_src.clip(rec, 9, 32, 48, clips.Sampling(), np.random.default_rng(0))

  # Asking for other sizes of the same config in the same directory fails
  # clearly; other configs live apart.
  with pytest.raises(ValueError, match="already holds"):
    ms.MovingShapes(data_dir=tmp_path, shapes=cfg,
                    split_sizes={"train": 3, "test": 4, "holdout": 5})
  tiny = ms.ShapesConfig(frames=2, height=16, width=16)
  other = ms.MovingShapes(data_dir=tmp_path, shapes=tiny,
                          split_sizes={"train": 2, "test": 1, "holdout": 0},
                          file_format="array_record")
  assert other.data_dir != builder.data_dir
  other.download_and_prepare()
  assert set(other.info.splits) == {"train", "test"}
  with pytest.raises(ValueError, match="holdout"):
    ms.load_array_record(tmp_path, tiny, "holdout")
  with pytest.raises(FileNotFoundError):
    ms.load_array_record(tmp_path, ms.ShapesConfig(seed=99), "train")
  clone = pickle.loads(pickle.dumps(builder))
  assert clone.shapes == cfg and clone.data_dir == builder.data_dir
