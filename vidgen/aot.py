"""Compile a config's train step (and one sampler step) for a TPU topology on this host.

    python -m vidgen.aot --config=configs/scaling/dit.py:variant=XL/2,frames=65,batch=32 \
        --topology=v5p:2x2x4 [--config.mesh.data=1 --config.mesh.fsdp=16] \
        [--sample/--nosample] [--sample_batch=N] [--hlo_dir=DIR]

As MaxText's train_compile: with `jax[tpu]` installed (libtpu from PyPI),
`jax.experimental.topologies.get_topology_desc` gives the compile-only
devices of a TPU slice; the real `vidgen.trainers.loop.train_step` of the
config's task (dit, vae, captioner) is lowered on a mesh of them
(`config.mesh`, which must multiply to the slice's device count) from
`jax.ShapeDtypeStruct`s carrying shardings (the state; the batch of the
config's largest `data.buckets` entry at its global batch size, the keys the
task reads; the rng) and compiled by libtpu here, on the CPU. Nothing of the
model's size is allocated; no VAE checkpoint or tokenizer file is needed (the
vocabulary is `config.text.vocab_size`). `--topology` defaults to a top-level
string `topology` in the config.

For the DiT, one sampler step is compiled too (`--nosample`: not): one guided
model evaluation and update of `Generator`'s sampler (`diffusion.sample.
sampler`, classifier-free guidance `diffusion.sample.cfg`: the DiT with and
without the caption) on `--sample_batch` clips (default: the batch shards,
data x fsdp) of the largest bucket's latent shape, from the DiT parameters
and the already encoded captions; text encoding and VAE decoding run once per
video, not per step, and are not in it.

Prints ONE JSON line on stdout (logs and the resolved config go to stderr).
Figures are per device (one JAX device = one chip: v4 and v5p compile as
megacore); docs/scaling.md explains every field:

  {"config", "task", "topology", "chip", "device_kind", "devices", "mesh",
   "params", "params_by_group", "tokens_per_clip" (DiT), "global_batch",
   "batch_shapes", then the train step's figures: "argument_bytes",
   "output_bytes", "temp_bytes", "alias_bytes", "peak_bytes", "hbm_bytes",
   "fits", "flops_per_device", "bytes_accessed_per_device",
   "xla_flops_per_device", "xla_bytes_accessed_per_device",
   "loop_trip_counts", "collective_bytes", "collective_bytes_by_op",
   "collective_ops", "compute_s", "memory_s", "collective_s",
   "step_s_estimate", "step_s_no_overlap", "mfu_estimate" (DiT),
   "model_flops_per_device" (DiT), "compile_s"; "sample"
   (DiT: {"batch", "latents", "sampler", "cfg", "model_calls", and the same
   figures for one sampler step}), "overrides", and "error" when it does not
   fit (with "oom_required_bytes", "hbm_available_bytes",
   "peak_is_lower_bound" when the compile itself ran out of memory)}

FLOPs and bytes: XLA's cost_analysis counts a while-loop body once (nn.scan
over the DiT's layers is one; so are XLA's windowed-einsum loops), so the
repetitions are added from the compiled HLO text (`hlo_stats`, which counts
as XLA does, with the loops' trip counts). Roofline (`roofline`): compute_s =
FLOPs / the chip's peak bf16 FLOP/s; memory_s = bytes accessed / HBM
bandwidth; collective_s = the operand bytes of the step's collectives
(all-gather, all-reduce, reduce-scatter, all-to-all, collective-permute, as
often as they run) / the chip's ICI bandwidth. `step_s_estimate` = the max of
the three assumes perfect overlap of compute, HBM traffic and communication
(a lower bound); `step_s_no_overlap` = compute_s + collective_s assumes none.
`mfu_estimate` = the analytic model FLOPs (vidgen.bench.flops: 3 x forward,
no remat recomputation; a VAE encoding of uncached latents is not counted)
per device / (step_s_estimate x peak).

Exit status: 0 when it fits; 1 when it does not (the compile fails with an HBM
out-of-memory error, or peak_bytes > hbm_bytes): the JSON line still comes,
with fits false, the memory figures known (from libtpu's message when the
compile failed) and a one-line `error`; 2 for a usage problem (no topology, a
mesh that does not match it, a batch that does not split over the batch
shards, state that does not split over the mesh, no libtpu), with a one-line
message on stderr.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from absl import flags
from flax import linen as nn

from vidgen.parallel import mesh as mesh_lib

TPU_EXTRA_MESSAGE = "vidgen.aot needs the TPU extra: pip install -e '.[tpu]'"
USAGE_EXIT = 2
DOES_NOT_FIT_EXIT = 1

# ---------------------------------------------------------------------------
# Chips.


@dataclasses.dataclass(frozen=True)
class Chip:
  """Public figures of one TPU generation, per JAX device (one chip; v4 and v5p as megacore).

  Attributes:
    name: the topology prefix (`v5p` in `v5p:2x2x4`).
    device_kinds: `jax.Device.device_kind` strings of its devices.
    peak_flops: peak bf16 FLOP/s.
    hbm_bytes: HBM capacity in bytes.
    hbm_bandwidth: HBM bytes/s.
    ici_bandwidth: inter-chip interconnect bytes/s per chip (all links).
    megacore: one JAX device spans both TensorCores of the chip.
  """

  name: str
  device_kinds: tuple[str, ...]
  peak_flops: float
  hbm_bytes: int
  hbm_bandwidth: float
  ici_bandwidth: float
  megacore: bool = False


GIB = 1024 ** 3
# Per-chip figures from the Cloud TPU system architecture pages
# (https://cloud.google.com/tpu/docs/v4, .../v5e, .../v5p, .../v6e):
#   v4   275 TFLOP/s bf16, 32 GiB HBM2 at 1228 GB/s, ICI 2400 Gbps
#   v5e  197 TFLOP/s bf16, 16 GiB HBM2 at  819 GB/s, ICI 1600 Gbps
#   v5p  459 TFLOP/s bf16, 95 GiB HBM2e at 2765 GB/s, ICI 4800 Gbps
#   v6e  918 TFLOP/s bf16, 32 GiB HBM at 1640 GB/s, ICI 3584 Gbps
# device_kind strings as libtpu 0.0.42 reports them for the topologies'
# devices ("TPU v5" is v5p, "TPU v5 lite" v5e, "TPU v6 lite" v6e), plus the
# marketing names some runtimes report.
CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", ("TPU v4",), 275e12, 32 * GIB, 1228e9, 2400e9 / 8, megacore=True),
    "v5e": Chip("v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16 * GIB, 819e9, 1600e9 / 8),
    "v5p": Chip("v5p", ("TPU v5", "TPU v5p"), 459e12, 95 * GIB, 2765e9, 4800e9 / 8,
                megacore=True),
    "v6e": Chip("v6e", ("TPU v6 lite", "TPU v6e"), 918e12, 32 * GIB, 1640e9, 3584e9 / 8),
}
_ALIASES = {"v5litepod": "v5e", "v6litepod": "v6e"}
_TOPOLOGY_RE = re.compile(r"^(?P<chip>[a-z0-9]+):(?P<dims>\d+(?:x\d+)*)$")


def parse_topology(name: str) -> tuple[Chip, tuple[int, ...]]:
  """`"v5p:2x2x4"` -> (the chip, (2, 2, 4)); ValueError naming the known chips."""
  m = _TOPOLOGY_RE.match(name.strip())
  chip = m and _ALIASES.get(m["chip"], m["chip"])
  if not m or chip not in CHIPS:
    raise ValueError(f"--topology={name!r}: expected CHIP:AxB[xC] with CHIP one of "
                     f"{', '.join(list(CHIPS) + list(_ALIASES))}, e.g. v5p:2x2x4 or v5e:4x4")
  return CHIPS[chip], tuple(int(d) for d in m["dims"].split("x"))


def chip_for_kind(device_kind: str) -> Chip | None:
  for chip in CHIPS.values():
    if device_kind in chip.device_kinds:
      return chip
  return None


def _accelerator_type(chip: Chip, dims: Sequence[int]) -> str:
  """The TPU_ACCELERATOR_TYPE of a slice (v5p-32: TensorCores for v4/v5p, chips otherwise)."""
  chips = math.prod(dims)
  prefix = {"v5e": "v5litepod"}.get(chip.name, chip.name)
  return f"{prefix}-{chips * 2 if chip.megacore else chips}"


def quiet_libtpu(topology: str | None = None) -> None:
  """Environment for compile-only libtpu on a host without TPUs, before libtpu loads.

  JAX_PLATFORMS=cpu keeps JAX off any TPU of this machine; TPU_WORKER_HOSTNAMES
  (one host, so vidgen.app does not start jax.distributed) and
  TPU_ACCELERATOR_TYPE silence libtpu's "could not determine" warnings and
  its worker-hostname error. ALLOW_MULTIPLE_LIBTPU_LOAD lets several
  compile-only processes (parallel tests, two aot runs) load libtpu at once:
  none of them owns a TPU, so its lock file guards nothing here.
  """
  os.environ["JAX_PLATFORMS"] = "cpu"
  _compile_only_env()
  if topology:
    with contextlib.suppress(ValueError):
      os.environ.setdefault("TPU_ACCELERATOR_TYPE", _accelerator_type(*parse_topology(topology)))


def _compile_only_env() -> None:
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def libtpu_installed() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def get_topology(name: str) -> tuple[Chip, Any]:
  """(chip, jax TopologyDescription) of `name`; v4 and v5p as megacore (one device per chip)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  _compile_only_env()  # before libtpu loads
  chip, _ = parse_topology(name)
  kwargs = {"chip_config_name": "megacore"} if chip.megacore else {}
  topo = topologies.get_topology_desc(platform="tpu", topology_name=name, **kwargs)
  kind = topo.devices[0].device_kind
  by_kind = chip_for_kind(kind)
  if by_kind is not None and by_kind.name != chip.name:
    raise ValueError(f"--topology={name!r} gave {kind!r} devices, which are {by_kind.name}")
  return chip, topo


