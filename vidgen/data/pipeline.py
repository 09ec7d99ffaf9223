"""The Grain input pipeline: keys -> clips -> bucketed uint8 batches.

    keys 0..N-1 of a ClipSource
      -> this host's shard (keys[process_index::process_count])
      -> shuffle (new order every epoch) -> repeat
      -> per element: read record, choose bucket, decode + sample frames +
         resize/crop to the bucket, check and tokenize the caption
         (a bad example is skipped and counted by reason)
      -> batching by bucket (never a short batch): the bucket of the n-th
         batch follows a schedule drawn from the bucket weights with the
         data seed, the same on every host, so all hosts of a multi-host job
         step with the same batch shape; clips wait in the bucket that fits
         them best until the schedule calls for it (a bucket holding more
         than MAX_WAITING_BATCHES batches sends new clips that fit to the
         scheduled bucket instead)
      -> worker processes (Grain mp_prefetch) and prefetch.

Batches are numpy dicts (B is the per-host batch size):
    video       (B, T, H, W, 3) uint8   scaling to [-1, 1] happens on device
    tokens      (B, L) int32            caption ids, 0-padded, EOS-terminated
    token_mask  (B, L) bool
    key         (B,) int64              record key in the source
    gt_*        ground truth, when the source has it (Moving Shapes)

The iterator is a Grain `DatasetIterator`: `get_state()` is a JSON-able dict
that holds the parent position, the keys waiting in each bucket and the
counts of skipped examples; `set_state()` rebuilds the waiting clips from
their keys, so a restored iterator yields exactly the batches that would have
come next. Every element's randomness is seeded by (seed, key, position), so
the stream does not depend on timing or worker scheduling.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
import dataclasses
import logging
import os
from typing import Any

import grain
import numpy as np
from grain._src.python.ipc import shared_memory_array  # no public path in grain 0.2.18
from absl import flags

from vidgen.data import buckets as buckets_lib
from vidgen.data import clips
from vidgen.text import tokenizer as tokenizer_lib


class DataError(RuntimeError):
  """The data is too broken to train on (more bad examples than allowed)."""


@dataclasses.dataclass(frozen=True)
class BadInputPolicy:
  """When skipped examples stop the job.

  Attributes:
    max_bad_fraction: stop when skipped / seen exceeds this...
    check_after: ...once at least this many examples were seen (per worker).
  """

  max_bad_fraction: float = 0.1
  check_after: int = 100


class _Tag:
  """(position, key) -> (position, key); positions seed per-element randomness."""

  def __call__(self, position: int, key: int) -> tuple[int, int]:
    return int(position), int(key)


@dataclasses.dataclass(frozen=True)
class ClipMaker:
  """Turns (position, key) into (bucket index, example) or raises BadExample.

  Deterministic in (seed, key, position): calling it twice gives the same
  example, which is what lets the batcher save keys instead of clips.
  """

  source: Any  # clips.ClipSource
  buckets: tuple[buckets_lib.Bucket, ...]
  sampling: clips.Sampling
  tokenizer: tokenizer_lib.Tokenizer
  max_len: int
  seed: int

  def __call__(self, position: int, key: int, *, overflow: int | None = None
               ) -> tuple[int, dict[str, Any]]:
    """`overflow`: a bucket to use instead of the preferred one, if the clip fits it."""
    rng = np.random.default_rng([self.seed, key, position])
    record = self.source.record(key)
    info = self.source.info(record)
    b = buckets_lib.assign(info, self.buckets, self.sampling, rng)
    if overflow is not None and overflow != b and (
        info is None or self.buckets[overflow].frames
        <= buckets_lib.sampled_frames_available(info, self.sampling)):
      b = overflow
    bucket = self.buckets[b]
    out = self.source.clip(
        record, bucket.frames, bucket.height, bucket.width, self.sampling, rng
    )
    tokens, mask = self.tokenize(out.pop("caption"))
    video = out.pop("video")
    if video.shape != (*bucket.shape, 3) or video.dtype != np.uint8:
      raise AssertionError(
          f"source {type(self.source).__name__} returned {video.shape} {video.dtype} "
          f"for bucket {bucket}"
      )
    example = {"video": video, "tokens": tokens, "token_mask": mask,
               "key": np.int64(key)}
    example.update({k: v for k, v in out.items() if k.startswith("gt_")})
    return b, example

  def tokenize(self, caption: str | bytes) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(caption, bytes):
      try:
        caption = caption.decode("utf-8")
      except UnicodeDecodeError as e:
        raise clips.BadExample(clips.BAD_CAPTION_ENCODING, str(e)) from None
    if not caption.strip():
      raise clips.BadExample(clips.EMPTY_CAPTION)
    ids = self.tokenizer.encode(caption)
    if len(ids) > self.max_len:
      raise clips.BadExample(
          clips.CAPTION_TOO_LONG, f"{len(ids)} tokens > max_len {self.max_len}"
      )
    return self.tokenizer.pad(ids, self.max_len)


def _collate(examples: list[dict[str, Any]], shared_memory: bool) -> dict[str, np.ndarray]:
  """Stacks examples; in a Grain worker, straight into shared memory (no pickled copy)."""
  out = {}
  for k in examples[0]:
    first = np.asarray(examples[0][k])
    if shared_memory and not first.dtype.hasobject and first.dtype.kind not in "US":
      buffer = shared_memory_array.SharedMemoryArray((len(examples), *first.shape), first.dtype)
      out[k] = np.stack([e[k] for e in examples], out=buffer)
    else:
      out[k] = np.stack([e[k] for e in examples])
  return out


MAX_WAITING_BATCHES = 4
_SCHEDULE_STREAM = 0x5C4ED  # keeps the schedule's random stream apart from the clips'


class _BucketBatchIterator(grain.DatasetIterator):
  """Makes examples, skips and counts bad ones, emits full per-bucket batches."""

  def __init__(self, parent, maker: ClipMaker, sizes: tuple[int, ...],
               policy: BadInputPolicy, shared_memory: bool):
    super().__init__(parent)
    self._maker = maker
    self._sizes = sizes
    self._policy = policy
    self._shared_memory = shared_memory
    self._waiting: list[list[tuple[int, int, dict]]] = [[] for _ in sizes]
    self._seen = 0
    self._emitted = 0
    self._skipped: collections.Counter[str] = collections.Counter()
    weights = np.array([b.weight for b in maker.buckets], np.float64)
    self._weights = weights / weights.sum()

  def _scheduled(self) -> int:
    """The bucket of the next batch: a function of (seed, batch count) only."""
    if len(self._sizes) == 1:
      return 0
    rng = np.random.default_rng([self._maker.seed, _SCHEDULE_STREAM, self._emitted])
    return int(rng.choice(len(self._sizes), p=self._weights))

  def __next__(self) -> dict[str, np.ndarray]:
    s = self._scheduled()
    while len(self._waiting[s]) < self._sizes[s]:
      position, key = next(self._parent)  # StopIteration: leftovers are dropped
      self._seen += 1
      try:
        b, example = self._maker(position, key)
        if b != s and len(self._waiting[b]) >= MAX_WAITING_BATCHES * self._sizes[b]:
          b, example = self._maker(position, key, overflow=s)
      except clips.BadExample as e:
        self._skip(e, key)
        continue
      self._waiting[b].append((position, key, example))
    batch, self._waiting[s] = self._waiting[s][:self._sizes[s]], self._waiting[s][self._sizes[s]:]
    self._emitted += 1
    return _collate([e for _, _, e in batch], self._shared_memory)

  def _skip(self, error: clips.BadExample, key: int) -> None:
    self._skipped[error.reason] += 1
    logging.info("skipping key %d: %s", key, error)
    bad = sum(self._skipped.values())
    if (self._seen >= self._policy.check_after
        and bad > self._policy.max_bad_fraction * self._seen):
      counts = ", ".join(f"{r}={n}" for r, n in sorted(self._skipped.items()))
      raise DataError(
          f"{bad} of {self._seen} examples were bad (> {self._policy.max_bad_fraction:.0%}"
          f" allowed by data.max_bad_fraction): {counts}"
      )

  def get_state(self) -> dict[str, Any]:
    return {
        "parent": self._parent.get_state(),
        "waiting": [[[p, k] for p, k, _ in w] for w in self._waiting],
        "seen": self._seen,
        "emitted": self._emitted,
        "skipped": dict(self._skipped),
    }

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._seen = int(state["seen"])
    self._emitted = int(state.get("emitted", 0))
    self._skipped = collections.Counter({k: int(v) for k, v in state["skipped"].items()})
    self._waiting = []
    for b, keys in enumerate(state["waiting"]):
      rebuilt = []
      for position, key in keys:
        got, example = self._maker(int(position), int(key), overflow=b)
        assert got == b, f"key {key} moved from bucket {b} to {got} on restore"
        rebuilt.append((int(position), int(key), example))
      self._waiting.append(rebuilt)


class BucketBatchIterDataset(grain.IterDataset):
  """IterDataset of (position, key) -> IterDataset of bucketed batches."""

  def __init__(self, parent: grain.IterDataset, maker: ClipMaker,
               sizes: tuple[int, ...], policy: BadInputPolicy):
    super().__init__(parent)
    self._maker = maker
    self._sizes = sizes
    self._policy = policy
    self._shared_memory = False

  def enable_shared_memory_output(self) -> None:
    """Called by Grain's mp_prefetch: batches then cross processes in shared memory."""
    self._shared_memory = True

  def __iter__(self) -> _BucketBatchIterator:
    return _BucketBatchIterator(self._parent.__iter__(), self._maker, self._sizes,
                                self._policy, self._shared_memory)

  def __str__(self) -> str:
    return f"BucketBatchIterDataset(sizes={self._sizes})"


