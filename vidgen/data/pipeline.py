"""The Grain input pipeline: keys -> clips -> bucketed uint8 batches.

    keys 0..N-1 of a ClipSource, split into S virtual shards (`data.shards`;
    0: one per process); shard j holds keys[j::S], and process i of n owns
    shards [i*S/n, (i+1)*S/n) and reads nothing else. For each owned shard:
      -> shuffle (seeded by the data seed and j; a new order every epoch) -> repeat
      -> per element: read record, choose bucket, decode + sample frames +
         resize/crop to the bucket, check and tokenize the caption
         (a bad example is skipped and counted by reason)
      -> batching by bucket, global batch / S clips per shard batch (never a
         short batch): the bucket of the n-th batch follows a schedule drawn
         from the bucket weights with the data seed, the same on every shard
         and host, so all shards emit the same bucket for batch n and every
         host of a multi-host job steps with the same batch shape; clips
         wait in the bucket that fits them best until the schedule calls for
         it (a bucket holding more than MAX_WAITING_BATCHES batches sends new
         clips that fit to the scheduled bucket instead)
    -> the host batch: the owned shards' n-th batches stacked in shard order
    -> worker processes (Grain mp_prefetch) and prefetch.

So global batch n is shard 0's n-th batch, then shard 1's, ..., whatever the
number of processes n dividing S: a run saved on 4 processes resumes on 2 or
1 with the batches it would have had (`host_state` regroups the states).

Worker processes (`num_workers` W) sit above the shards: every worker runs all
of its host's shards, each on its 1/W slice of that shard's key stream, so one
worker output is a whole host batch, a host has W workers however many shards
it owns, and the stream depends on (S, W, seed), not on the process count.

Batches are numpy dicts (B is the per-host batch size, global batch * owned
shards / S):
    video       (B, T, H, W, 3) uint8   scaling to [-1, 1] happens on device
    tokens      (B, L) int32            caption ids, 0-padded, EOS-terminated
    token_mask  (B, L) bool
    key         (B,) int64              record key in the source
    gt_*        ground truth, when the source has it (Moving Shapes)

The iterator is a Grain `DatasetIterator` whose `get_state()` is a JSON-able
dict `{"shard_count": S, "shards": {"<j>": state of shard j}, ...}`: for each
owned shard the parent position, the keys waiting in each bucket and the
counts of skipped examples (one such state per worker with workers).
`set_state()` rebuilds the waiting clips from their keys, so a restored
iterator yields exactly the batches that would have come next. Every
element's randomness is seeded by (seed, key, position in its shard), so the
stream does not depend on timing or worker scheduling.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
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


def _split_batches(buckets: tuple[buckets_lib.Bucket, ...], parts: int, what: str
                   ) -> tuple[int, ...]:
  """Each bucket's global batch / `parts`; ValueError naming a bucket that does not divide."""
  for b in buckets:
    if b.batch_size % parts:
      raise ValueError(
          f"bucket {b}: global batch size {b.batch_size} is not divisible by {parts} {what}")
  return tuple(b.batch_size // parts for b in buckets)


def per_host_sizes(buckets: tuple[buckets_lib.Bucket, ...], process_count: int) -> tuple[int, ...]:
  return _split_batches(buckets, process_count, "processes")


# ---------------------------------------------------------------------------
# Virtual data shards: S logical shards of the keys, S / n of them per process.


class StateMismatch(ValueError):
  """A saved iterator state that this data set cannot continue (other shards or workers)."""


_SHARD_STREAM = 0x5A4D  # keeps the shards' shuffle seeds apart from other seeds


def shard_count(shards: int, process_count: int) -> int:
  """S: `shards` (0: the process count); ValueError unless S is a multiple of the processes."""
  if shards < 0:
    raise ValueError(f"data.shards={shards}: must be >= 0 (0: one shard per process)")
  count = shards or process_count
  if count % process_count:
    raise ValueError(
        f"data.shards={count} is not a multiple of the {process_count} processes: every "
        "process must own the same number of shards")
  return count


def owned_shards(process_index: int, process_count: int, shards: int) -> range:
  """The shards process `process_index` of `process_count` reads: a contiguous block."""
  per = shards // process_count
  return range(process_index * per, (process_index + 1) * per)


def shard_owner(shard: int, shards: int, process_count: int) -> int:
  """The process of `process_count` that owns `shard` of `shards`."""
  return shard // (shards // process_count)


def per_shard_sizes(buckets: tuple[buckets_lib.Bucket, ...], shards: int) -> tuple[int, ...]:
  """Each bucket's global batch split over `shards`; ValueError naming a bucket that does not divide."""
  return _split_batches(buckets, shards,
                        "data shards (data.shards, or the process count when it is 0)")


def shard_seed(seed: int, shard: int, shards: int) -> int:
  """The shuffle seed of `shard`: the data seed itself with one shard (today's stream)."""
  if shards == 1:
    return seed
  return int(np.random.SeedSequence([seed, _SHARD_STREAM, shard]).generate_state(1)[0] >> 1)


def _concat(batches: list[dict[str, np.ndarray]], shared_memory: bool) -> dict[str, np.ndarray]:
  """Rows of several shard batches, in shard order; in a Grain worker, into shared memory."""
  out = {}
  for k in batches[0]:
    parts = [b[k] for b in batches]
    first = parts[0]
    if shared_memory and not first.dtype.hasobject and first.dtype.kind not in "US":
      shape = (sum(len(p) for p in parts), *first.shape[1:])
      buffer = shared_memory_array.SharedMemoryArray(shape, first.dtype)
      out[k] = np.concatenate(parts, out=buffer)
    else:
      out[k] = np.concatenate(parts)
  return out


class _ShardBatchIterator(grain.DatasetIterator):
  """The host batch: one batch of each owned shard, rows stacked in shard order."""

  def __init__(self, parents: list[grain.DatasetIterator], shards: tuple[int, ...],
               shared_memory: bool):
    super().__init__(parents)
    self._shards = shards
    self._shared_memory = shared_memory

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(it) for it in self._parents]
    if len(batches) == 1:
      return batches[0]
    shapes = {b["video"].shape[1:] for b in batches if "video" in b}
    assert len(shapes) <= 1, f"shards {self._shards} disagree on the bucket: {shapes}"
    return _concat(batches, self._shared_memory)

  def get_state(self) -> dict[str, Any]:
    return {"shards": {str(j): it.get_state() for j, it in zip(self._shards, self._parents)}}

  def set_state(self, state: dict[str, Any]) -> None:
    for j, it in zip(self._shards, self._parents):
      it.set_state(state["shards"][str(j)])