# ---------------------------------------------------------------------------
# Compiled HLO text: collectives, and what XLA's cost analysis leaves out.

COLLECTIVE_OPS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all",
                  "collective-permute", "ragged-all-to-all", "collective-broadcast")
_COLLECTIVE_OPCODES = {op: op for op in COLLECTIVE_OPS} | {
    f"{op}-start": op for op in ("all-gather", "all-reduce", "collective-permute")}
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8,
                "c128": 16, "s4": 0.5, "u4": 0.5, "s2": 0.25, "u2": 0.25}
# Opcodes XLA's HloCostAnalysis counts as one FLOP per output element (transcendentals
# such as exp and tanh it counts apart, and so do we).
_ELEMENTWISE = frozenset((
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs", "compare",
    "select", "and", "or", "xor", "not", "clamp", "convert", "sign", "floor", "ceil",
    "round-nearest-afz", "round-nearest-even", "remainder", "shift-left",
    "shift-right-logical", "shift-right-arithmetic", "popcnt", "clz", "is-finite",
    "reduce-precision", "real", "imag", "stochastic-convert"))
# Instructions that move no data of their own (or whose called computations are counted).
_NO_BYTES = frozenset((
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "call",
    "conditional", "after-all", "add-dependency", "partition-id", "replica-id",
    "custom-call", "async-start", "async-done", "async-update", "all-gather-done",
    "all-reduce-done", "collective-permute-done", "copy-done", "send-done", "recv-done",
    "opt-barrier"))
_ARRAY_RE = re.compile(r"\b([a-z][a-z0-9]*)\[([<=0-9,]*)\]")
_COMMENT_RE = re.compile(r"/\*.*?\*/")
_HEADER_RE = re.compile(r"^(?P<entry>ENTRY\s+)?%?(?P<name>[^\s(=]+)\s*\(.*->.*\{\s*$")
_INSTR_RE = re.compile(r"^\s*(?P<root>ROOT\s+)?%?(?P<name>[^\s=]+)\s*=\s*(?P<shape>.*?)\s"
                       r"(?P<op>[a-z][a-z0-9\-]*)\((?P<args>[^)]*)\)(?P<attrs>.*)$")
_OPERAND_RE = re.compile(r"%([^\s,)]+)")
_CALLED_RE = re.compile(r"\b(calls|body|condition|to_apply|true_computation|false_computation)="
                        r"%?([^\s,{}]+)")
