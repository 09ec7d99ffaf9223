"""Logical axis names: the one vocabulary modules use to say how arrays shard.

Modules name logical axes only (`nn.with_logical_partitioning` on initialisers,
`nn.with_logical_constraint` on activations); `parallel/rules.py` maps each
name to mesh axes per model family. Shape legend used in comments everywhere:

    B batch   T frames   H height   W width   C channels
    L tokens  D width    N heads    K head dim

Conv kernels are (kt, kh, kw, C_in, C_out) or (kh, kw, C_in, C_out): the
kernel taps are never sharded (`None`), the channels are.
"""

# Activations.
BATCH = "batch"
FRAMES = "frames"
HEIGHT = "height"
WIDTH = "width"
LENGTH = "length"  # a flattened token axis (L)

# Parameters and activation features.
EMBED = "embed"  # model width D / channels of a feature map
MLP = "mlp"  # hidden width of an MLP
HEADS = "heads"  # N
# N of attention activations in the context-parallel all-to-all (Ulysses)
# layout: heads over tensor x context, every frame local.
CONTEXT_HEADS = "context_heads"
KV = "kv"  # K
CONV_IN = "conv_in"  # input channels of a conv kernel
CONV_OUT = "conv_out"  # output channels of a conv kernel
VOCAB = "vocab"
NORM = "norm"  # scales and biases of norms
LAYERS = "layers"  # the stacked-blocks axis of `nn.scan` over layers (never sharded)
TABLE = "table"  # rows of a lookup table: positions, modulation slots (replicated)

ALL = (BATCH, FRAMES, HEIGHT, WIDTH, LENGTH, EMBED, MLP, HEADS, CONTEXT_HEADS, KV, CONV_IN,
       CONV_OUT, VOCAB, NORM, LAYERS, TABLE)

# Mesh axes, outermost first (data-centre network ... chip interconnect).
MESH_AXES = ("data", "fsdp", "tensor", "context")