def skip_counts(state: Any) -> dict[str, int]:
  """Skipped examples by reason, summed over every worker in an iterator state."""
  total: collections.Counter[str] = collections.Counter()
  if isinstance(state, dict):
    if "skipped" in state and "waiting" in state:
      total.update({k: int(v) for k, v in state["skipped"].items()})
    for v in state.values():
      if isinstance(v, (dict, list)):
        total.update(skip_counts(v))
  elif isinstance(state, list):
    for v in state:
      total.update(skip_counts(v))
  return dict(total)


def per_host_sizes(buckets: tuple[buckets_lib.Bucket, ...], process_count: int) -> tuple[int, ...]:
  sizes = []
  for b in buckets:
    if b.batch_size % process_count:
      raise ValueError(
          f"bucket {b}: global batch size {b.batch_size} is not divisible by "
          f"{process_count} processes"
      )
    sizes.append(b.batch_size // process_count)
  return tuple(sizes)


def make_dataset(
    source: Any,
    buckets: tuple[buckets_lib.Bucket, ...],
    tokenizer: tokenizer_lib.Tokenizer,
    *,
    max_len: int = 32,
    sampling: clips.Sampling = clips.Sampling(),
    shuffle: bool = True,
    num_epochs: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    worker_buffer_size: int = 2,
    policy: BadInputPolicy = BadInputPolicy(),
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
  """The batched data set of one host. `iter()` it for a checkpointable iterator.

  Args:
    source: a `clips.ClipSource`.
    buckets: batch shapes; batch sizes are global.
    tokenizer: caption tokenizer.
    max_len: caption length in tokens (EOS included); longer captions are skipped.
    sampling: frame sampling and crop policy.
    shuffle: shuffle keys (a new order every epoch).
    num_epochs: passes over the source; None repeats forever.
    seed: seeds the shuffle and every element's randomness.
    num_workers: Grain worker processes (0: in this process).
    worker_buffer_size: batches each worker prepares ahead.
    policy: bad-input policy.
    process_index, process_count: this host's shard of the keys.
  """
  if len(source) < process_count:
    raise ValueError(f"source has {len(source)} examples, fewer than {process_count} hosts")
  sizes = per_host_sizes(buckets, process_count)
  keys = grain.MapDataset.range(len(source))
  if process_count > 1:
    keys = keys[process_index::process_count]
  if shuffle:
    keys = keys.shuffle(seed=seed)
  keys = keys.repeat(num_epochs)
  maker = ClipMaker(source, tuple(buckets), sampling, tokenizer, max_len, seed)
  # The key stream is trivial to read: no read-ahead threads (their per-element
  # bookkeeping cost more than the clips themselves).
  tagged = keys.map_with_index(_Tag()).to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  ds = BucketBatchIterDataset(tagged, maker,
                              sizes, policy)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # Grain workers read absl flags
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=worker_buffer_size))
  return ds


