import json
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.diffusion import long_video as lv

# (total, window, known, context, max_span)
CASES = [
    (64, 16, (), None, None),
    (64, 16, (0,), None, None),
    (64, 16, (0, 1, 2), None, None),
    (64, 16, (0, 63), None, None),
    (64, 16, (0,), None, 16),
    (64, 16, (0, 63), 4, 24),
    (64, 16, (), 12, 32),
    (64, 16, (5, 40), 3, None),
    (17, 5, (), None, None),
    (17, 5, (0,), None, None),
    (17, 5, (0, 1, 2), None, None),
    (17, 5, (0, 16), None, 8),
    (17, 5, (), 1, 5),
    (17, 5, (0, 16), 0, None),
    (40, 6, (0, 10, 11, 25, 39), None, 10),
    (100, 8, tuple(range(0, 100, 7)), 3, 20),
    (300, 16, (0,), None, 64),
    (9, 1, (), None, None),
    (9, 1, (0, 8), None, 1),
    (5, 16, (0,), None, None),
    (16, 16, (0, 15), None, 16),
]


def _plan(scheme, case):
  total, window, known, context, max_span = case
  return lv.make_plan(scheme, total, window, known=known, context=context, max_span=max_span)


def _assert_valid(plan, max_span):
  """The plan invariants, checked independently of check_plan."""
  total = plan.total
  available = set(plan.known)
  generated = []
  for i, step in enumerate(plan.steps):
    assert list(step.generate) == sorted(set(step.generate)) and step.generate, i
    assert list(step.condition) == sorted(set(step.condition)), i
    assert not set(step.generate) & set(step.condition), i
    assert set(step.condition) <= available, (i, "conditions on a frame not yet available")
    assert all(0 <= f < total for f in step.frames), i
    assert len(step.frames) == min(plan.window, total), (i, "one window size: one compile")
    if max_span is not None:
      assert step.frames[-1] - step.frames[0] < max_span, i
    generated += step.generate
    available |= set(step.generate)
  assert sorted(generated) == sorted(set(range(total)) - set(plan.known)), "each frame once"


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("scheme", lv.SCHEMES)
def test_plans_are_valid(scheme, case):
  total, window, known, _, max_span = case
  if scheme == "brute_force" and max_span is not None and max_span < total:
    with pytest.raises(ValueError, match="brute_force"):
      _plan(scheme, case)
    return
  plan = _plan(scheme, case)
  lv.check_plan(plan, max_span)
  _assert_valid(plan, max_span)
  assert plan.scheme == scheme and plan.total == total and plan.known == tuple(sorted(known))
  if scheme == "brute_force":
    assert plan.window == total and len(plan.steps) == 1
    assert plan.steps[0].condition == tuple(sorted(known))
  else:
    assert plan.window == window
  if total <= window or scheme == "brute_force":
    assert len(plan.steps) == 1
    assert plan.steps[0].condition == plan.known
  assert len({len(s.frames) for s in plan.steps}) == 1  # one window size


def test_random_plans_are_valid():
  rnd = random.Random(0)
  for _ in range(150):
    total = rnd.randint(1, 70)
    window = rnd.randint(1, 12)
    known = tuple(sorted(rnd.sample(range(total), rnd.randint(0, min(total - 1, 6)))))
    context = rnd.choice([None, rnd.randint(0, window - 1)])
    max_span = rnd.choice([None, window, window + rnd.randint(0, 30)])
    for scheme in lv.SCHEMES[:3]:
      plan = lv.make_plan(scheme, total, window, known=known, context=context, max_span=max_span)
      _assert_valid(plan, max_span)


def test_all_known_is_an_empty_plan():
  for scheme in lv.SCHEMES:
    plan = lv.make_plan(scheme, 20, 8, known=range(20))
    assert plan.steps == ()
    lv.check_plan(plan)
    assert "0 steps" in plan.describe()


def test_autoregressive_steps():
  plan = lv.make_plan("autoregressive", 64, 16, context=8)
  assert len(plan.steps) == 7  # 16 frames, then 8 per step
  assert plan.steps[0] == lv.Step(tuple(range(16)), ())
  assert plan.steps[1] == lv.Step(tuple(range(16, 24)), tuple(range(8, 16)))
  assert plan.steps[-1] == lv.Step(tuple(range(56, 64)), tuple(range(48, 56)))
  # Image-to-video: the first step conditions on the given first frame.
  plan = lv.make_plan("autoregressive", 64, 16, known=(0,))
  assert plan.steps[0] == lv.Step(tuple(range(1, 16)), (0,))
  # Extension: the most recent `context` known frames.
  plan = lv.make_plan("autoregressive", 64, 16, known=range(12), context=4)
  assert plan.steps[0] == lv.Step(tuple(range(12, 24)), (8, 9, 10, 11))


def test_known_last_frame_is_a_conditioning_frame():
  for scheme in lv.SCHEMES[:3]:
    plan = lv.make_plan(scheme, 64, 16, known=(0, 63))
    assert any(63 in s.condition for s in plan.steps), scheme


