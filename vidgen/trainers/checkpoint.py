"""Checkpoints: orbax CheckpointManager holding the train state and the data stream.

A step directory `W/checkpoints/<step>/` has two items:
  state  the TrainState (sharded arrays; restored onto whatever mesh the job
         has now, so a run saved on 8 devices resumes on 2),
  data   each process's Grain iterator state, `process_<i>-of-<n>.json`,
         captured when the save starts (so an async save cannot see a later
         position of the stream). The video pipeline's states are keyed by
         data shard (vidgen/data/pipeline.py), so a restore on another
         process count gives each process the saved states of the shards it
         owns now, read from the files that hold them.
Saves are asynchronous: the step loop goes on while the arrays are written;
a step is listed only once orbax has committed it, so a process killed
mid-save leaves the previous checkpoint as the latest usable one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vidgen.data import pipeline


class CheckpointMismatch(ValueError):
  """A checkpoint that does not fit the model; names the first mismatched parameter."""


# ---------------------------------------------------------------------------
# The data-stream item: one JSON file per process.


class DataStateHandler(ocp.CheckpointHandler):
  """Saves per-process iterator states (JSON strings); restores this process's share."""

  def save(self, directory: epath.Path, args: "DataStateSave") -> None:
    index, count = jax.process_index(), jax.process_count()
    (directory / f"process_{index}-of-{count}.json").write_text(args.state)

  def restore(self, directory: epath.Path, args: "DataStateRestore" = None) -> dict | None:
    """This process's data state, or None (with a warning) when the stream cannot continue.

    Saved by as many processes as there are now: this process's own file.
    Otherwise the saved states are regrouped by data shard
    (`pipeline.host_state`), which works when they are sharded and the shard
    count is a multiple of the process count.
    """
    index, count = jax.process_index(), jax.process_count()
    saved: dict[int, dict[int, epath.Path]] = {}
    for path in directory.glob("process_*-of-*.json"):
      m = re.fullmatch(r"process_(\d+)-of-(\d+)\.json", path.name)
      if m:
        saved.setdefault(int(m[2]), {})[int(m[1])] = path
    names = sorted(p.name for paths in saved.values() for p in paths.values())
    problem = None
    if len(saved) != 1:
      problem = "no single process count"
    else:
      (saved_count, paths), = saved.items()
      if sorted(paths) != list(range(saved_count)):
        problem = f"files missing for processes of {saved_count}"
    if problem is None:
      try:
        return pipeline.host_state(lambda i: json.loads(paths[i].read_text()), saved_count,
                                   index, count)
      except pipeline.StateMismatch as e:
        problem = str(e)
    logging.warning(
        "checkpoint data state %s has %s (%s): process %d of %d starts the data stream "
        "afresh (the model state is restored)", directory, names, problem, index, count)
    return None

  def structure(self, directory):  # pylint: disable=unused-argument
    return None

  def metadata(self, directory):  # pylint: disable=unused-argument
    return None

  def finalize(self, directory):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: str


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


# ---------------------------------------------------------------------------
# Shape checks before restoring.


def _path_str(path) -> str:
  parts = []
  for p in path:
    key = getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))
    parts.append(str(key))
  return "/".join(parts)


def check_compatible(saved: Any, abstract: Any) -> None:
  """Raises CheckpointMismatch naming the first leaf whose presence or shape differs."""
  saved_leaves = {_path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(
      saved, is_leaf=lambda x: hasattr(x, "shape"))[0]}
  want_leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
  for path, want in want_leaves:
    name = _path_str(path)
    if name not in saved_leaves:
      raise CheckpointMismatch(
          f"checkpoint has no {name!r} (shape {tuple(want.shape)}); the model and the "
          "checkpoint differ (another model config?)")
    got = tuple(saved_leaves[name].shape)
    if got != tuple(want.shape):
      raise CheckpointMismatch(
          f"parameter {name!r}: checkpoint shape {got}, model shape {tuple(want.shape)}; "
          "the checkpoint was written by another model config")
  extra = sorted(set(saved_leaves) - {_path_str(p) for p, _ in want_leaves})
  if extra:
    raise CheckpointMismatch(
        f"checkpoint has {extra[0]!r} that the model lacks ({len(extra)} such entries)")


# ---------------------------------------------------------------------------


def resolve_directory(path: str) -> str:
  """A workdir or its `checkpoints/` folder -> the folder orbax manages."""
  sub = os.path.join(path, "checkpoints")
  return sub if os.path.isdir(sub) or not os.path.isdir(path) or not _has_steps(path) else path


def _has_steps(path: str) -> bool:
  return any(re.fullmatch(r"\d+", n) for n in os.listdir(path))


class Checkpointer:
  """Saves every `every` steps (and on demand), keeps the last `keep`."""

  def __init__(self, directory: str, *, every: int = 1000, keep: int = 3,
               use_async: bool = True, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.every = every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=use_async, create=not read_only,
        read_only=read_only, save_interval_steps=1)
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for args_type in (ocp.args.StandardSave, ocp.args.StandardRestore):
      registry.add("state", args_type, ocp.StandardCheckpointHandler)
    for args_type in (DataStateSave, DataStateRestore):
      registry.add("data", args_type, DataStateHandler)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, handler_registry=registry)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def should_save(self, step: int) -> bool:
    return step % self.every == 0

  def save(self, step: int, state: Any, data_state: Any | None) -> None:
    """Starts saving `state` and the data stream position at `step` (asynchronously)."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = DataStateSave(json.dumps(data_state))
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def saved_structure(self, step: int) -> Any:
    meta = self.manager.item_metadata(step)["state"]
    return getattr(meta, "tree", meta)

  def restore(self, step: int, abstract_state: Any, *, with_data: bool = True
              ) -> tuple[Any, dict | None]:
    """(state, data state or None) at `step`, sharded like `abstract_state`.

    Shapes are compared first: a checkpoint of another model fails here,
    naming the first mismatched parameter, before anything is read.
    """
    check_compatible(self.saved_structure(step), abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    step_dir = epath.Path(self.directory) / str(step) / "data"
    if with_data and step_dir.exists():
      items["data"] = DataStateRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored.get("data") if "data" in items else None

  def restore_params(self, step: int, abstract_params: Any, *, prefer_ema: bool = True
                     ) -> tuple[Any, str]:
    """(params, "ema_params" or "params") at `step`: only what inference needs.

    Reads the EMA copy when the checkpoint has one (and `prefer_ema`), and only
    the subtrees `abstract_params` names: no optimiser state, and parts of the
    training setup the caller leaves out (a GAN discriminator, say) stay on disk.
    """
    saved = self.saved_structure(step)
    key = "ema_params" if prefer_ema and saved.get("ema_params") is not None else "params"
    check_compatible(_subtree_like(saved[key], abstract_params), abstract_params)
    item = {key: abstract_params}
    restore_args = jax.tree.map(
        lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
        item)
    path = epath.Path(self.directory) / str(step) / "state"
    with ocp.PyTreeCheckpointer() as reader:
      restored = reader.restore(path, args=ocp.args.PyTreeRestore(
          item=item, restore_args=restore_args, partial_restore=True))
    return restored[key], key

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _subtree_like(saved: Any, want: Any) -> Any:
  """The part of a saved (nested dict) tree that `want`'s top-level keys name."""
  if isinstance(want, dict) and isinstance(saved, dict):
    return {k: saved[k] for k in want if k in saved}
  return saved