class ShardBatchIterDataset(grain.IterDataset):
  """Several shards' batched data sets -> the host's batches (rows in shard order)."""

  def __init__(self, parents: list[grain.IterDataset], shards: tuple[int, ...]):
    super().__init__(parents)
    self._shards = tuple(shards)
    self._shared_memory = False

  def enable_shared_memory_output(self) -> None:
    """Called by Grain's mp_prefetch: the host batch crosses processes in shared memory."""
    if len(self._parents) == 1:  # the shard's own batch is the output
      self._parents[0].enable_shared_memory_output()
    else:  # shard batches stay in the worker; only their concatenation is shared
      self._shared_memory = True

  def __iter__(self) -> _ShardBatchIterator:
    return _ShardBatchIterator([p.__iter__() for p in self._parents], self._shards,
                               self._shared_memory)

  def __str__(self) -> str:
    return f"ShardBatchIterDataset(shards={self._shards})"


# Grain's mp_prefetch iterator state (an interleave over the workers, grain
# 0.2.18) keeps each worker's pipeline state in this list;
# tests/data/test_pipeline.py regroups such states across process counts.
_WORKER_STATES = "iterators_in_use_states"


class _HostIterator(grain.DatasetIterator):
  """The host's iterator; its state is keyed by global shard index.

  Without workers the state is `{"shard_count": S, "shards": {"<j>": shard
  state}}`. With W workers each shard's entry is `{"workers": [its state in
  worker 0, ..., W-1]}` and `"prefetch"` holds the rest of Grain's
  mp_prefetch state (which worker is next; the same on every host).
  """

  def __init__(self, parent: grain.DatasetIterator, count: int, shards: tuple[int, ...],
               num_workers: int):
    super().__init__(parent)
    self.shard_count = count
    self.shards = shards
    self._workers = num_workers

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    inner = self._parent.get_state()
    state: dict[str, Any] = {"shard_count": self.shard_count}
    if not self._workers:
      state["shards"] = inner["shards"]
      return state
    workers = inner[_WORKER_STATES]
    state["shards"] = {str(j): {"workers": [None if w is None else w["shards"][str(j)]
                                            for w in workers]} for j in self.shards}
    state["prefetch"] = {k: v for k, v in inner.items() if k != _WORKER_STATES}
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    state = self._upgrade(state)
    self.check_state(state)
    if not self._workers:
      self._parent.set_state({"shards": state["shards"]})
      return
    workers = []
    for w in range(self._workers):
      per_shard = {j: s["workers"][w] for j, s in state["shards"].items()}
      workers.append(None if all(v is None for v in per_shard.values())
                     else {"shards": per_shard})
    self._parent.set_state(dict(state["prefetch"], **{_WORKER_STATES: workers}))

  def _upgrade(self, state: dict[str, Any]) -> dict[str, Any]:
    """A state from before shards (one unsharded stream) -> this format, when it fits."""
    if "shard_count" in state or self.shard_count != 1:
      return state
    if _WORKER_STATES in state:  # mp_prefetch over the bucket batcher
      return {"shard_count": 1, "shards": {"0": {"workers": list(state[_WORKER_STATES])}},
              "prefetch": {k: v for k, v in state.items() if k != _WORKER_STATES}}
    return {"shard_count": 1, "shards": {"0": state}}

  def check_state(self, state: dict[str, Any]) -> None:
    """StateMismatch unless `state` is this host's shards with this worker count."""
    saved = state.get("shard_count")
    if saved is None:
      raise StateMismatch(
          "the data state was saved without data shards (one stream per process); this "
          f"run has {self.shard_count} shards")
    if saved != self.shard_count:
      raise StateMismatch(
          f"the data state was saved with {saved} data shards, this run has "
          f"{self.shard_count}; set data.shards={saved} to continue that stream")
    want = {str(j) for j in self.shards}
    if set(state.get("shards", {})) != want:
      raise StateMismatch(f"the data state holds shards {sorted(state.get('shards', {}), key=int)}, "
                          f"this process owns {sorted(want, key=int)}")
    saved_workers = 0
    if "prefetch" in state:
      saved_workers = len(next(iter(state["shards"].values()))["workers"])
    if saved_workers != self._workers:
      raise StateMismatch(
          f"the data state was saved with data.num_workers={saved_workers}, this run has "
          f"{self._workers}; set data.num_workers={saved_workers} to continue that stream")


