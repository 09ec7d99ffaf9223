"""The trainer: state, optimiser, sharded init, the jitted step, checkpoints, metrics."""
