"""The optimiser from the `optim` config section: AdamW, warmup + cosine/constant, clipping."""

from __future__ import annotations

from typing import Any

import optax


def schedule(optim: Any, total_steps: int) -> optax.Schedule:
  """Linear warmup to `lr`, then constant or cosine decay to `lr * end_lr_factor`."""
  warmup = min(int(optim.warmup_steps), max(total_steps - 1, 0))
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.lr)
  elif optim.schedule == "cosine":
    after = optax.cosine_decay_schedule(
        optim.lr, max(total_steps - warmup, 1), alpha=optim.end_lr_factor)
  else:
    raise ValueError(f"unknown optim.schedule {optim.schedule!r}")
  if warmup == 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, optim.lr, warmup), after], [warmup])


def optimizer(optim: Any, total_steps: int, frozen: tuple[str, ...] = ()
              ) -> optax.GradientTransformation:
  """Clipping + AdamW; the top-level parameter groups in `frozen` get zero updates and no state."""
  parts = []
  if optim.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim.clip_norm))
  parts.append(optax.adamw(
      schedule(optim, total_steps), b1=optim.b1, b2=optim.b2, eps=optim.eps,
      weight_decay=optim.weight_decay))
  tx = optax.chain(*parts)
  if not frozen:
    return tx
  labels = lambda params: {k: "frozen" if k in frozen else "train" for k in params}
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