class HostDataset(grain.IterDataset):
  """The top of a host's pipeline: `iter()` gives the shard-keyed checkpointable iterator."""

  def __init__(self, parent: grain.IterDataset, count: int, shards: tuple[int, ...],
               num_workers: int):
    super().__init__(parent)
    self.shard_count = count
    self.shards = shards
    self._workers = num_workers

  def __iter__(self) -> _HostIterator:
    return _HostIterator(self._parent.__iter__(), self.shard_count, self.shards, self._workers)

  def __str__(self) -> str:
    return f"HostDataset(shards={list(self.shards)} of {self.shard_count})"


def host_state(read: Callable[[int], dict[str, Any]], saved_count: int, process_index: int,
               process_count: int) -> dict[str, Any]:
  """The iterator state of process `process_index` of `process_count` from saved ones.

  `read(i)` returns the state process i of `saved_count` saved. Only the files
  holding this process's shards are read. StateMismatch when the saved stream
  cannot be split this way (unsharded states of another process count, or a
  shard count that is not a multiple of `process_count`).
  """
  if saved_count == process_count:
    return read(process_index)
  first = read(0)
  shards = first.get("shard_count") if isinstance(first, dict) else None
  if shards is None:
    raise StateMismatch(
        f"the data state was saved by {saved_count} processes without data shards; "
        f"it cannot be split over {process_count}")
  if shards % process_count:
    raise StateMismatch(
        f"the data state has {shards} data shards (saved by {saved_count} processes), "
        f"not a multiple of this run's {process_count} processes")
  mine = owned_shards(process_index, process_count, shards)
  states = {i: (first if i == 0 else read(i))
            for i in sorted({shard_owner(j, shards, saved_count) for j in mine})}
  common = {k: v for k, v in states[min(states)].items() if k != "shards"}
  for i, s in states.items():
    other = {k: v for k, v in s.items() if k != "shards"}
    if other != common:
      raise ValueError(f"saved data states of processes {min(states)} and {i} disagree "
                       f"outside their shards: {common} vs {other}")
  merged = {}
  for j in mine:
    state = states[shard_owner(j, shards, saved_count)]["shards"]
    if str(j) not in state:
      raise ValueError(f"the saved data state of process {shard_owner(j, shards, saved_count)} "
                       f"lacks shard {j}")
    merged[str(j)] = state[str(j)]
  return dict(common, shards=merged)


