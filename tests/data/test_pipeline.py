"""The Grain pipeline: bucketed batches, exact resume, sharding, bad-input policy."""

import json

import numpy as np
import pytest

from vidgen.data import buckets as buckets_lib
from vidgen.data import clips, moving_shapes, pipeline
from vidgen.text import tokenizer as tokenizer_lib

BUCKETS = buckets_lib.parse_buckets("8x32x32:4@2,4x32x48:4@1")
SHAPES = moving_shapes.ShapesConfig(num_objects=2, holdout=(("red", "triangle"),))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  captions = [moving_shapes.caption(moving_shapes.sample_objects(SHAPES, "train", i))
              for i in range(1000)]
  return tokenizer_lib.train(captions, tmp_path_factory.mktemp("tok") / "t.model")


def _shapes_ds(tokenizer, n=40, **kw):
  kw.setdefault("buckets", BUCKETS)
  return pipeline.make_dataset(moving_shapes.MovingShapesSource(SHAPES, "train", n),
                               tokenizer=tokenizer, **kw)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batches_are_bucketed_uint8_with_matching_captions(tokenizer):
  batches = _take(iter(_shapes_ds(tokenizer)), 12)
  shapes = {b["video"].shape for b in batches}
  assert shapes == {(4, 8, 32, 32, 3), (4, 4, 32, 48, 3)}
  for b in batches:
    assert b["video"].dtype == np.uint8 and b["tokens"].dtype == np.int32
    assert b["tokens"].shape == b["token_mask"].shape == (4, 32)
    for key, tokens, video in zip(b["key"], b["tokens"], b["video"]):
      objects = moving_shapes.sample_objects(SHAPES, "train", int(key))
      assert tokenizer.decode(tokens) == moving_shapes.caption(objects)
      t, h, w, _ = video.shape
      np.testing.assert_array_equal(video, moving_shapes.render(objects, t, h, w))
    assert "gt_color" in b and b["gt_color"].shape[0] == 4


def test_bucket_shares_follow_weights(tokenizer):
  batches = _take(iter(_shapes_ds(tokenizer, n=400)), 60)
  long = sum(b["video"].shape[1] == 8 for b in batches)
  assert 30 <= long <= 50  # weight 2 : 1


def test_same_seed_same_stream_other_seed_other_stream(tokenizer):
  a = _take(iter(_shapes_ds(tokenizer, seed=1)), 5)
  b = _take(iter(_shapes_ds(tokenizer, seed=1)), 5)
  c = _take(iter(_shapes_ds(tokenizer, seed=2)), 5)
  _assert_same(a, b)
  assert any(not np.array_equal(x["key"], y["key"]) for x, y in zip(a, c))


def test_epochs_reshuffle_and_cover_every_key(tokenizer):
  ds = _shapes_ds(tokenizer, n=24, buckets=buckets_lib.parse_buckets("4x16x16:4"),
                  num_epochs=2)
  batches = list(iter(ds))
  keys = np.concatenate([b["key"] for b in batches])
  assert len(keys) == 48
  first, second = keys[:24], keys[24:]
  assert sorted(first) == sorted(second) == list(range(24))
  assert not np.array_equal(first, second)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_restored_iterator_yields_exactly_the_next_batches(tokenizer, num_workers):
  ds = _shapes_ds(tokenizer, n=30, num_workers=num_workers)
  it = iter(ds)
  _take(it, 5)
  if num_workers == 0:
    # Save while clips wait in a bucket: the state holds them as keys.
    while not any(it.get_state()["shards"]["0"]["waiting"]):
      next(it)
  state = json.loads(json.dumps(it.get_state()))  # must survive JSON (orbax)
  expected = _take(it, 9)  # crosses the 30-key epoch boundary
  restored = iter(_shapes_ds(tokenizer, n=30, num_workers=num_workers))
  restored.set_state(state)
  _assert_same(_take(restored, 9), expected)


def test_workers_give_the_same_batches_as_in_process(tokenizer):
  inline = _take(iter(_shapes_ds(tokenizer, num_workers=0)), 6)
  workers = _take(iter(_shapes_ds(tokenizer, num_workers=2)), 12)
  # Each worker batches its own slice of the stream, so batches interleave
  # differently; the set of clips within the first batches is the same stream.
  inline_keys = set(np.concatenate([b["key"] for b in inline]))
  worker_keys = set(np.concatenate([b["key"] for b in workers]))
  assert inline_keys <= worker_keys


