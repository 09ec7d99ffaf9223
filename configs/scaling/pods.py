"""Pod-scale stage-2 configs: a model, a clip size, a TPU slice and the mesh that fits it.

    python -m vidgen.aot --config=configs/scaling/pods.py:pod=xl2-v5p32
    python -m vidgen.train --config=configs/scaling/pods.py:pod=h2-720p-v5p128 \
        --workdir=gs://BUCKET/h2-720p --config.dit.latents=gs://BUCKET/latents-720p

Each row of `PODS` is one config: a `configs/scaling/dit.py` variant and clip
(frames, height, width in pixels; the VAE is the default 4x8x8 one), the
global batch, the TPU topology it targets (`config.topology`, which
`vidgen.aot` compiles for) and the memory levers that make it fit (mesh,
`dit.remat`, `dit.attention_chunk`, `dit.context_attention`). They train on
cached latents (`dit.latents`: the output of `vidgen.prepare --mode=latents`,
a placeholder here), so the step holds no VAE. docs/scaling.md has the table
of what `vidgen.aot` reports for each row and how to add one.

Arguments:
  pod      a name in PODS.
  batch    overrides the row's global batch (0: the row's).
  remat    overrides the row's remat policy (none | full | dots | offload).
  steps    the schedule's length.
"""

import dataclasses
import importlib.util
import os

from vidgen import configlib


@dataclasses.dataclass(frozen=True)
class Pod:
  variant: str
  frames: int
  height: int
  width: int
  batch: int
  topology: str  # jax.experimental.topologies name, e.g. v5p:2x2x4 (v5p-32: 16 chips)
  mesh: dict  # data, fsdp, tensor, context; their product is the topology's chips
  remat: str = "none"
  attention_chunk: int = 0
  context_attention: str = "ulysses"


PODS = {
    # DiT-XL/2 (about 760M parameters) at 256x256, 65 frames (2.7 s at 24 fps):
    # 17x32x32 latents, 4,352 tokens a clip. 16 chips, weights and batch over fsdp.
    "xl2-v5p32": Pod("XL/2", 65, 256, 256, batch=32, topology="v5p:2x2x4",
                     mesh=dict(data=1, fsdp=16, tensor=1, context=1)),
    # 1.35B at 720p (1280x720), 125 frames (5.2 s at 24 fps): 32x90x160 latents,
    # 115,200 tokens a clip; each clip's frames over 2 chips.
    "h2-720p-v5p128": Pod("H/2", 125, 720, 1280, batch=32, topology="v5p:4x4x4",
                          mesh=dict(data=1, fsdp=32, tensor=1, context=2), remat="full",
                          attention_chunk=1200),
    # 3.5B at 1080p (1920x1088: 1080 rounded up to the 16-pixel patch grid), 381
    # frames (15.9 s at 24 fps): 96x136x240 latents, 783,360 tokens a clip; each
    # clip's frames over 8 chips (12 latent frames each), Ulysses temporal attention.
    "g2-1080p-v5p512": Pod("G/2", 381, 1088, 1920, batch=32, topology="v5p:4x8x8",
                           mesh=dict(data=1, fsdp=32, tensor=1, context=8), remat="full",
                           attention_chunk=1020),
}


def _scaling_dit(arg: str):
  """get_config of configs/scaling/dit.py (config files are loaded by path, not imported)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dit.py")
  spec = importlib.util.spec_from_file_location("vidgen_config_scaling_dit", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  arg = configlib.parse_arg(arg, pod="xl2-v5p32", batch=0, remat="", steps=100_000)
  if arg.pod not in PODS:
    raise configlib.ConfigError(f"unknown pod {arg.pod!r}; known: {', '.join(PODS)}")
  pod = PODS[arg.pod]
  remat = arg.remat or pod.remat
  config = _scaling_dit(
      f"variant={pod.variant},frames={pod.frames},height={pod.height},width={pod.width},"
      f"batch={arg.batch or pod.batch},steps={arg.steps},remat={remat}")
  config.topology = pod.topology
  config.mesh.update(pod.mesh)
  config.dit.attention_chunk = pod.attention_chunk
  config.dit.context_attention = pod.context_attention
  config.dit.latents = "latents"  # a `prepare --mode=latents` folder: set it for a real run
  return config