def _shard_dataset(num_keys: int, shard: int, shards: int, *, shuffle: bool,
                   num_epochs: int | None, seed: int, maker: ClipMaker,
                   sizes: tuple[int, ...], policy: BadInputPolicy) -> BucketBatchIterDataset:
  """Shard `shard` of `shards`: keys[shard::shards], shuffled, repeated, batched by bucket."""
  keys = grain.MapDataset.range(num_keys)
  if shards > 1:
    keys = keys[shard::shards]
  if shuffle:
    keys = keys.shuffle(seed=shard_seed(seed, shard, shards))
  keys = keys.repeat(num_epochs)
  # The key stream is trivial to read: no read-ahead threads (their per-element
  # bookkeeping cost more than the clips themselves).
  tagged = keys.map_with_index(_Tag()).to_iter_dataset(
      grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  return BucketBatchIterDataset(tagged, maker, sizes, policy)


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
    shards: int = 0,
) -> HostDataset:
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
    num_workers: Grain worker processes per host (0: in this process).
    worker_buffer_size: batches each worker prepares ahead.
    policy: bad-input policy (counted per shard and worker).
    process_index, process_count: this host; it reads only the shards it owns.
    shards: S, the virtual data shards (0: process_count); a multiple of
      process_count that divides every bucket's batch size.
  """
  count = shard_count(shards, process_count)
  if len(source) < count:
    raise ValueError(f"source has {len(source)} examples, fewer than {count} data shards")
  sizes = per_shard_sizes(buckets, count)
  mine = tuple(owned_shards(process_index, process_count, count))
  maker = ClipMaker(source, tuple(buckets), sampling, tokenizer, max_len, seed)
  parts = [_shard_dataset(len(source), j, count, shuffle=shuffle, num_epochs=num_epochs,
                          seed=seed, maker=maker, sizes=sizes, policy=policy) for j in mine]
  if count > 1:
    logging.info("data: process %d of %d reads shards %s of %d", process_index, process_count,
                 f"{mine[0]}-{mine[-1]}" if len(mine) > 1 else mine[0], count)
  ds = ShardBatchIterDataset(parts, mine)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # Grain workers read absl flags
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=worker_buffer_size))
  return HostDataset(ds, count, mine, num_workers)


# ---------------------------------------------------------------------------
# From a config (ConfigDict `config.data` and `config.text`) to sources and data sets.


def make_source(data_config, split: str):
  """The ClipSource named by `data.source` for `split`."""
  from vidgen.data import moving_shapes, video_folder  # pylint: disable=g-import-not-at-top

  spec = data_config.source
  kind, _, arg = spec.partition(":")
  if kind == "shapes":
    return moving_shapes.MovingShapesSource(
        shapes_config(data_config, split), split, int(data_config.sizes[split]))
  if kind == "shapes_records":
    return moving_shapes.MovingShapesRecordSource(
        data_config.data_dir, shapes_config(data_config, split), split)
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


def shapes_config(data_config, split: str | None = None):
  """The ShapesConfig of `data.shapes` for `split` (None: the evaluation splits' config).

  `data.shapes.train_num_objects` (when > 0) sets the objects per clip of the
  train split only: a VAE learns edges faster from two objects a clip, while
  its test and holdout splits stay those of the one-object data set.
  """
  from vidgen.data import moving_shapes  # pylint: disable=g-import-not-at-top

  s = data_config.shapes
  objects = s.num_objects
  if split == "train" and s.get("train_num_objects", 0):
    objects = s.train_num_objects
  return moving_shapes.ShapesConfig(
      height=s.height, width=s.width, frames=s.frames, num_objects=objects,
      holdout=tuple(tuple(p) for p in s.holdout), seed=s.seed)


def build_shapes(data_config, sizes: dict[str, int]) -> list[tuple[dict[str, int], str]]:
  """Writes Moving Shapes splits of `sizes` to array_record under `data_config.data_dir`.

  One TFDS builder per distinct split config (the train split's object count
  may differ: `data.shapes.train_num_objects`). Returns (splits, builder
  data dir) per builder.
  """
  from vidgen.data import moving_shapes  # pylint: disable=g-import-not-at-top

  groups = {}
  for split, size in sizes.items():
    groups.setdefault(shapes_config(data_config, split), {})[split] = size
  built = []
  for shapes, group in groups.items():
    builder = moving_shapes.MovingShapes(data_dir=data_config.data_dir, shapes=shapes,
                                         split_sizes=group, file_format="array_record")
    builder.download_and_prepare()
    built.append((group, str(builder.data_dir)))
  return built


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
      shards=d.get("shards", 0),
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