# ---------------------------------------------------------------------------
# From a config (ConfigDict `config.data` and `config.text`) to sources and data sets.


def make_source(data_config, split: str):
  """The ClipSource named by `data.source` for `split`."""
  from vidgen.data import moving_shapes, video_folder  # pylint: disable=g-import-not-at-top

  spec = data_config.source
  kind, _, arg = spec.partition(":")
  if kind == "shapes":
    return moving_shapes.MovingShapesSource(
        shapes_config(data_config), split, int(data_config.sizes[split]))
  if kind == "shapes_records":
    return moving_shapes.MovingShapesRecordSource(
        data_config.data_dir, shapes_config(data_config), split)
  if kind == "folder":
    return video_folder.VideoFolderSource(arg)
  if kind == "folder_records":
    return video_folder.ArrayRecordVideoSource.from_folder(arg, data_config.data_dir)
  if kind == "tfds":
    t = data_config.tfds
    return video_folder.TfdsVideoSource(
        arg, split=split, data_dir=data_config.data_dir, video_key=t.video_key,
        # A caption feature, when named, wins over the label default.
        caption_key=t.caption_key or None,
        label_key=None if t.caption_key else (t.label_key or None),
        caption_template=t.caption_template, fps=t.fps)
  raise ValueError(f"unknown data.source {spec!r}")


