"""The training loop every model shares.

A model plugs in as a `Task`: how to initialise its parameters, how to get
gradients and metrics for a batch, how to evaluate a batch and which
pictures to draw. The loop does the rest the same way for all of them:

  mesh from `config.mesh` -> sharded init (eval_shape -> logical specs ->
  mesh shardings -> jit(init, out_shardings)) or restore of the latest
  checkpoint -> per-host Grain batches made global -> the jitted
  `train_step` (explicit shardings, donated state) -> progress line,
  TensorBoard, pictures, periodic evaluation and asynchronous checkpoints
  (model state and data stream together) -> a final checkpoint.

SIGTERM (preemption) makes the loop save at the next step and return; a
restart with the same command resumes from the latest committed step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import linen as nn

from vidgen.data import pipeline
from vidgen.parallel import mesh as mesh_lib
from vidgen.parallel import multihost
from vidgen.parallel import rules as rules_lib
from vidgen.trainers import checkpoint as ckpt_lib
from vidgen.trainers import metrics as metrics_lib
from vidgen.trainers import optim as optim_lib
from vidgen.trainers.state import TrainState


class NonFiniteError(RuntimeError):
  """Too many non-finite steps in a row."""


@dataclasses.dataclass(frozen=True)
class Task:
  """What the loop needs to know about a model.

  Attributes:
    name: for logs.
    rules: logical-axis rules of the model family.
    batch_keys: batch entries the model reads (others stay on the host).
    init: rng -> params with logical partitioning metadata (`nn.Partitioned` boxes).
    grads: (params, batch, rng, step) -> (grads, metrics); pure and traceable;
      metrics must hold a scalar `loss`.
    evaluate: (params, batch, rng) -> metric sums over the batch plus `count`;
      pure and traceable.
    pictures: (params, batch, rng) -> {name: (H, W, 3) uint8 picture or (T, H, W, 3)
      uint8 video}; runs on the host.
    frozen: top-level parameter groups the optimiser leaves unchanged (a frozen
      VAE or text encoder; the optimiser keeps no state for them).
    pretrained: (params) -> params, run once on a fresh start (not on resume)
      to load frozen or warm-start weights from elsewhere; on the host.
    data: a data factory like `pipeline.dataset_from_config` (config, train=,
      num_workers=, process_index=, process_count=); None: that one.
  """

  name: str
  rules: rules_lib.Rules
  batch_keys: tuple[str, ...]
  init: Callable[[jax.Array], Any]
  grads: Callable[[Any, Mapping[str, jax.Array], jax.Array, jax.Array], tuple[Any, dict]]
  evaluate: Callable[[Any, Mapping[str, jax.Array], jax.Array], dict]
  pictures: Callable[[Any, Mapping[str, np.ndarray], jax.Array], dict[str, np.ndarray]] | None = None
  frozen: tuple[str, ...] = ()
  pretrained: Callable[[Any], Any] | None = None
  data: Callable[..., Any] | None = None


# ---------------------------------------------------------------------------
# The pure step.


def train_step(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array, *,
               grads_fn, tx: optax.GradientTransformation, ema_decay: float
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step; a non-finite loss or gradient leaves params and optimiser unchanged."""
  rng = jax.random.fold_in(rng, state.step)
  grads, metrics = grads_fn(state.params, batch, rng, state.step)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  def keep_if_finite(new, old):
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

  params = keep_if_finite(params, state.params)
  opt_state = keep_if_finite(opt_state, state.opt_state)
  ema = state.ema_params
  if ema is not None:
    # Warm-up (as in t5x / timm): early on the average forgets the random init quickly.
    step = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
    ema = keep_if_finite(optax.incremental_update(params, ema, 1.0 - decay), ema)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema,
      skipped=state.skipped + (~finite).astype(jnp.int32))
  metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
  return new_state, metrics


# ---------------------------------------------------------------------------
# Building blocks shared by train, evaluate and tools that load a trained model.


@dataclasses.dataclass
class Setup:
  """A mesh, the optimiser and the state's abstract form and shardings."""

  mesh: jax.sharding.Mesh
  rules: rules_lib.Rules
  tx: optax.GradientTransformation
  abstract: Any  # TrainState of ShapeDtypeStructs carrying shardings
  shardings: Any  # TrainState of NamedShardings
  init_fn: Callable[[jax.Array], TrainState]  # boxed init (for eval_shape)