def test_hosts_read_disjoint_shards(tokenizer):
  b = buckets_lib.parse_buckets("4x16x16:4")
  shards = []
  for index in range(2):
    ds = _shapes_ds(tokenizer, n=24, buckets=b, num_epochs=1, process_index=index,
                    process_count=2)
    batches = list(iter(ds))
    assert all(x["video"].shape[0] == 2 for x in batches)  # global 4 over 2 hosts
    shards.append(set(np.concatenate([x["key"] for x in batches])))
  assert not shards[0] & shards[1]
  assert shards[0] | shards[1] == set(range(24))


def test_batch_size_must_divide_over_hosts(tokenizer):
  with pytest.raises(ValueError, match="global batch size 4 is not divisible by 3 data shards"):
    _shapes_ds(tokenizer, process_count=3)


class FlakySource:
  """A ClipSource whose keys fail in every documented way.

  key % 10: 1 missing, 2 zero-byte, 3 corrupt, 4 too few frames (3 frames),
  5 empty caption, 6 non-UTF-8 caption, 7 over-long caption; others good.
  Good clips are never black: every pixel encodes the key.
  """

  REASONS = {1: clips.MISSING_FILE, 2: clips.ZERO_BYTE, 3: clips.CORRUPT}

  def __init__(self, n, bad_every=1):
    self.n = n
    self.bad_every = bad_every  # only every `bad_every`-th block of 10 has bad keys

  def __len__(self):
    return self.n

  def _kind(self, key):
    return key % 10 if (key // 10) % self.bad_every == 0 else 0

  def record(self, key):
    if self._kind(key) in self.REASONS:
      raise clips.BadExample(self.REASONS[self._kind(key)], f"key {key}")
    return key

  def info(self, key):
    frames = 3 if self._kind(key) == 4 else 20
    return clips.ClipInfo(num_frames=frames, fps=8, height=24, width=24)

  def clip(self, key, num_frames, height, width, sampling, rng):
    idx = clips.sample_frame_indices(self.info(key), num_frames, sampling, rng)
    video = np.full((len(idx), 24, 24, 3), 1 + key % 250, np.uint8)
    caption = {5: b"  ", 6: b"a \xff\xfe caption", 7: b"word " * 40}.get(
        self._kind(key), f"clip number {key}".encode())
    return {"video": clips.resize_and_crop(video, height, width), "caption": caption}


def test_every_bad_case_is_skipped_and_counted(tokenizer):
  ds = pipeline.make_dataset(FlakySource(200, bad_every=4), buckets_lib.parse_buckets("8x16x16:5"),
                             tokenizer, num_epochs=1, shuffle=False,
                             policy=pipeline.BadInputPolicy(max_bad_fraction=0.5))
  it = iter(ds)
  batches = list(it)
  keys = np.concatenate([b["key"] for b in batches])
  assert all(b["video"].shape == (5, 8, 16, 16, 3) for b in batches)  # never short
  assert all(b["video"].min() > 0 for b in batches)  # never black
  assert all(FlakySource(200, 4)._kind(int(k)) in (0, 8, 9) for k in keys)
  counts = pipeline.skip_counts(it.get_state())
  bad_blocks = len([k for k in range(0, 200, 10) if (k // 10) % 4 == 0])
  assert counts == {r: bad_blocks for r in (
      clips.MISSING_FILE, clips.ZERO_BYTE, clips.CORRUPT, clips.TOO_FEW_FRAMES,
      clips.EMPTY_CAPTION, clips.BAD_CAPTION_ENCODING, clips.CAPTION_TOO_LONG)}
  assert it.get_state()["shards"]["0"]["seen"] == 200
  assert len(keys) == (200 - 7 * bad_blocks) // 5 * 5


def test_skip_counts_survive_resume(tokenizer):
  make = lambda: pipeline.make_dataset(
      FlakySource(400, bad_every=4), buckets_lib.parse_buckets("8x16x16:5"), tokenizer,
      policy=pipeline.BadInputPolicy(max_bad_fraction=0.5))
  it = iter(make())
  _take(it, 10)
  state = it.get_state()
  restored = iter(make())
  restored.set_state(state)
  assert pipeline.skip_counts(restored.get_state()) == pipeline.skip_counts(state)
  _assert_same(_take(restored, 5), _take(it, 5))
  assert pipeline.skip_counts(restored.get_state()) == pipeline.skip_counts(it.get_state())


def test_too_many_bad_examples_stop_the_job_with_the_counts(tokenizer):
  ds = pipeline.make_dataset(FlakySource(1000), buckets_lib.parse_buckets("8x16x16:5"),
                             tokenizer, policy=pipeline.BadInputPolicy(0.1, check_after=50))
  with pytest.raises(pipeline.DataError, match=r"of 5\d examples were bad.*caption_not_utf8=\d+.*missing_file=\d+"):
    _take(iter(ds), 100)


def test_bad_fraction_under_the_limit_runs(tokenizer):
  # 7 bad of every 40 keys = 17.5% is fine with a 20% limit.
  ds = pipeline.make_dataset(FlakySource(400, bad_every=4), buckets_lib.parse_buckets("8x16x16:5"),
                             tokenizer, policy=pipeline.BadInputPolicy(0.2, check_after=50))
  assert len(_take(iter(ds), 60)) == 60


@pytest.fixture(scope="module")
def folder_tokenizer(folder_case, tmp_path_factory):
  from vidgen.data import video_folder
  captions = [c["caption"].decode("utf-8", "replace") or "x"
              for c in video_folder.read_captions(folder_case.folder)]
  return tokenizer_lib.train(captions * 20, tmp_path_factory.mktemp("ftok") / "t.model")


@pytest.mark.parametrize("kind", ["folder", "records"])
def test_real_bad_files_are_counted_by_reason(folder_case, built_folder, folder_tokenizer, kind):
  from vidgen.data import video_folder
  if kind == "folder":
    source = video_folder.VideoFolderSource(folder_case.folder)
  else:
    source = video_folder.ArrayRecordVideoSource.from_folder(
        folder_case.folder, built_folder.data_dir_root)
  make = lambda policy: pipeline.make_dataset(
      source, buckets_lib.parse_buckets("8x32x32:2"), folder_tokenizer, num_epochs=1,
      shuffle=False, policy=policy,
      # From frame 0, the file truncated after its header still has 8 frames.
      sampling=clips.Sampling(random_start=False))
  it = iter(make(pipeline.BadInputPolicy(max_bad_fraction=0.9, check_after=1)))
  batches = list(it)
  assert len(batches) == 3 and all(b["video"].shape == (2, 8, 32, 32, 3) for b in batches)
  for b in batches:  # never a black or zero-filled frame
    assert (b["video"].reshape(2 * 8, -1).max(axis=1) > 0).all()
  assert pipeline.skip_counts(it.get_state()) == {
      clips.CORRUPT: 2, clips.ZERO_BYTE: 1, clips.MISSING_FILE: 1,
      clips.BAD_CAPTION_ENCODING: 1, clips.EMPTY_CAPTION: 1, clips.TOO_FEW_FRAMES: 3}
  # 9 bad of 15 is far over 10%: the job stops at the first check, listing the counts.
  with pytest.raises(pipeline.DataError, match=r"of 1\d examples were bad.*corrupt=2"):
    list(iter(make(pipeline.BadInputPolicy(0.1, check_after=10))))


@pytest.mark.parametrize("workers", [0, 2])
def test_every_host_steps_with_the_same_bucket_sequence(tokenizer, workers):
  """A multi-host step needs the same batch shape on every host."""
  def shapes(index):
    ds = _shapes_ds(tokenizer, n=400, process_index=index, process_count=2,
                    buckets=buckets_lib.parse_buckets("8x32x32:4@2,4x32x48:4@1"),
                    num_workers=workers)
    return [b["video"].shape for b in _take(iter(ds), 16)]

  a, b = shapes(0), shapes(1)
  assert a == b and len(set(a)) == 2


def test_waiting_clips_stay_bounded_when_assignment_disagrees_with_the_schedule(tokenizer):
  """Clips that prefer a rarely scheduled bucket overflow into the scheduled one."""
  source = moving_shapes.MovingShapesSource(SHAPES, "train", 400)
  ds = pipeline.make_dataset(
      source, buckets_lib.parse_buckets("8x32x32:2@100,4x32x48:2@1"), tokenizer)
  it = iter(ds)
  _take(it, 30)
  waiting = it.get_state()["shards"]["0"]["waiting"]
  assert all(len(w) <= pipeline.MAX_WAITING_BATCHES * 2 for w in waiting)


# ---------------------------------------------------------------------------
# Virtual data shards: the global stream does not depend on the process count.

SHARDED = buckets_lib.parse_buckets("8x32x32:4@2,4x32x48:4@1")


def _global_batches(tokenizer, process_count, steps, shards=4, num_workers=0, n=40, states=None):
  """The first `steps` global batches (hosts' batches stacked in process order) and the states."""
  its = [iter(_shapes_ds(tokenizer, n=n, buckets=SHARDED, process_index=i,
                         process_count=process_count, shards=shards, num_workers=num_workers))
         for i in range(process_count)]
  if states is not None:
    for i, it in enumerate(its):
      it.set_state(pipeline.host_state(lambda p: states[p], len(states), i, process_count))
  batches = []
  for _ in range(steps):
    hosts = [next(it) for it in its]
    assert len({h["video"].shape for h in hosts}) == 1  # one bucket per step on every host
    batches.append({k: np.concatenate([h[k] for h in hosts]) for k in hosts[0]})
  saved = [json.loads(json.dumps(it.get_state())) for it in its]  # must survive JSON (orbax)
  return batches, saved


def test_the_global_stream_is_the_same_on_1_2_and_4_processes(tokenizer):
  one, _ = _global_batches(tokenizer, 1, 10)
  assert all(b["video"].shape[0] == 4 for b in one)
  for count in (2, 4):
    _assert_same(_global_batches(tokenizer, count, 10)[0], one)
  # Row r of a global batch comes from shard r // (batch / S): keys[j::4].
  for b in one:
    np.testing.assert_array_equal(b["key"] % 4, np.arange(4))


def test_one_shard_per_process_keeps_the_unsharded_layout(tokenizer):
  # S = n: process i reads keys[i::n] as before shards existed.
  for index in range(2):
    batches = list(iter(_shapes_ds(tokenizer, n=24, buckets=buckets_lib.parse_buckets("4x16x16:4"),
                                   num_epochs=1, process_index=index, process_count=2)))
    keys = np.concatenate([b["key"] for b in batches])
    assert sorted(keys) == list(range(index, 24, 2))


class _RecordingSource(moving_shapes.MovingShapesSource):
  """Moving Shapes that remembers every key it was asked to read."""

  def __init__(self, *args):
    super().__init__(*args)
    self.read = []

  def record(self, key):
    self.read.append(int(key))
    return super().record(key)


def test_each_host_reads_only_the_keys_of_its_shards(tokenizer):
  seen = []
  for index in range(2):
    source = _RecordingSource(SHAPES, "train", 40)
    it = iter(pipeline.make_dataset(source, SHARDED, tokenizer, process_index=index,
                                    process_count=2, shards=4))
    _take(it, 12)  # more than an epoch of its 20 keys
    assert it.shards == (2 * index, 2 * index + 1)
    assert set(source.read) and {k % 4 for k in source.read} == {2 * index, 2 * index + 1}
    seen.append(set(source.read))
  assert seen[0] | seen[1] == set(range(40)) and not seen[0] & seen[1]


@pytest.mark.parametrize("saved_on,resumed_on", [(4, 2), (4, 1), (1, 2), (2, 2)])
def test_a_stream_saved_on_n_processes_resumes_on_another_count(tokenizer, saved_on, resumed_on):
  reference, _ = _global_batches(tokenizer, 1, 14)
  before, states = _global_batches(tokenizer, saved_on, 6)
  _assert_same(before, reference[:6])
  after, _ = _global_batches(tokenizer, resumed_on, 8, states=states)
  _assert_same(after, reference[6:])


def test_worker_states_regroup_across_process_counts(tokenizer):
  """With Grain workers each shard's state is one per worker; 2 processes -> 1 keeps the stream."""
  reference, _ = _global_batches(tokenizer, 1, 9, num_workers=2)
  before, states = _global_batches(tokenizer, 2, 4, num_workers=2)
  _assert_same(before, reference[:4])
  assert len(states[1]["shards"]["3"]["workers"]) == 2
  after, _ = _global_batches(tokenizer, 1, 5, num_workers=2, states=states)
  _assert_same(after, reference[4:])


def test_a_state_of_other_shards_or_workers_is_refused_by_name(tokenizer):
  _, states = _global_batches(tokenizer, 2, 2)
  with pytest.raises(pipeline.StateMismatch, match="not a multiple of this run's 3"):
    pipeline.host_state(lambda p: states[p], 2, 0, 3)
  it = iter(_shapes_ds(tokenizer, buckets=SHARDED, shards=2))
  with pytest.raises(pipeline.StateMismatch, match="4 data shards, this run has 2"):
    it.set_state(pipeline.host_state(lambda p: states[p], 2, 0, 1))
  it = iter(_shapes_ds(tokenizer, buckets=SHARDED, shards=4, num_workers=1))
  with pytest.raises(pipeline.StateMismatch, match="num_workers=0, this run has 1"):
    it.set_state(pipeline.host_state(lambda p: states[p], 2, 0, 1))


def test_shards_must_split_evenly_with_the_numbers_named(tokenizer):
  with pytest.raises(ValueError, match="data.shards=6 is not a multiple of the 4 processes"):
    _shapes_ds(tokenizer, buckets=SHARDED, shards=6, process_count=4)
  with pytest.raises(ValueError, match="global batch size 4 is not divisible by 8 data shards"):
    _shapes_ds(tokenizer, buckets=SHARDED, shards=8)
  with pytest.raises(ValueError, match="fewer than 4 data shards"):
    _shapes_ds(tokenizer, n=3, buckets=SHARDED, shards=4)
