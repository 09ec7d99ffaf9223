"""Logical-axis rules: logical name -> mesh axes, one table per model family.

Read with `flax.linen.logical_to_mesh_sharding` / `nn.logical_axis_rules`.
A name maps to one mesh axis, a tuple of them, or None (replicated). Every
name in `axes.ALL` must have a rule in every table (a test checks this).
"""

from __future__ import annotations

from vidgen.parallel import axes

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Convolutional families (the VAE): batch over data x fsdp, frames over
# context, parameters sharded on their output channels over fsdp (ZeRO-3
# style), replicated elsewhere. Feature maps stay unsharded in channels so
# convs need no collectives beyond the fsdp all-gathers of their kernels.
VAE: Rules = (
    (axes.BATCH, ("data", "fsdp")),
    (axes.FRAMES, "context"),
    (axes.HEIGHT, None),
    (axes.WIDTH, None),
    (axes.LENGTH, None),
    (axes.EMBED, None),
    (axes.MLP, "tensor"),
    (axes.HEADS, "tensor"),
    (axes.CONTEXT_HEADS, ("tensor", "context")),
    (axes.KV, None),
    (axes.CONV_IN, None),
    (axes.CONV_OUT, "fsdp"),
    (axes.VOCAB, None),
    (axes.NORM, None),
    (axes.LAYERS, None),
    (axes.TABLE, None),
)

# Transformers (DiT, text encoder, captioner): fsdp on the model width,
# tensor parallelism on heads and MLP hidden units, context on tokens/frames.
TRANSFORMER: Rules = (
    (axes.BATCH, ("data", "fsdp")),
    (axes.FRAMES, "context"),
    (axes.HEIGHT, None),
    (axes.WIDTH, None),
    (axes.LENGTH, "context"),
    (axes.EMBED, "fsdp"),
    (axes.MLP, "tensor"),
    (axes.HEADS, "tensor"),
    (axes.CONTEXT_HEADS, ("tensor", "context")),
    (axes.KV, None),
    (axes.CONV_IN, None),
    (axes.CONV_OUT, "fsdp"),
    (axes.VOCAB, "tensor"),
    (axes.NORM, None),
    (axes.LAYERS, None),
    (axes.TABLE, None),
)

FAMILIES: dict[str, Rules] = {"vae": VAE, "transformer": TRANSFORMER}


def get(family: str) -> Rules:
  try:
    return FAMILIES[family]
  except KeyError:
    raise ValueError(f"no logical-axis rules for {family!r}; known: {', '.join(FAMILIES)}") from None