def setup(config, task: Task, mesh: jax.sharding.Mesh | None = None) -> Setup:
  mesh = mesh or mesh_lib.make_mesh(config.mesh)
  tx = optim_lib.optimizer(config.optim, config.train.steps, frozen=task.frozen)
  ema = config.optim.ema_decay > 0

  def init_fn(rng):
    return TrainState.create(task.init(rng), tx, ema)

  # The key is abstract: a concrete one made under the mesh would be placed on
  # its devices, which compile-only devices (vidgen.aot) cannot hold.
  key = jax.eval_shape(lambda: jax.random.key(0))
  with mesh_lib.activate(mesh, task.rules):
    boxed = jax.eval_shape(init_fn, key)
  unboxed = nn.unbox(boxed)
  shardings = mesh_lib.tree_shardings(mesh, task.rules, nn.get_partition_spec(boxed), unboxed)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), unboxed, shardings)
  return Setup(mesh, task.rules, tx, abstract, shardings, init_fn)


def init_state(s: Setup, rng: jax.Array) -> TrainState:
  """Sharded init: every parameter is created already in its shard."""
  with mesh_lib.activate(s.mesh, s.rules):
    return jax.jit(lambda r: nn.unbox(s.init_fn(r)), out_shardings=s.shardings)(rng)


def _base_rng(config) -> jax.Array:
  return jax.random.key(config.seed)


def _init_rng(config) -> jax.Array:
  # rbg keys: the same quality for initialisers, and init of a model with
  # many parameters compiles several times faster than with threefry on CPU.
  return jax.random.key(config.seed, impl="rbg")


def batch_shardings(s: Setup, example: Mapping[str, np.ndarray], keys) -> dict:
  return {k: mesh_lib.batch_sharding(s.mesh, s.rules, np.ndim(example[k])) for k in keys}


def compiler_options(config, mesh: jax.sharding.Mesh) -> dict[str, Any] | None:
  """`train.tpu_compiler_options` ("name=value,...") when `mesh` is of TPUs, else None.

  Values read as int, float or bool (true/false) where they parse, else strings.
  """
  text = config.train.get("tpu_compiler_options", "")
  if not text or mesh.devices.flat[0].platform != "tpu":
    return None
  options = {}
  for item in text.split(","):
    name, eq, value = (p.strip() for p in item.partition("="))
    if not name or not eq:
      raise ValueError(f"train.tpu_compiler_options: {item!r} is not name=value")
    if value.lower() in ("true", "false"):
      options[name] = value.lower() == "true"
      continue
    for kind in (int, float):
      try:
        options[name] = kind(value)
        break
      except ValueError:
        continue
    else:
      options[name] = value
  return options


def compile_train_step(s: Setup, task: Task, config, example_batch) -> Callable:
  step = functools.partial(train_step, grads_fn=task.grads, tx=s.tx,
                           ema_decay=float(config.optim.ema_decay))
  repl = mesh_lib.replicated(s.mesh)
  return jax.jit(
      step,
      in_shardings=(s.shardings, batch_shardings(s, example_batch, task.batch_keys), repl),
      out_shardings=(s.shardings, repl),
      donate_argnums=(0,), compiler_options=compiler_options(config, s.mesh))


def compile_eval_step(s: Setup, task: Task, example_batch) -> Callable:
  repl = mesh_lib.replicated(s.mesh)
  return jax.jit(
      task.evaluate,
      in_shardings=(s.shardings.params, batch_shardings(s, example_batch, task.batch_keys), repl),
      out_shardings=repl)


def evaluate(s: Setup, task: Task, params: Any, batches: Iterator[Mapping[str, np.ndarray]],
             rng: jax.Array, max_batches: int | None = None,
             compiled: dict[tuple, Callable] | None = None) -> dict[str, float]:
  """Metric means over up to `max_batches` batches (all when None).

  `compiled` keeps the jitted eval steps (one per batch shape) between calls.
  """
  totals: dict[str, float] = {}
  steps = {} if compiled is None else compiled
  for i, local in enumerate(batches):
    if max_batches is not None and i >= max_batches:
      break
    shapes = tuple((k, np.shape(local[k])) for k in task.batch_keys)
    if shapes not in steps:
      steps[shapes] = compile_eval_step(s, task, local)
    with mesh_lib.activate(s.mesh, s.rules):
      batch = multihost.global_batch(local, s.mesh, s.rules, task.batch_keys)
      out = jax.device_get(steps[shapes](params, batch, jax.random.fold_in(rng, i)))
    for k, v in out.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  count = totals.pop("count", 0.0)
  if not count:
    return {"count": 0}
  return {**{k: v / count for k, v in totals.items()}, "count": int(count)}


