"""The one bootstrap every entry point shares.

    python -m vidgen.<tool> --config=configs/x/y.py[:key=value,...] --workdir=W \
        [--config.a.b=value ...]

does, in this order: parse flags (config overrides included), validate the
config (an unknown key or a bad value stops here, naming the key), start
`jax.distributed` when the job has several processes, log to the console and
to `W/logs/`, print the resolved config and save it as `W/config.json`, then
call the tool's `main(config, workdir)`.

Several processes are detected from explicit flags (`--coordinator_address`,
`--num_processes`, `--process_id`, as `launch/local.sh` passes them), from
`JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`, or from
the cluster environment JAX knows (SLURM with more than one task, TPU pods).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from vidgen import configlib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, `path.py[:key=value,...]`.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for logs, checkpoints and outputs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _multiprocess_args() -> dict | None:
  """jax.distributed.initialize kwargs, or None for a single-process job."""
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    if None in (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
      raise app.UsageError(
          "--coordinator_address, --num_processes and --process_id go together")
    return dict(coordinator_address=_COORDINATOR.value,
                num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return {}  # jax.distributed reads JAX_COORDINATOR_ADDRESS & co. itself
  if int(env.get("SLURM_NTASKS", "1")) > 1:
    return {}  # SLURM cluster detection
  if env.get("TPU_WORKER_HOSTNAMES", "localhost").count(",") >= 1:
    return {}  # TPU pod slice with several hosts
  return None


def initialize_distributed() -> None:
  kwargs = _multiprocess_args()
  if kwargs is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(**kwargs)


def process_info() -> tuple[int, int]:
  """(process_index, process_count) without importing JAX for single-process jobs."""
  if _multiprocess_args() is None:
    return 0, 1
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index(), jax.process_count()


class _QuietLibraries(std_logging.Filter):
  """Drops the INFO chatter of orbax, grain and JAX internals (warnings still show)."""

  NOISY = ("/orbax/", "/grain/", "/jax/_src/", "/etils/")

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        n in record.pathname for n in self.NOISY)


def _setup_logging(workdir: str | None, index: int) -> None:
  logging.set_verbosity(logging.INFO)
  quiet = _QuietLibraries()
  for h in std_logging.getLogger().handlers:
    h.addFilter(quiet)
  if workdir:
    log_dir = os.path.join(workdir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    handler = std_logging.FileHandler(os.path.join(log_dir, f"log-process{index}.txt"))
    handler.setFormatter(std_logging.Formatter(
        "%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s"))
    handler.addFilter(quiet)
    std_logging.getLogger().addHandler(handler)


def run(main: Callable[[configlib.ConfigDict, str | None], None], *,
        workdir_required: bool = True, config_file: str = "config.json") -> None:
  """Parses flags and runs `main(config, workdir)`; use as `app.run(main)` in `__main__`.

  `config_file`: where in the workdir the resolved config is saved (tools that
  work in another tool's workdir, like evaluate, keep the trainer's).
  """

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
      raise app.UsageError("--config is required, e.g. --config=configs/shapes/data.py")
    workdir = _WORKDIR.value
    if workdir_required and not workdir:
      raise app.UsageError("--workdir is required")
    try:
      config = configlib.validate(_CONFIG.value)
    except configlib.ConfigError as e:
      raise app.UsageError(str(e)) from None
    initialize_distributed()
    index, count = process_info()
    _setup_logging(workdir, index)
    if count > 1:
      import jax  # pylint: disable=g-import-not-at-top
      logging.info("jax.distributed: process %d of %d, %d devices in all", index, count,
                   jax.device_count())
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    logging.info("resolved config:\n%s", text)
    print(f"resolved config ({config_flags.get_config_filename(flags.FLAGS['config'])}):\n{text}",
          file=sys.stderr, flush=True)
    if workdir and index == 0:
      path = os.path.join(workdir, config_file)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write(text + "\n")
    main(config, workdir)

  app.run(_main)