def test_hierarchical_key_frames_span_the_video():
  plan = lv.make_plan("hierarchical", 64, 16)
  first = plan.steps[0]
  assert first.condition == () and first.frames[0] == 0 and first.frames[-1] == 63
  assert np.diff(first.generate).max() <= 5  # evenly spaced: 63 / 15 = 4.2
  plan = lv.make_plan("hierarchical", 64, 16, known=(0,), max_span=64)
  assert plan.steps[0].condition == (0,) and plan.steps[0].generate[-1] == 63
  # In-filling steps condition on key frames on both sides of what they generate.
  for step in plan.steps[1:]:
    assert min(step.condition) < min(step.generate) and max(step.condition) > max(step.generate)


def test_hierarchical_segments_under_max_span():
  plan = lv.make_plan("hierarchical", 300, 16, known=(0,), max_span=64)
  spans = [s.frames[-1] - s.frames[0] for s in plan.steps]
  assert max(spans) < 64 and spans[0] == 63
  stage1 = plan.steps[:5]
  for prev, step in zip(stage1, stage1[1:]):  # each segment conditions on the previous' last keys
    assert set(prev.frames[-8:]) <= set(step.condition)


def test_long_range_conditions_on_distant_frames():
  plan = lv.make_plan("long_range", 64, 16, context=8)
  for step in plan.steps[1:]:
    first = step.generate[0]
    assert min(step.condition) < first - 8
    assert set(range(first - 4, first)) <= set(step.condition)  # the most recent half
  plan = lv.make_plan("long_range", 64, 16, context=8, max_span=32)
  for step in plan.steps[2:]:
    assert min(step.condition) < step.generate[0] - 8
  # With max_span == window nothing distant fits: autoregressive.
  assert (lv.make_plan("long_range", 64, 16, max_span=16).steps
          == lv.make_plan("autoregressive", 64, 16, max_span=16).steps)


def test_positions():
  np.testing.assert_array_equal(lv.positions((3, 5, 9)), [0, 2, 6])
  assert lv.positions([7]).dtype == np.int32


def _plan_of(steps, total=8, window=4, known=(), scheme="autoregressive"):
  return lv.Plan(scheme, total, window, known, tuple(lv.Step(g, c) for g, c in steps))


@pytest.mark.parametrize("steps,known,message", [
    ([((0, 1, 2, 3), ()), ((3, 4, 5), (2,)), ((6, 7), (4, 5))], (), "frame 3 twice"),
    ([((0, 1, 2, 3), ()), ((4, 5), (2, 3))], (), "6-7 are never generated"),
    ([((0, 1, 2, 3), ()), ((4, 5), (3, 6)), ((6, 7), (4, 5))], (),
     r"step 1: conditions on frames \[6\]"),
    ([((0, 1, 2, 3, 4), ()), ((5, 6, 7), (4,))], (), "exceed the window"),
    ([((0, 1, 2, 3), ()), ((4, 5, 6, 7), ())], (), None),
    ([((0, 1, 2, 3), ()), ((4, 5, 6), ())], (), "one compile"),
    ([((0, 1, 2, 3), ()), ((4, 5, 6), (0,)), ((7,), (4, 5, 6))], (), "span 6"),
    ([((0, 1, 2, 3), ()), ((4, 5), (0, 1))], (4,), "generates known frame 4"),
    ([((0, 1, 2, 3), (3,)), ((4, 5, 6, 7), ())], (), "both generated and conditioned"),
    ([((1, 0, 2, 3), ()), ((4, 5, 6, 7), ())], (), "not sorted"),
    ([((0, 1, 2, 3), ()), ((4, 5, 6, 9), ())], (), "out of range"),
])
def test_check_plan_catches_bad_plans(steps, known, message):
  plan = _plan_of(steps, known=known)
  if message is None:
    lv.check_plan(plan, max_span=4)
    return
  with pytest.raises(ValueError, match=message):
    lv.check_plan(plan, max_span=6)


def test_check_plan_brute_force():
  with pytest.raises(ValueError, match="brute_force"):
    lv.check_plan(_plan_of([((0, 1, 2, 3, 4, 5, 6, 7), ())], window=4, scheme="brute_force"))
  lv.check_plan(_plan_of([((0, 1, 2, 3, 4, 5, 6, 7), ())], window=8, scheme="brute_force"))


@pytest.mark.parametrize("kwargs,message", [
    (dict(scheme="zigzag"), "unknown scheme"),
    (dict(total=0), "total >= 1"),
    (dict(window=0), "window needs >= 1"),
    (dict(context=16), "context"),
    (dict(context=-1), "context"),
    (dict(known=(64,)), "out of range"),
    (dict(known=(-1,)), "out of range"),
    (dict(max_span=15), "max_span 15 is shorter than the window 16"),
    (dict(scheme="brute_force", max_span=32), "brute_force"),
    (dict(total=64.0), "total must be an int"),
])
def test_bad_arguments(kwargs, message):
  args = dict(scheme="hierarchical", total=64, window=16) | kwargs
  scheme, total, window = args.pop("scheme"), args.pop("total"), args.pop("window")
  with pytest.raises(ValueError, match=message):
    lv.make_plan(scheme, total, window, **args)