def restore_for_inference(config, task: Task, directory: str, step: int | None = None
                          ) -> tuple[Setup, Any, int]:
  """(setup, eval params, step) of a trained model from a workdir or checkpoint folder."""
  s = setup(config, task)
  ckpt = ckpt_lib.Checkpointer(ckpt_lib.resolve_directory(directory), read_only=True)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  params, which = ckpt.restore_params(step, s.abstract.params)
  ckpt.close()
  logging.info("restored %s of step %d from %s", which, step, ckpt.directory)
  return s, params, step


# ---------------------------------------------------------------------------
# Preemption.


class _StopSignal:
  """Set by SIGTERM; the loop saves at the next step and returns."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def install(self) -> None:
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM: saving a checkpoint at the next step, then stopping")
    self.requested = True

  def uninstall(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


# ---------------------------------------------------------------------------
# The loop.


class _BatchKeysLog:
  """`train.log_batch_keys`: W/batch_keys/process_<i>-of-<n>.jsonl, a line per step.

  Each line is `{"step": s, "keys": [...], "shards": [...]}`: the source keys
  of this process's rows of the batch that step s trained on, and the data
  shards this process reads. A restarted run appends; a step logged after the
  last checkpoint appears again after a resume (the last line of a step wins).
  """

  def __init__(self, workdir: str, process_index: int, process_count: int):
    folder = os.path.join(workdir, "batch_keys")
    os.makedirs(folder, exist_ok=True)
    self._file = open(os.path.join(folder, f"process_{process_index}-of-{process_count}.jsonl"),
                      "a")

  def write(self, step: int, local: Mapping[str, np.ndarray], shards) -> None:
    line = {"step": step, "keys": np.asarray(local.get("key", [])).astype(np.int64).tolist()}
    if shards is not None:
      line["shards"] = [int(j) for j in shards]
    self._file.write(json.dumps(line) + "\n")
    self._file.flush()

  def close(self) -> None:
    self._file.close()


@dataclasses.dataclass
class Result:
  step: int
  stopped_early: bool  # by SIGTERM or the time limit, with a checkpoint
  eval: dict[str, float]
  skipped: int
  preempted: bool = False  # stopped by SIGTERM


def _mean_metrics(window: list[dict]) -> dict[str, float]:
  host = jax.device_get(window)
  finite = np.array([m["finite"] for m in host]) > 0.5
  out = {}
  for k in host[0]:
    if k == "finite":
      continue
    vals = np.array([m[k] for m in host], np.float64)
    vals = vals[finite] if finite.any() else vals
    out[k] = float(vals.mean())
  return out


def _consecutive_skips(window: list[dict], before: int) -> tuple[int, int]:
  """(run of non-finite steps at the window's end, longest run in the window)."""
  run, longest = before, 0
  for m in jax.device_get([m["finite"] for m in window]):
    run = 0 if m > 0.5 else run + 1
    longest = max(longest, run)
  return run, longest


def train(config, workdir: str, task: Task, *,
          data_factory: Callable[..., Any] | None = None) -> Result:
  """Trains `task` as `config` says, in `workdir`; resumes from its latest checkpoint."""
  t = config.train
  s = setup(config, task)
  process_index, process_count = jax.process_index(), jax.process_count()
  logging.info("%s: mesh %s on %d devices (%d processes)", task.name,
               dict(s.mesh.shape), s.mesh.size, process_count)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(s.abstract.params))
  logging.info("%s: %s parameters", task.name, f"{n_params:,}")

  ckpt = ckpt_lib.Checkpointer(
      f"{workdir}/checkpoints", every=t.checkpoint_every, keep=t.keep_checkpoints,
      use_async=t.async_checkpoint)
  data_factory = data_factory or task.data
  if data_factory is None:
    pipeline.ensure_tokenizer(config)
  make_data = data_factory or pipeline.dataset_from_config
  data_iter = iter(make_data(config, train=True, process_index=process_index,
                             process_count=process_count))
  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state = ckpt.restore(latest, s.abstract)
    if data_state is not None:
      try:
        data_iter.set_state(data_state)
      except pipeline.StateMismatch as e:
        logging.warning("the data stream starts afresh (the model state is restored): %s", e)
    logging.info("resumed from step %d of %s", latest, ckpt.directory)
  else:
    state = init_state(s, _init_rng(config))
    if task.pretrained is not None:
      params = jax.device_put(task.pretrained(state.params), s.shardings.params)
      ema = None if state.ema_params is None else jax.tree.map(jnp.copy, params)
      state = state.replace(params=params, opt_state=s.tx.init(params), ema_params=ema)
  step = int(jax.device_get(state.step))
  rng = jax.random.fold_in(_base_rng(config), 1)
  eval_rng = jax.random.fold_in(_base_rng(config), 2)

  writer = metrics_lib.Writer(workdir)
  progress = metrics_lib.Progress(step, t.steps)
  lr_at = optim_lib.schedule(config.optim, t.steps)
  stop = _StopSignal()
  stop.install()
  steps: dict[tuple, Callable] = {}
  eval_steps: dict[tuple, Callable] = {}
  window: list[dict] = []
  skip_run = 0
  stopped_early = preempted = False
  eval_metrics: dict[str, float] = {}
  started = time.perf_counter()
  keys_log = _BatchKeysLog(workdir, process_index, process_count) if t.get(
      "log_batch_keys", False) else None

  def run_eval(params):
    nonlocal eval_metrics
    batches = iter(make_data(config, train=False, num_workers=0,
                             process_index=process_index, process_count=process_count))
    eval_metrics = evaluate(s, task, params, batches, eval_rng, t.eval_batches, eval_steps)
    writer.scalars(step, eval_metrics, prefix="eval")
    metrics_lib.log(f"eval at step {step}: " + ", ".join(
        f"{k} {v:.4g}" for k, v in eval_metrics.items()))

  try:
    while step < t.steps:
      local = next(data_iter)
      if keys_log is not None:
        keys_log.write(step + 1, local, getattr(data_iter, "shards", None))
      shapes = tuple((k, np.shape(local[k])) for k in task.batch_keys)
      if shapes not in steps:
        logging.info("compiling the train step for %s", dict(shapes))
        steps[shapes] = compile_train_step(s, task, config, local)
      with mesh_lib.activate(s.mesh, s.rules):
        batch = multihost.global_batch(local, s.mesh, s.rules, task.batch_keys)
        state, metrics = steps[shapes](state, batch, rng)
      step += 1
      progress.add_clips(np.shape(local[task.batch_keys[0]])[0] * process_count)
      window.append(metrics)

      last = step == t.steps
      if step % t.log_every == 0 or last:
        skip_run, longest = _consecutive_skips(window, skip_run)
        values = _mean_metrics(window)
        window = []
        values["lr"] = float(lr_at(step))
        values["skipped"] = float(jax.device_get(state.skipped))
        text, rates = progress.line(step, values)
        metrics_lib.log(text)
        writer.scalars(step, {**values, **rates})
        if longest >= t.max_consecutive_skips:
          ckpt.wait()
          raise NonFiniteError(
              f"{longest} non-finite steps in a row (train.max_consecutive_skips="
              f"{t.max_consecutive_skips}) up to step {step}: the loss or the gradients are "
              "NaN/inf; lower optim.lr, check the data, or raise the limit")
        if longest:
          logging.warning("%d non-finite steps skipped up to step %d (%d in all)",
                          longest, step, int(values["skipped"]))
        over_time = (t.time_limit_minutes > 0 and
                     time.perf_counter() - started > 60 * t.time_limit_minutes)
        if multihost.any_process(over_time):
          logging.info("train.time_limit_minutes=%g reached at step %d", t.time_limit_minutes,
                       step)
          stopped_early = True
      if (stop.requested if process_count == 1 else
          (step % t.log_every == 0 and multihost.any_process(stop.requested))):
        stopped_early = preempted = True
      if t.picture_every and task.pictures and (
          step % t.picture_every == 0 or last or (stopped_early and not preempted)):
        for name, image in task.pictures(state.eval_params(), local, eval_rng).items():
          (writer.video if np.ndim(image) == 4 else writer.picture)(step, name, image)
      # A preempted job saves and leaves at once (its grace period is short);
      # the time limit and the last step evaluate first.
      if (t.eval_every and step % t.eval_every == 0) or last or (
          stopped_early and not preempted):
        run_eval(state.eval_params())
      if ckpt.should_save(step) or last or stopped_early:
        ckpt.save(step, state, data_iter.get_state())
      if stopped_early:
        break
    writer.flush()
  finally:
    stop.uninstall()
    ckpt.close()
    writer.close()
    if keys_log is not None:
      keys_log.close()
  return Result(step=step, stopped_early=stopped_early, eval=eval_metrics,
                skipped=int(jax.device_get(state.skipped)), preempted=preempted)