_BRANCHES_RE = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_TRIP_RE = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def _dims(shape: str) -> list[int]:
  """Dimensions of the first array in an HLO shape string."""
  m = _ARRAY_RE.search(shape)
  if not m or not m[2]:
    return []
  return [int(d.lstrip("<=")) for d in m[2].split(",")]


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape string (`bf16[8,128]{1,0}`, a tuple of them, `f32[]`), unpadded."""
  total = 0.0
  for dtype, dims in _ARRAY_RE.findall(_COMMENT_RE.sub("", shape)):
    size = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else 0)
    n = math.prod(int(d.lstrip("<=")) for d in dims.split(",") if d) if dims else 1
    total += size * n
  return int(total)


def _elements(shape: str) -> int:
  return sum(math.prod(int(d.lstrip("<=")) for d in dims.split(",") if d) if dims else 1
             for _, dims in _ARRAY_RE.findall(_COMMENT_RE.sub("", shape)))


def _attr(attrs: str, key: str) -> str | None:
  m = re.search(r"\b" + key + r"=(\{[^}]*\}|[^,\s]+)", attrs)
  return m[1] if m else None


def dot_flops(out_shape: str, lhs_shape: str, attrs: str) -> int:
  """2 x output elements x contracted elements, as XLA counts a dot."""
  lhs = _dims(lhs_shape)
  k = math.prod(lhs[int(i)] for i in re.findall(r"\d+", _attr(attrs, "lhs_contracting_dims")
                                                 or "{}"))
  return 2 * _elements(out_shape) * k


def _valid_positions(inp: int, out: int, kernel: int, stride: int, pad_lo: int,
                     base_dilation: int, window_dilation: int) -> int:
  """(output position, kernel tap) pairs that read the input, as XLA's GetConvolutionFlops."""
  count = 0
  for k in range(kernel):
    if stride == 1 and base_dilation == 1:
      base = pad_lo - k * window_dilation
      count += max(min(inp + base, out) - max(base, 0), 0)
      continue
    for o in range(out):
      undilated = o * stride - pad_lo + k * window_dilation
      if undilated % base_dilation == 0 and 0 <= undilated // base_dilation < inp:
        count += 1
  return count


