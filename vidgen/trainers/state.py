"""TrainState: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  """Attributes:
    step: steps taken (skipped non-finite steps included), int32 scalar.
    params: model parameters.
    opt_state: optax state.
    ema_params: exponential moving average of params, or None when EMA is off.
    skipped: non-finite steps skipped so far, int32 scalar.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any = None
  skipped: jax.Array | None = None

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation, ema: bool) -> "TrainState":
    return cls(step=jnp.zeros([], jnp.int32), params=params, opt_state=tx.init(params),
               ema_params=jax.tree.map(jnp.copy, params) if ema else None,
               skipped=jnp.zeros([], jnp.int32))

  def eval_params(self) -> Any:
    """The params to evaluate and sample with: the EMA copy when there is one."""
    return self.params if self.ema_params is None else self.ema_params
