"""python -m vidgen.train --config=configs/shapes/vae.py --workdir=W [--config.x.y=...]

Trains the model `config.task` names, in W: checkpoints in W/checkpoints
(a restart with the same command resumes from the latest one), TensorBoard in
W/tensorboard, pictures in W/pictures, metrics in W/metrics.jsonl, logs in
W/logs. Several processes: see docs/launching.md.

Exit status: 0 when the run is done (all steps, or train.time_limit_minutes
reached); 143 when SIGTERM stopped it after a checkpoint (preemption), so that
schedulers restart it; the restart resumes.
"""

from __future__ import annotations

import json
import os
import sys

import jax

from vidgen import app

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: stopped by a signal after saving


def make_task(config):
  if config.task == "vae":
    from vidgen.trainers import vae  # pylint: disable=g-import-not-at-top
    return vae.make_task(config)
  if config.task == "dit":
    from vidgen.trainers import dit  # pylint: disable=g-import-not-at-top
    return dit.make_task(config)
  if config.task == "captioner":
    from vidgen.trainers import captioner  # pylint: disable=g-import-not-at-top
    return captioner.make_task(config)
  raise ValueError(f"config.task={config.task!r} is not a training task "
                   "(trainable: vae, dit, captioner)")


def main(config, workdir):
  from vidgen.trainers import loop  # pylint: disable=g-import-not-at-top
  result = loop.train(config, workdir, make_task(config))
  if jax.process_index() == 0:
    summary = {"step": result.step, "stopped_early": result.stopped_early,
               "preempted": result.preempted,
               "skipped": result.skipped, "eval": result.eval}
    with open(os.path.join(workdir, "train_result.json"), "w") as f:
      json.dump(summary, f, indent=2)
    print(json.dumps(summary), flush=True)
  if result.preempted:
    # Non-zero, so SLURM requeues and GKE/xpk restart the job: it is not finished.
    sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  app.run(main)