def conv_flops(out_shape: str, lhs_shape: str, rhs_shape: str, attrs: str) -> int:
  """2 x multiply-adds of a convolution (TPU HLO writes matmuls as convolutions), as XLA
  counts them: input features / feature groups x output features x batch / batch
  groups x the valid (output, kernel) position pairs of every spatial dimension."""
  labels = _attr(attrs, "dim_labels")
  if not labels or "->" not in labels or "_" not in labels:
    return 0
  out, lhs, rhs = _dims(out_shape), _dims(lhs_shape), _dims(rhs_shape)
  lhs_l, rest = labels.split("_", 1)
  rhs_l, out_l = rest.split("->")
  if len(lhs_l) != len(lhs) or len(rhs_l) != len(rhs) or len(out_l) != len(out):
    return 0
  fgc = int(_attr(attrs, "feature_group_count") or 1)
  bgc = int(_attr(attrs, "batch_group_count") or 1)
  window = _attr(attrs, "window") or "{}"
  spatial = sorted(c for c in lhs_l if c.isdigit())

  def field(name: str, default: int) -> list[int]:
    m = re.search(r"\b" + name + r"=([0-9_x]+)", window)
    if not m:
      return [default] * len(spatial)
    return [int(v.split("_")[0]) for v in m[1].split("x")]

  stride, pad = field("stride", 1), field("pad", 0)
  lhs_dil, rhs_dil = field("lhs_dilate", 1), field("rhs_dilate", 1)
  positions = 1
  for i, d in enumerate(spatial):
    positions *= _valid_positions(lhs[lhs_l.index(d)], out[out_l.index(d)],
                                  rhs[rhs_l.index(d)], stride[i], pad[i], lhs_dil[i],
                                  rhs_dil[i])
  fma = ((lhs[lhs_l.index("f")] // fgc) * out[out_l.index("f")]
         * (lhs[lhs_l.index("b")] // bgc) * positions)
  return 2 * fma


@dataclasses.dataclass(frozen=True)
class Instr:
  """One HLO instruction: name, opcode, result shape, operand names, attributes."""

  name: str
  op: str
  shape: str
  operands: tuple[str, ...]
  attrs: str
  root: bool
  computation: str
  literal: str = ""


@dataclasses.dataclass
class HloStats:
  """Figures of one compiled (per-device) HLO module, from its text.

  Attributes:
    collective_bytes: operand bytes of the collectives, each op counted as often as it
      runs (the trip counts of the loops around it).
    collective_bytes_by_op: the same per collective kind (all-gather, all-reduce, ...).
    collective_ops: collective instructions in the text (each counted once).
    flops: dot and convolution FLOPs plus one per element of elementwise ops and
      reduce inputs, counted as often as they run.
    flops_once: the same with every loop body counted once (as XLA's cost analysis does).
    bytes: operand bytes read and result bytes written by the instructions that touch
      memory (fusions, copies, collectives, ...), as often as they run; unpadded.
    bytes_once: the same with every loop body counted once.
    loops: trip counts of the while loops (None: not known; counted once).
  """

  collective_bytes: int = 0
  collective_bytes_by_op: dict[str, int] = dataclasses.field(default_factory=dict)
  collective_ops: int = 0
  flops: float = 0.0
  flops_once: float = 0.0
  bytes: float = 0.0
  bytes_once: float = 0.0
  loops: list[int | None] = dataclasses.field(default_factory=list)

  @property
  def unknown_trip_counts(self) -> int:
    return sum(t is None for t in self.loops)


class HloModule:
  """The instructions and computations of HLO text, and how often each computation runs."""

  def __init__(self, text: str):
    self.instrs: dict[str, Instr] = {}
    self.computations: dict[str, list[Instr]] = collections.defaultdict(list)
    self.entry: str | None = None
    current = "main"  # a bare list of instructions is one computation
    for line in text.splitlines():
      m = _INSTR_RE.match(line)
      header = None if m else _HEADER_RE.match(line)
      if header:
        current = header["name"]
        if header["entry"]:
          self.entry = current
        continue
      if not m:
        continue
      args = _COMMENT_RE.sub("", m["args"])
      instr = Instr(m["name"], m["op"], m["shape"], tuple(_OPERAND_RE.findall(args)),
                    m["attrs"], bool(m["root"]), current, args.strip())
      self.instrs[instr.name] = instr
      self.computations[current].append(instr)
    if self.entry is None and self.computations:
      self.entry = current
    self.users: dict[str, list[Instr]] = collections.defaultdict(list)
    self.params: dict[str, dict[int, Instr]] = collections.defaultdict(dict)
    self.roots: dict[str, Instr] = {}
    for instr in self.instrs.values():
      for operand in set(instr.operands):
        self.users[operand].append(instr)
      if instr.op == "parameter" and instr.literal.isdigit():
        self.params[instr.computation][int(instr.literal)] = instr
      if instr.root:
        self.roots[instr.computation] = instr
    self._read_memo: dict[str, int] = {}

  def shape(self, name: str) -> str:
    instr = self.instrs.get(name)
    return instr.shape if instr is not None else ""

  def constant(self, name: str) -> int | None:
    instr = self.instrs.get(name)
    if instr is None or instr.op != "constant":
      return None
    try:
      return int(instr.literal)
    except ValueError:
      return None

  def called(self, instr: Instr) -> dict[str, str]:
    return dict(_CALLED_RE.findall(instr.attrs))

  def trip_count(self, loop: Instr) -> int | None:
    """Iterations of a while loop: known_trip_count, else the counter the condition
    compares with a constant (`ROOT compare(gte(param, k), constant(N)), direction=LT`),
    from its initial value in the loop's operand tuple, in the steps the body adds
    to it (`add(gte(param, k), constant(step))` at tuple index k of the body's root)."""
    m = _TRIP_RE.search(loop.attrs)
    if m:
      return int(m[1])
    called = self.called(loop)
    cond = self.roots.get(called.get("condition", ""))
    if cond is None or cond.op != "compare" or len(cond.operands) != 2:
      return None
    direction = _attr(cond.attrs, "direction")
    counter, bound = self.instrs.get(cond.operands[0]), self.constant(cond.operands[1])
    if direction not in ("LT", "LE") or bound is None or counter is None or (
        counter.op != "get-tuple-element"):
      return None
    k = int(_attr(counter.attrs, "index") or -1)
    bound += direction == "LE"
    step, start = 1, 0
    body_root = self.roots.get(called.get("body", ""))
    if k >= 0 and body_root is not None and body_root.op == "tuple" and k < len(
        body_root.operands):
      update = self.instrs.get(body_root.operands[k])
      if update is not None and update.op == "add":
        step = next((c for c in map(self.constant, update.operands) if c is not None), 1)
    init = self.instrs.get(loop.operands[0]) if loop.operands else None
    if k >= 0 and init is not None and init.op == "tuple" and k < len(init.operands):
      start = self.constant(init.operands[k]) or 0
    if step <= 0:
      return None
    return max(0, -(-(bound - start) // step))

  def param_read_bytes(self, param: Instr) -> int:
    """Bytes a fusion reads of one parameter (as XLA's FusionParameterReadBytes): a
    slice or dynamic-slice of it reads the slice, an in-place dynamic-update-slice
    into it nothing, a nested fusion what that fusion reads, anything else all of it."""
    if param.name in self._read_memo:
      return self._read_memo[param.name]
    size, whole = 0, False
    for user in self.users.get(param.name, ()):
      first = user.operands[:1] == (param.name,)
      if user.op in ("slice", "dynamic-slice") and first:
        size += shape_bytes(user.shape)
      elif user.op == "dynamic-update-slice" and first:
        continue
      elif user.op == "fusion" and "calls" in self.called(user):
        nested = self.params.get(self.called(user)["calls"], {})
        for i, operand in enumerate(user.operands):
          if operand == param.name and i in nested:
            size += self.param_read_bytes(nested[i])
      else:
        whole = True
    size += shape_bytes(param.shape) if whole else 0
    self._read_memo[param.name] = size
    return size

  def fusion_bytes(self, fusion: Instr) -> int:
    """Operand bytes a fusion reads and result bytes it writes (an in-place
    dynamic-update-slice writes its update)."""
    callee = self.called(fusion).get("calls", "")
    root = self.roots.get(callee)
    if root is None:
      return shape_bytes(fusion.shape) + sum(shape_bytes(self.shape(o))
                                             for o in fusion.operands)
    outs = [self.instrs.get(n) for n in root.operands] if root.op == "tuple" else [root]
    written = 0
    for out in outs:
      if out is not None and out.op == "dynamic-update-slice" and len(out.operands) > 1:
        written += shape_bytes(self.shape(out.operands[1]))
      elif out is not None:
        written += shape_bytes(out.shape)
    params = self.params.get(callee, {})
    read = sum(self.param_read_bytes(params[i]) if i in params else shape_bytes(self.shape(o))
               for i, o in enumerate(fusion.operands))
    return written + read

  def moved_bytes(self, instr: Instr) -> int:
    if instr.op == "fusion":
      return self.fusion_bytes(instr)
    if instr.op in ("dynamic-slice", "slice"):
      return 2 * shape_bytes(instr.shape)
    if instr.op == "dynamic-update-slice":
      return 2 * shape_bytes(self.shape(instr.operands[1])) if len(instr.operands) > 1 else 0
    return shape_bytes(instr.shape) + sum(shape_bytes(self.shape(o)) for o in instr.operands)

  def flops(self, instr: Instr) -> float:
    ops = instr.operands
    if instr.op == "dot" and ops:
      return dot_flops(instr.shape, self.shape(ops[0]), instr.attrs)
    if instr.op == "convolution" and len(ops) >= 2:
      return conv_flops(instr.shape, self.shape(ops[0]), self.shape(ops[1]), instr.attrs)
    if instr.op in _ELEMENTWISE:
      return _elements(instr.shape)
    if instr.op == "reduce" and ops:
      return _elements(self.shape(ops[0]))
    return 0.0

  def run_counts(self) -> tuple[dict[str, float], dict[str, float], set[str], list]:
    """(times each computation runs, the same with loop bodies once, fused computations,
    loop trip counts)."""
    edges: dict[str, list[tuple[str, int, bool]]] = collections.defaultdict(list)
    loops: list[int | None] = []
    for comp, body in self.computations.items():
      for instr in body:
        called = self.called(instr)
        if instr.op == "while":
          trip = self.trip_count(instr)
          loops.append(trip)
          if "body" in called:
            edges[comp].append((called["body"], 1 if trip is None else trip, False))
        elif instr.op == "fusion" and "calls" in called:
          edges[comp].append((called["calls"], 1, True))
        elif instr.op in ("call", "async-start", "conditional"):
          for key in ("to_apply", "calls", "true_computation", "false_computation"):
            if key in called:
              edges[comp].append((called[key], 1, False))
          for branches in _BRANCHES_RE.findall(instr.attrs):
            for callee in branches.split(","):
              edges[comp].append((callee.strip().lstrip("%"), 1, False))
    order: list[str] = []
    seen: set[str] = set()

    def visit(comp: str) -> None:  # callees first; the call graph is a DAG
      if comp in seen:
        return
      seen.add(comp)
      for callee, _, _ in edges.get(comp, ()):
        visit(callee)
      order.append(comp)

    times: dict[str, float] = collections.defaultdict(float)
    once: dict[str, float] = collections.defaultdict(float)
    fused: set[str] = set()
    if self.entry is None:
      return times, once, fused, loops
    visit(self.entry)
    times[self.entry] = once[self.entry] = 1.0
    for comp in reversed(order):
      for callee, factor, is_fused in edges.get(comp, ()):
        times[callee] += times[comp] * factor
        once[callee] += once[comp]
        if is_fused or comp in fused:
          fused.add(callee)
    return times, once, fused, loops


def hlo_stats(hlo_text: str, breakdown: list | None = None) -> HloStats:
  """Collectives, FLOPs and memory traffic of compiled HLO text (`compiled.as_text()`),
  each computation weighted by how often it runs.

  A while body runs its loop's trip count times (`HloModule.trip_count`: nn.scan
  over layers is 0 to depth by 1, XLA's windowed einsum loops, unrolled, go by
  2); unknown trip counts count once (`unknown_trip_counts`). FLOPs follow XLA's
  HloCostAnalysis (dots, convolutions, elementwise ops, reduces; within about 1%
  of XLA's figure for a program without loops). Bytes follow its rules for
  fusions (slices read the slice; in-place updates write the update) but
  without the TPU's tile padding. `breakdown`: a list to append (bytes moved x
  times run, computation, instruction) to.
  """
  module = HloModule(hlo_text)
  times, once, fused, loops = module.run_counts()
  stats = HloStats(loops=loops)
  for comp, body in module.computations.items():
    t, t1 = times.get(comp, 0.0), once.get(comp, 0.0)
    if not t1:
      continue  # reductions' to_apply and other computations applied per element
    for instr in body:
      flops = module.flops(instr)
      stats.flops += t * flops
      stats.flops_once += t1 * flops
      kind = _COLLECTIVE_OPCODES.get(instr.op)
      if kind is not None:
        size = sum(shape_bytes(module.shape(o)) for o in instr.operands)
        stats.collective_ops += 1
        stats.collective_bytes_by_op[kind] = (
            stats.collective_bytes_by_op.get(kind, 0) + int(size * t))
      if comp not in fused and instr.op not in _NO_BYTES:
        moved = module.moved_bytes(instr)
        stats.bytes += t * moved
        stats.bytes_once += t1 * moved
        if breakdown is not None:
          breakdown.append((t * moved, comp, instr))
  stats.collective_bytes = sum(stats.collective_bytes_by_op.values())
  return stats


# ---------------------------------------------------------------------------
# Figures of a compiled step.


def roofline(flops: float, bytes_accessed: float, coll_bytes: float, chip: Chip,
             model_flops: float | None = None) -> dict[str, float | None]:
  """Time estimates of one step on `chip` (per-device figures in, seconds out).

  compute_s = flops / peak, memory_s = bytes / HBM bandwidth, collective_s =
  collective bytes / ICI bandwidth; step_s_estimate = their max (perfect
  overlap: a lower bound), step_s_no_overlap = compute_s + collective_s;
  mfu_estimate = model_flops / (step_s_estimate * peak).
  """
  compute_s = flops / chip.peak_flops
  memory_s = bytes_accessed / chip.hbm_bandwidth
  collective_s = coll_bytes / chip.ici_bandwidth
  step = max(compute_s, memory_s, collective_s)
  mfu = None
  if model_flops is not None and step > 0:
    mfu = model_flops / (step * chip.peak_flops)
  return dict(compute_s=compute_s, memory_s=memory_s, collective_s=collective_s,
              step_s_estimate=step, step_s_no_overlap=compute_s + collective_s,
              mfu_estimate=mfu)


_SIZE = r"([0-9.]+)\s*([KMGTP]?)i?B?"
# libtpu 0.0.42's out-of-memory errors, e.g. "RESOURCE_EXHAUSTED: Ran out of memory on
# HBM, the total memory required for HLO temporaries (59.62G) exceeds available HBM
# (15.75G)." and (other XLA TPU versions) "Used 120.5G of 95.74G hbm. Exceeded hbm
# capacity by 24.8G." Sizes are binary (G = GiB).
_REQUIRED_RE = re.compile(r"required for [^(]*\(" + _SIZE + r"\)\s*exceeds available HBM\s*\("
                          + _SIZE + r"\)", re.IGNORECASE)
_USED_RE = re.compile(r"Used\s+" + _SIZE + r"\s+of\s+" + _SIZE + r"\s+hbm", re.IGNORECASE)
_EXCEEDED_RE = re.compile(r"Exceeded hbm capacity by\s+" + _SIZE, re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4, "P": 1024 ** 5}
_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "exceeds available hbm",
                "exceeded hbm capacity")


def _size(number: str, unit: str) -> int:
  return int(float(number) * _UNITS[unit.upper()])


def is_out_of_memory(message: str) -> bool:
  return any(k.lower() in message.lower() for k in _OOM_MARKERS)


def parse_oom(message: str) -> dict[str, int]:
  """Memory figures of libtpu's out-of-memory error, as found: `oom_required_bytes` and
  `hbm_available_bytes` ("required for HLO temporaries (X) exceeds available HBM (Y)"),
  or `peak_bytes`, `hbm_available_bytes` and `exceeded_by_bytes` ("Used X of Y hbm.
  Exceeded hbm capacity by Z")."""
  out: dict[str, int] = {}
  m = _REQUIRED_RE.search(message)
  if m:
    out["oom_required_bytes"] = _size(m[1], m[2])
    out["hbm_available_bytes"] = _size(m[3], m[4])
  m = _USED_RE.search(message)
  if m:
    out["peak_bytes"] = _size(m[1], m[2])
    out["hbm_available_bytes"] = _size(m[3], m[4])
  m = _EXCEEDED_RE.search(message)
  if m:
    out["exceeded_by_bytes"] = _size(m[1], m[2])
  return out


def one_line(message: str, limit: int = 400) -> str:
  """The first informative line of an error message, at most `limit` characters."""
  lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
  text = next((ln for ln in lines if is_out_of_memory(ln)), lines[0] if lines else "")
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per device program
    cost = cost[0] if cost else {}
  return dict(cost or {})


def loop_corrected(xla_flops: float, xla_bytes: float, st: HloStats) -> tuple[float, float]:
  """XLA's (FLOPs, bytes accessed) with every loop body counted its trip count times.

  XLA's HloCostAnalysis counts a while body once (nn.scan over 28 layers is
  one body, and so is each of XLA's windowed-einsum loops). Added here: what
  the repetitions add by `hlo_stats`' count (whose FLOPs match XLA's within
  about 1% and whose bytes within about 25%, short of the TPU's tile padding).
  """
  return (xla_flops + max(st.flops - st.flops_once, 0.0),
          xla_bytes + max(st.bytes - st.bytes_once, 0.0))


def analyze(compiled, chip: Chip, model_flops: float | None = None,
            hlo_dump: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Per-device memory, cost, collectives and roofline of a compiled step."""
  mem = compiled.memory_analysis()
  out: dict[str, Any] = {}
  if mem is not None:
    out.update(argument_bytes=int(mem.argument_size_in_bytes),
               output_bytes=int(mem.output_size_in_bytes),
               temp_bytes=int(mem.temp_size_in_bytes),
               alias_bytes=int(mem.alias_size_in_bytes))
    out["peak_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                         + out["temp_bytes"])
  out["hbm_bytes"] = chip.hbm_bytes
  out["fits"] = bool(out.get("peak_bytes", 0) <= chip.hbm_bytes)
  cost = _cost(compiled)
  xla_flops = float(cost.get("flops", 0.0))
  xla_bytes = float(cost.get("bytes accessed", 0.0))
  text = compiled.as_text()
  if hlo_dump is not None:
    hlo_dump(text)
  st = hlo_stats(text)
  flops, accessed = loop_corrected(xla_flops, xla_bytes, st)
  trips = collections.Counter("unknown" if t is None else str(t) for t in st.loops)
  out.update(flops_per_device=flops, bytes_accessed_per_device=accessed,
             xla_flops_per_device=xla_flops, xla_bytes_accessed_per_device=xla_bytes,
             loop_trip_counts=dict(sorted(trips.items())),
             collective_bytes=st.collective_bytes,
             collective_bytes_by_op=st.collective_bytes_by_op, collective_ops=st.collective_ops)
  out.update(roofline(flops, accessed, st.collective_bytes, chip, model_flops))
  if model_flops is None:
    out.pop("mfu_estimate")
  else:
    out["model_flops_per_device"] = model_flops
  return out


def _itemsize(dtype) -> int:
  try:
    return int(jnp.dtype(dtype).itemsize)
  except TypeError:  # extended dtypes (PRNG keys): their data is uint32[2]
    return 8


def device_bytes(args: Any) -> int:
  """Bytes of one device's shards of ShapeDtypeStructs that carry shardings."""
  total = 0
  for a in jax.tree.leaves(args):
    shape = a.sharding.shard_shape(a.shape) if a.sharding is not None else a.shape
    total += math.prod(shape) * _itemsize(a.dtype)
  return int(total)


def _writer(path: str | None) -> Callable[[str], None] | None:
  if not path:
    return None

  def write(text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)

  return write


def compile_step(lower_fn, chip: Chip, model_flops: float | None = None,
                 args: Any = None, hlo_path: str | None = None) -> dict[str, Any]:
  """Lowers (`lower_fn() -> Lowered`) and compiles a step: its figures (`analyze`).

  When the compile runs out of HBM: `fits` false, `error`, the figures of
  libtpu's message (`parse_oom`), `argument_bytes` of `args` (the step's
  abstract arguments, per device) and `peak_bytes` (libtpu's, else the larger
  of the arguments and what libtpu said it required: a lower bound, and
  `peak_is_lower_bound` true). Other compile errors propagate. `hlo_path`: where
  to write the compiled HLO text.
  """
  start = time.perf_counter()
  lowered = lower_fn()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError and friends
    message = str(e)
    if not is_out_of_memory(message):
      raise
    out: dict[str, Any] = {}
    if args is not None:
      out["argument_bytes"] = device_bytes(args)
    out.update(parse_oom(message))
    if "peak_bytes" not in out:
      out["peak_bytes"] = max(out.get("argument_bytes", 0), out.get("oom_required_bytes", 0))
      out["peak_is_lower_bound"] = True
    out.update(hbm_bytes=chip.hbm_bytes, fits=False,
               compile_s=round(time.perf_counter() - start, 2),
               error="out of HBM: " + one_line(message))
    return out
  out = analyze(compiled, chip, model_flops, _writer(hlo_path))
  out["compile_s"] = round(time.perf_counter() - start, 2)
  if not out["fits"]:
    out["error"] = (f"out of HBM: peak {out['peak_bytes'] / GIB:.2f} GiB per device > "
                    f"{chip.hbm_bytes / GIB:.2f} GiB of a {chip.name}")
  return out


# ---------------------------------------------------------------------------
# Tasks and their abstract inputs.


TASKS = ("vae", "dit", "captioner")


def make_task(config):
  """The trainer's Task of `config.task` (as vidgen.train), without checkpoints or files.

  The vocabulary is `config.text.vocab_size` (what the tokenizer is trained to).
  """
  vocab = int(config.text.vocab_size)
  if config.task == "vae":
    from vidgen.trainers import vae  # pylint: disable=g-import-not-at-top
    return vae.make_task(config)
  if config.task == "dit":
    from vidgen.trainers import dit  # pylint: disable=g-import-not-at-top
    return dit.make_task(config, for_inference=True, vocab_size=vocab)
  if config.task == "captioner":
    from vidgen.trainers import captioner  # pylint: disable=g-import-not-at-top
    return captioner.make_task(config, for_inference=True, vocab_size=vocab)
  raise ValueError(f"config.task={config.task!r}: vidgen.aot compiles {', '.join(TASKS)}")


def largest_bucket(config):
  """The `data.buckets` entry with the most pixels per step (batch x T x H x W)."""
  from vidgen.data import buckets as buckets_lib  # pylint: disable=g-import-not-at-top
  return max(buckets_lib.parse_buckets(config.data.buckets),
             key=lambda b: b.batch_size * math.prod(b.shape))


def _latent_shape(config, shape: tuple[int, int, int]) -> tuple[int, int, int, int]:
  from vidgen.models import vae as vae_lib  # pylint: disable=g-import-not-at-top
  return vae_lib.latent_shape(config.vae, shape)


def example_batch(config, keys: Sequence[str]) -> dict[str, jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs of the global batch of the largest bucket, for the task's `keys`."""
  b = largest_bucket(config)
  n, lt = b.batch_size, int(config.text.max_len)
  shapes = {"video": ((n, *b.shape, 3), jnp.uint8),
            "tokens": ((n, lt), jnp.int32),
            "token_mask": ((n, lt), jnp.bool_)}
  if any(k in keys for k in ("mean", "logvar")):
    latent = _latent_shape(config, b.shape)
    shapes["mean"] = shapes["logvar"] = ((n, *latent), jnp.float32)
  missing = [k for k in keys if k not in shapes]
  if missing:
    raise ValueError(f"vidgen.aot does not know the shape of batch keys {missing}")
  return {k: jax.ShapeDtypeStruct(*shapes[k]) for k in keys}


def batch_shards(mesh, rules) -> int:
  """Devices the batch axis splits over (the data-parallel shards)."""
  from vidgen.parallel import axes  # pylint: disable=g-import-not-at-top
  return mesh_lib.axis_size(mesh, nn.logical_to_mesh_axes((axes.BATCH,), rules)[0])


def _with_sharding(x: jax.ShapeDtypeStruct, sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def _abstract_key(mesh) -> jax.ShapeDtypeStruct:
  key = jax.eval_shape(lambda: jax.random.key(0))
  return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=mesh_lib.replicated(mesh))


def _count(tree: Any) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------
# The DiT: analytic FLOPs and the sampler step.


def dit_models(config):
  from vidgen.trainers import dit  # pylint: disable=g-import-not-at-top
  return dit.Models.from_config(config, int(config.text.vocab_size))


def dit_flops(config, batch: int) -> dict[str, Any]:
  """vidgen.bench.flops.config_flops of the largest bucket's latents for `batch` clips."""
  from vidgen.bench import flops as flops_lib  # pylint: disable=g-import-not-at-top
  latent = _latent_shape(config, largest_bucket(config).shape)
  return flops_lib.config_flops(config, latent[:3], batch)


def sample_step_fn(config, models):
  """One sampler step (a guided model evaluation and the update), as Generator.latents runs it.

  (dit params, x (B, T', H', W', C), text (B, Lt, Dt), text mask (B, Lt),
  null text, null mask) -> x after one step of `diffusion.sample.sampler`
  (`samplers.sample` with steps=1: the time grid 1 -> 0, one model
  evaluation for every sampler) with guidance `diffusion.sample.cfg`.
  """
  from vidgen.diffusion import samplers  # pylint: disable=g-import-not-at-top
  from vidgen.trainers import dit  # pylint: disable=g-import-not-at-top
  generator = dit.Generator.from_config(config, models)

  def step(dit_params, x, text, tmask, null_text, null_mask):
    def model_fn(x_t, t_frames, cond):
      emb, mask = (text, tmask) if cond else (null_text, null_mask)
      return models.dit.apply({"params": dit_params}, x_t, t_frames, emb, mask, None)

    fn = samplers.guided(model_fn, generator.cfg)
    return samplers.sample(models.diffusion, fn, x, sampler=generator.sampler, steps=1,
                           shift=generator.shift)

  return step, generator


def compile_sample(config, s, chip: Chip, batch: int, hlo_path: str | None = None
                   ) -> dict[str, Any]:
  """Figures of one sampler step on `batch` clips of the largest bucket (DiT)."""
  models = dit_models(config)
  step, generator = sample_step_fn(config, models)
  mesh, rules = s.mesh, s.rules
  latent = _latent_shape(config, largest_bucket(config).shape)
  lt = int(config.text.max_len)
  tokens = jax.ShapeDtypeStruct((batch, lt), jnp.int32)
  tmask = jax.ShapeDtypeStruct((batch, lt), jnp.bool_)
  text_params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                             {"text": s.abstract.params["text"]})
  with mesh_lib.activate(mesh, rules):
    text, _ = jax.eval_shape(models.encode_text, text_params, tokens, tmask)
  shard = lambda x: _with_sharding(x, mesh_lib.batch_sharding(mesh, rules, len(x.shape)))
  x = shard(jax.ShapeDtypeStruct((batch, *latent), jnp.float32))
  text, tmask = shard(text), shard(tmask)
  args = (s.abstract.params["dit"], x, text, tmask, text, tmask)
  in_shardings = jax.tree.map(lambda a: a.sharding, args)
  # The null caption (masks.empty_caption) has the caption's shapes.
  from vidgen.trainers import loop  # pylint: disable=g-import-not-at-top
  jitted = jax.jit(step, in_shardings=in_shardings, out_shardings=x.sharding,
                   compiler_options=loop.compiler_options(config, s.mesh))
  calls = 1 if generator.cfg == 1 else 2
  forward = dit_flops(config, batch)["dit_forward_flops"]
  model_flops = calls * forward / mesh.size

  def lower():
    with mesh_lib.activate(mesh, rules):
      return jitted.lower(*args)

  out = {"batch": batch, "latents": list(latent), "sampler": generator.sampler,
         "cfg": generator.cfg, "model_calls": calls}
  out.update(compile_step(lower, chip, model_flops, args, hlo_path))
  return out


# ---------------------------------------------------------------------------
# The report.


class UsageProblem(ValueError):
  """A problem with the command's inputs: reported in one line, exit status 2."""


def report(config, topology: str, sample: bool | None = None, sample_batch: int | None = None,
           config_name: str | None = None,
           hlo_dir: str | None = None) -> dict[str, Any]:
  """Compiles `config`'s train step (and, for the DiT, a sampler step) for `topology`.

  Returns the JSON line's dict; `fits` false with `error` when a step does not
  fit. Raises UsageProblem for inputs that cannot be compiled at all.
  `hlo_dir`: writes the compiled HLO text there (train_step.hlo.txt,
  sample_step.hlo.txt).
  """
  if not libtpu_installed():
    raise UsageProblem(TPU_EXTRA_MESSAGE)
  if config.task not in TASKS:
    raise UsageProblem(f"config.task={config.task!r}: vidgen.aot compiles {', '.join(TASKS)}")
  if sample and config.task != "dit":
    raise UsageProblem(f"--sample: the sampler step is the DiT's, config.task={config.task!r}")
  sample = config.task == "dit" if sample is None else sample
  try:
    chip, topo = get_topology(topology)
  except ValueError as e:
    raise UsageProblem(str(e)) from None
  except Exception as e:  # pylint: disable=broad-except  # libtpu's own errors
    raise UsageProblem(f"--topology={topology!r}: {one_line(str(e))}") from None
  devices = topo.devices
  try:
    mesh = mesh_lib.make_mesh(config.mesh, devices=devices)
  except ValueError as e:
    raise UsageProblem(
        f"config mesh {dict(config.mesh)} does not fit --topology={topology} "
        f"({len(devices)} devices): {e}") from None
  from vidgen.trainers import loop  # pylint: disable=g-import-not-at-top
  task = make_task(config)
  s = loop.setup(config, task, mesh)  # abstract: nothing is allocated
  shards = batch_shards(mesh, task.rules)
  example = example_batch(config, task.batch_keys)
  global_batch = int(next(iter(example.values())).shape[0])
  if global_batch % shards:
    raise UsageProblem(
        f"global batch {global_batch} (data.buckets {config.data.buckets!r}) does not split "
        f"over the {shards} batch shards of mesh {dict(mesh.shape)}")

  bs = loop.batch_shardings(s, example, task.batch_keys)
  batch = {k: _with_sharding(v, bs[k]) for k, v in example.items()}
  rng = _abstract_key(mesh)
  step = loop.compile_train_step(s, task, config, example)

  def lower():
    with mesh_lib.activate(mesh, task.rules):
      return step.lower(s.abstract, batch, rng)

  line: dict[str, Any] = {
      "config": config_name, "task": config.task, "topology": topology, "chip": chip.name,
      "device_kind": devices[0].device_kind, "devices": len(devices),
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "params": _count(s.abstract.params),
      "params_by_group": {k: _count(v) for k, v in s.abstract.params.items()}
      if isinstance(s.abstract.params, Mapping) else None,
  }
  model_flops = None
  if config.task == "dit":
    f = dit_flops(config, global_batch)
    line["tokens_per_clip"] = int(f["tokens_per_clip"])
    # Model FLOPs: 3 x forward (no remat recomputation), per device.
    model_flops = (f["train_flops_per_step"] - f["recompute_flops"]) / len(devices)
  line["global_batch"] = global_batch
  line["batch_shapes"] = {k: list(v.shape) for k, v in example.items()}
  hlo = (lambda name: os.path.join(hlo_dir, name)) if hlo_dir else (lambda name: None)
  line.update(compile_step(lower, chip, model_flops, (s.abstract, batch, rng),
                           hlo("train_step.hlo.txt")))
  errors = ["train step: " + line.pop("error")] if "error" in line else []
  if sample:
    n = sample_batch or shards
    if n % shards:
      raise UsageProblem(f"--sample_batch={n} does not split over the {shards} batch shards")
    line["sample"] = compile_sample(config, s, chip, n, hlo("sample_step.hlo.txt"))
    if "error" in line["sample"]:
      errors.append("sampler step: " + line["sample"].pop("error"))
  line["fits"] = bool(line["fits"] and (not sample or line["sample"]["fits"]))
  if errors:
    line["error"] = "; ".join(errors)
  return line


def _round(line: Any) -> Any:
  if isinstance(line, float):
    return float(f"{line:.4g}") if abs(line) < 1e6 else line
  if isinstance(line, dict):
    return {k: _round(v) for k, v in line.items()}
  return line


def _define_flags() -> None:
  """The CLI's flags, defined only when run as a program (importers keep their flag names free)."""
  flags.DEFINE_string("topology", None,
                      "TPU topology, CHIP:AxB[xC] (v4:2x2x1, v5e:16x16, v5p:4x4x8, v6e:8x8); "
                      "default the config's top-level `topology` field.")
  flags.DEFINE_bool("sample", None, "Also compile one sampler step (default: on for the DiT).")
  flags.DEFINE_integer("sample_batch", None,
                       "Clips of the sampler step (default: the batch shards, data x fsdp).")
  flags.DEFINE_string("hlo_dir", None, "Also write the compiled HLO text of the steps here.")


def main(config, workdir) -> None:
  del workdir
  f = flags.FLAGS
  topology = f.topology or (config.get("topology") if isinstance(config.get("topology"), str)
                            else None)
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  name = config_flags.get_config_filename(f["config"])
  try:
    if not topology:
      raise UsageProblem("--topology is required (e.g. --topology=v5p:2x2x4), or a "
                         "top-level `topology` field in the config")
    quiet_libtpu(topology)
    line = report(config, topology, f.sample, f.sample_batch, name,
                  f.hlo_dir)
    line["overrides"] = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                         for k, v in config_flags.get_override_values(f["config"]).items()}
  except UsageProblem as e:
    print(f"vidgen.aot: {e}", file=sys.stderr, flush=True)
    sys.exit(USAGE_EXIT)
  print(json.dumps(_round(line)), flush=True)
  if not line["fits"]:
    sys.exit(DOES_NOT_FIT_EXIT)


if __name__ == "__main__":
  quiet_libtpu()
  _define_flags()
  from vidgen import app  # pylint: disable=g-import-not-at-top
  app.run(main, workdir_required=False)