def test_describe_and_json():
  plan = lv.make_plan("hierarchical", 64, 16, known=(0,))
  text = plan.describe()
  lines = text.splitlines()
  assert lines[0] == f"hierarchical: 64 frames, window 16, known 0, {len(plan.steps)} steps"
  assert len(lines) == len(plan.steps) + 1
  for i, line in enumerate(lines[1:]):
    assert line.startswith(f"  step {i}: generate ")
  assert lv.make_plan("autoregressive", 64, 16).describe().splitlines()[1:3] == [
      "  step 0: generate 0-15 | condition -", "  step 1: generate 16-23 | condition 8-15"]
  assert lv._compact([0, 4, 8, 12, 13, 14, 20]) == "0,4,...,12,13-14,20"
  data = json.loads(json.dumps(plan.to_json()))
  assert data["known"] == [0] and len(data["steps"]) == len(plan.steps)
  assert lv.Plan.from_json(data) == plan


def _fake_sampler(xp, calls):
  """Writes 1000 * step + position into generated frames, garbage into conditioning ones."""

  def sample_window(x_window, cond, pos, step_index):
    calls.append((np.asarray(x_window), np.asarray(cond), np.asarray(pos), step_index))
    shape = (1, -1) + (1,) * (x_window.ndim - 2)
    value = (1000 * step_index + xp.asarray(pos)).reshape(shape).astype(x_window.dtype)
    return xp.where(xp.asarray(cond).reshape(shape), -7.0, value + 0 * x_window)

  return sample_window


def _expected(plan, x):
  want = np.array(x, copy=True)
  for i, step in enumerate(plan.steps):
    for f in step.generate:
      want[:, f] = 1000 * i + f - step.frames[0]
  return want


@pytest.mark.parametrize("scheme", lv.SCHEMES)
@pytest.mark.parametrize("use_jax", [False, True])
def test_run(scheme, use_jax):
  total, window, known = 17, 5, (0, 16)
  plan = lv.make_plan(scheme, total, window, known=known)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, total, 2, 3, 1)).astype(np.float32)  # B T H W C
  x0 = x.copy()
  calls, seen = [], []
  xp = jnp if use_jax else np
  known_mask = np.isin(np.arange(total), known)
  out = lv.run(plan, _fake_sampler(xp, calls), jnp.asarray(x) if use_jax else x, known_mask,
               progress=lambda i, step: seen.append((i, step)))
  assert isinstance(out, jax.Array) == use_jax and out.shape == x.shape and out.dtype == x.dtype
  out = np.asarray(out)
  want = _expected(plan, x)
  np.testing.assert_array_equal(out, want)  # known frames exact; each frame written by its step
  assert seen == list(enumerate(plan.steps)) and len(calls) == len(plan.steps)
  for (x_window, cond, pos, i), step in zip(calls, plan.steps):
    np.testing.assert_array_equal(pos, lv.positions(step.frames))
    assert pos[0] == 0 and pos.dtype == np.int32
    np.testing.assert_array_equal(cond, np.isin(step.frames, step.condition))
    # The sampler sees the conditioning frames' final values (known or generated earlier).
    np.testing.assert_array_equal(x_window[:, cond], want[:, np.asarray(step.frames)[cond]])
  np.testing.assert_array_equal(x, x0)  # x itself is left alone


def test_run_jits_once():
  plan = lv.make_plan("hierarchical", 64, 16, known=(0,))
  traces = []

  @jax.jit
  def sample_window(x_window, cond, pos, step_index):
    traces.append(1)
    return jnp.where(cond[None, :, None], x_window, pos[None, :, None] + 100.0 * step_index)

  x = jnp.zeros((1, 64, 3)).at[:, 0].set(-1.0)
  out = lv.run(plan, sample_window, x)
  assert len(traces) == 1
  assert out[0, 0, 0] == -1.0 and (out[0, 1:] >= 0).all()


def test_run_errors():
  plan = lv.make_plan("autoregressive", 8, 4, known=(0,))
  x = np.zeros((1, 8, 2), np.float32)
  ok = lambda xw, cond, pos, i: xw
  with pytest.raises(ValueError, match="disagree"):
    lv.run(plan, ok, x, known=np.zeros(8, bool))
  with pytest.raises(ValueError, match="bool"):
    lv.run(plan, ok, x, known=np.zeros(8, np.int32))
  with pytest.raises(ValueError, match="T=8"):
    lv.run(plan, ok, np.zeros((1, 7, 2)))
  with pytest.raises(ValueError, match="step 0: sample_window returned shape"):
    lv.run(plan, lambda xw, cond, pos, i: xw[:, :2], x)
  with pytest.raises(ValueError, match="never generated"):
    lv.run(_plan_of([((0, 1, 2, 3), ())]), ok, x)