def shapes_config(data_config):
  from vidgen.data import moving_shapes  # pylint: disable=g-import-not-at-top

  s = data_config.shapes
  return moving_shapes.ShapesConfig(
      height=s.height, width=s.width, frames=s.frames, num_objects=s.num_objects,
      holdout=tuple(tuple(p) for p in s.holdout), seed=s.seed)


def sampling_from_config(data_config, train: bool) -> clips.Sampling:
  s = data_config.sampling
  return clips.Sampling(stride=s.stride, fps=s.fps,
                        random_start=train and s.random_start,
                        random_crop=train and s.random_crop)


def tokenizer_path(config) -> str:
  return config.text.tokenizer or os.path.join(config.data.data_dir, "tokenizer.model")


def dataset_from_config(
    config, split: str | None = None, *, train: bool = True, num_workers: int | None = None,
    process_index: int = 0, process_count: int = 1,
) -> grain.IterDataset:
  """The batched data set a config describes (train split by default)."""
  d = config.data
  split = split or (d.split if train else d.eval_split)
  return make_dataset(
      make_source(d, split),
      buckets_lib.parse_buckets(d.buckets),
      tokenizer_lib.Tokenizer(tokenizer_path(config)),
      max_len=config.text.max_len,
      sampling=sampling_from_config(d, train),
      shuffle=train and d.shuffle,
      num_epochs=(d.num_epochs or None) if train else 1,
      seed=d.seed,
      num_workers=d.num_workers if num_workers is None else num_workers,
      worker_buffer_size=d.worker_buffer_size,
      policy=BadInputPolicy(d.max_bad_fraction, d.bad_check_after),
      process_index=process_index,
      process_count=process_count,
  )


def tokenizer_captions(config, split: str, limit: int) -> Iterator[str]:
  """Up to `limit` valid UTF-8 captions of `split`, cheaply (no video decoding)."""
  from vidgen.data import video_folder  # pylint: disable=g-import-not-at-top

  kind, _, arg = config.data.source.partition(":")
  if kind in ("folder", "folder_records"):  # captions.jsonl, without opening videos
    raw = (e["caption"] for e in video_folder.read_captions(arg))
  else:
    source = make_source(config.data, split)
    raw = (source.caption(source.record(k)) for k in range(min(limit, len(source))))
  n = 0
  for c in raw:
    if isinstance(c, bytes):
      try:
        c = c.decode("utf-8")
      except UnicodeDecodeError:
        continue
    if c.strip() and n < limit:
      n += 1
      yield c


def train_tokenizer(config) -> str:
  from vidgen.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  path = tokenizer_path(config)
  captions = list(tokenizer_captions(config, config.data.split, config.text.train_captions))
  if not captions:
    raise ValueError(f"no usable captions in {config.data.source!r} to train a tokenizer on")
  tok = tokenizer_lib.train(captions, path, vocab_size=config.text.vocab_size)
  lengths = [len(tok.encode(c)) for c in captions]
  bad = sum(tok.decode(tok.encode(c)) != c for c in captions)
  logging.info("tokenizer %s: vocab %d, trained on %d captions, tokens per caption "
               "max %d mean %.1f, round-trip failures %d", path, tok.vocab_size,
               len(captions), max(lengths), float(np.mean(lengths)), bad)
  return path


def ensure_tokenizer(config) -> str:
  """The tokenizer's path; trains it first (process 0) when it does not exist yet."""
  import jax  # pylint: disable=g-import-not-at-top

  path = tokenizer_path(config)
  if not os.path.exists(path) and jax.process_index() == 0:
    logging.info("no tokenizer at %s: training one on the train captions", path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    train_tokenizer(config)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("tokenizer")
  if not os.path.exists(path):
    raise FileNotFoundError(f"tokenizer {path} missing (the processes must share the data dir)")
  return path
