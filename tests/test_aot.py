"""vidgen.aot: compiling train and sampler steps for TPU topologies on this CPU host.

The compile tests need libtpu (`pip install -e '.[tpu]'`) and are skipped
without it; they run `python -m vidgen.aot` in a subprocess on tiny configs
(the scaling DiT's smoke sizes), a compile of seconds each. The HLO parser,
the out-of-memory parser, the roofline arithmetic and the fit logic are
tested on hand-written inputs and need nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vidgen import aot
from vidgen import configlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(
    not HAVE_LIBTPU, reason="libtpu not installed: pip install -e '.[tpu]' (vidgen.aot)")

SMOKE = "configs/scaling/dit.py:smoke=True"
# 4 v4 chips as data 2 x fsdp 2; the smoke batch (2) made 4 so it splits over both.
SMOKE_ARGS = ("--topology=v4:2x2x1", "--config.mesh.data=2", "--config.mesh.fsdp=2",
              "--config.data.buckets=5x32x32:4")
STEP_FIELDS = ("argument_bytes", "output_bytes", "temp_bytes", "alias_bytes", "peak_bytes",
               "hbm_bytes", "fits", "flops_per_device", "bytes_accessed_per_device",
               "xla_flops_per_device", "xla_bytes_accessed_per_device", "loop_trip_counts",
               "collective_bytes", "collective_bytes_by_op", "collective_ops", "compute_s",
               "memory_s", "collective_s", "step_s_estimate", "step_s_no_overlap",
               "model_flops_per_device", "mfu_estimate", "compile_s")
LINE_FIELDS = ("config", "task", "topology", "chip", "device_kind", "devices", "mesh", "params",
               "params_by_group", "tokens_per_clip", "global_batch", "batch_shapes",
               "sample", "overrides") + STEP_FIELDS


def run_aot(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "vidgen.aot", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def json_line(proc: subprocess.CompletedProcess) -> dict:
  lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
  assert len(lines) == 1, (proc.stdout, proc.stderr[-3000:])
  return json.loads(lines[0])


# ---------------------------------------------------------------------------
# Compiles (libtpu).


@needs_libtpu
def test_smoke_dit_compiles_for_v4():
  proc = run_aot(f"--config={SMOKE}", *SMOKE_ARGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  line = json_line(proc)
  missing = [k for k in LINE_FIELDS if k not in line]
  assert not missing, missing
  assert line["config"] == SMOKE and line["task"] == "dit"
  assert line["topology"] == "v4:2x2x1" and line["chip"] == "v4"
  assert line["device_kind"] == "TPU v4" and line["devices"] == 4
  assert line["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1, "context": 1}
  assert line["global_batch"] == 4 and line["batch_shapes"]["video"] == [4, 5, 32, 32, 3]
  assert line["tokens_per_clip"] == 8  # 2x4x4 latents in 1x2x2 patches: 2 x 2 x 2
  assert line["params"] == sum(line["params_by_group"].values()) > 0
  assert line["fits"] is True and "error" not in line
  assert line["flops_per_device"] > 0 and line["peak_bytes"] > 0
  assert line["peak_bytes"] == (line["argument_bytes"] + line["output_bytes"]
                                - line["alias_bytes"] + line["temp_bytes"])
  assert line["hbm_bytes"] == 32 * 2 ** 30
  assert 0 < line["mfu_estimate"] < 1
  assert line["collective_bytes"] > 0  # fsdp gathers weights, data reduces gradients
  assert line["step_s_estimate"] == max(line["compute_s"], line["memory_s"],
                                        line["collective_s"])
  assert line["overrides"]["mesh.fsdp"] == 2
  sample = line["sample"]
  assert sample["batch"] == 4  # default: the batch shards, data x fsdp
  assert sample["model_calls"] == 2  # classifier-free guidance: with and without the caption
  assert sample["fits"] is True and sample["flops_per_device"] > 0
  assert 0 < sample["mfu_estimate"] < 1
  # One sampler step does less work than a training step on the same clips.
  assert sample["flops_per_device"] < line["flops_per_device"]


@needs_libtpu
@pytest.mark.parametrize("config, task", [("configs/shapes/vae.py:smoke=True", "vae"),
                                          ("configs/shapes/captioner.py:smoke=True",
                                           "captioner")])
def test_other_tasks_compile_their_train_step(config, task):
  proc = run_aot(f"--config={config}", "--topology=v4:2x2x1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = json_line(proc)
  assert line["task"] == task and line["fits"] is True and "sample" not in line
  assert line["mesh"]["data"] == 4 and line["global_batch"] % 4 == 0
  assert line["flops_per_device"] > 0 and line["peak_bytes"] > 0
  assert "mfu_estimate" not in line  # analytic model FLOPs are the DiT's only
  proc = run_aot(f"--config={config}", "--topology=v4:2x2x1", "--sample")
  assert proc.returncode == 2 and "sampler step is the DiT's" in proc.stderr


@needs_libtpu
def test_config_that_does_not_fit_exits_1_with_the_figures():
  """A 50M-token vocabulary: 6.4 G text-encoder parameters on a 16 GiB v5e chip."""
  proc = run_aot(f"--config={SMOKE}", "--topology=v5e:2x2", "--config.mesh.data=2",
                 "--config.mesh.fsdp=2", "--config.data.buckets=5x32x32:4",
                 "--config.text.vocab_size=50000000", "--config.dit.latents=/cached",
                 "--nosample")
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  line = json_line(proc)
  assert line["fits"] is False
  assert line["error"].startswith("train step: out of HBM")
  assert "\n" not in line["error"]
  assert line["argument_bytes"] > 16 * 2 ** 30 / 4  # the parameters alone, per device
  assert line["peak_bytes"] > line["hbm_bytes"] == 16 * 2 ** 30
  assert line["oom_required_bytes"] > 0 and line["hbm_available_bytes"] > 0
  assert line["batch_shapes"]["mean"] == [4, 2, 4, 4, 4]  # cached latents: no VAE encode


@needs_libtpu
def test_mesh_that_does_not_match_the_topology_fails_clearly():
  proc = run_aot(f"--config={SMOKE}", "--topology=v4:2x2x1", "--config.mesh.data=3")
  assert proc.returncode == 2
  assert proc.stdout.strip() == ""
  assert "Traceback" not in proc.stderr
  message = proc.stderr.strip().splitlines()[-1]
  assert message.startswith("vidgen.aot: config mesh")
  assert "v4:2x2x1" in message and "4 devices" in message and "'data': 3" in message


@needs_libtpu
def test_topology_is_required_and_checked():
  proc = run_aot(f"--config={SMOKE}")
  assert proc.returncode == 2 and "--topology is required" in proc.stderr
  proc = run_aot(f"--config={SMOKE}", "--topology=v9:2x2")
  assert proc.returncode == 2 and "v5p" in proc.stderr.splitlines()[-1]
  assert "Traceback" not in proc.stderr


def test_no_libtpu_is_a_clear_message(monkeypatch):
  monkeypatch.setattr(aot, "libtpu_installed", lambda: False)
  config = configlib.load(SMOKE)
  with pytest.raises(aot.UsageProblem, match=r"pip install -e '\.\[tpu\]'"):
    aot.report(config, "v4:2x2x1")


# ---------------------------------------------------------------------------
# Building blocks.


@needs_libtpu
def test_setup_shardings_replicate_what_the_mesh_does_not_divide():
  """loop.setup on 4 compile-only v4 devices, fsdp 4: abstract state; the VAE decoder's
  output conv, 6 channels on `conv_out` -> fsdp with 3 latent channels, is replicated."""
  from vidgen.parallel import mesh as mesh_lib
  from vidgen.trainers import loop
  config = configlib.load(SMOKE, {"mesh.data": 1, "mesh.fsdp": 4, "vae.latent_channels": 3})
  task = aot.make_task(config)
  _, topo = aot.get_topology("v4:2x2x1")
  mesh = mesh_lib.make_mesh(config.mesh, devices=topo.devices)
  s = loop.setup(config, task, mesh)
  for a in jax.tree.leaves(s.abstract):
    for size, axis in zip(a.shape, a.sharding.spec):
      assert size % mesh_lib.axis_size(mesh, axis) == 0
  conv_out = s.abstract.params["vae"]["encoder"]["conv_out"]
  assert conv_out["bias"].shape == (6,) and conv_out["bias"].sharding.spec == P(None)
  assert any("fsdp" in str(a.sharding.spec) for a in jax.tree.leaves(s.abstract.params["dit"]))


def test_tasks_build_without_files():
  """The DiT's vocabulary comes from config.text.vocab_size: no tokenizer, no VAE checkpoint."""
  config = configlib.load(SMOKE, {"text.tokenizer": "/nonexistent/tokenizer.model"})
  task = aot.make_task(config)
  assert task.name == "dit" and task.batch_keys == ("video", "tokens", "token_mask")
  params = jax.eval_shape(task.init, jax.random.key(0))
  embed = params["text"]["embed"]["embedding"]
  assert np.shape(embed.value if hasattr(embed, "value") else embed)[0] == 512


def test_parse_topology_and_chips():
  chip, dims = aot.parse_topology("v5p:2x2x4")
  assert chip.name == "v5p" and dims == (2, 2, 4) and chip.megacore
  assert aot.parse_topology("v5litepod:16x16")[0].name == "v5e"
  assert aot._accelerator_type(chip, dims) == "v5p-32"
  assert aot._accelerator_type(*aot.parse_topology("v5e:4x4")) == "v5litepod-16"
  for bad in ("v5p", "v9:2x2", "v5p:2xx2", ""):
    with pytest.raises(ValueError, match="expected CHIP"):
      aot.parse_topology(bad)
  assert aot.chip_for_kind("TPU v5 lite").name == "v5e"
  assert aot.chip_for_kind("TPU v5").name == "v5p"
  assert aot.chip_for_kind("TPU v6 lite").name == "v6e"
  assert aot.chip_for_kind("TPU v4").name == "v4"
  assert aot.CHIPS["v5p"].peak_flops == 459e12
  assert aot.CHIPS["v5p"].ici_bandwidth == 4800e9 / 8  # 4800 Gbps in bytes/s
  assert aot.CHIPS["v5e"].hbm_bytes == 16 * 2 ** 30


# ---------------------------------------------------------------------------
# The HLO parser.

HLO = """\
HloModule jit_step, entry_computation_layout={(f32[8,16]{1,0})->f32[8,16]{1,0}}

%add.1 (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%fused_dot (p0: f32[8,16], p1: f32[16,16]) -> f32[8,16] {
  %p0 = f32[8,16]{1,0} parameter(0)
  %p1 = f32[16,16]{1,0} parameter(1)
  ROOT %conv = f32[8,16]{1,0} convolution(%p0, %p1), dim_labels=bf_io->bf
}

%body (state: (s32[], f32[8,16], f32[4,16,16])) -> (s32[], f32[8,16], f32[4,16,16]) {
  %state = (s32[], f32[8,16]{1,0}, f32[4,16,16]{2,1,0}) parameter(0)
  %i = s32[] get-tuple-element(%state), index=0
  %h = f32[8,16]{1,0} get-tuple-element(%state), index=1
  %ws = f32[4,16,16]{2,1,0} get-tuple-element(%state), index=2
  %zero = s32[] constant(0)
  %w3 = f32[1,16,16]{2,1,0} dynamic-slice(%ws, %i, %zero, %zero), dynamic_slice_sizes={1,16,16}
  %w = f32[16,16]{1,0} bitcast(%w3)
  %ag = f32[16,16]{1,0} all-gather(%w), channel_id=1, replica_groups={{0,1}}, dimensions={0}
  %hw = f32[8,16]{1,0} fusion(%h, %ag), kind=kOutput, calls=%fused_dot
  %one = s32[] constant(1)
  %next = s32[] add(%i, %one)
  ROOT %out = (s32[], f32[8,16]{1,0}, f32[4,16,16]{2,1,0}) tuple(%next, %hw, %ws)
}

%cond (state.1: (s32[], f32[8,16], f32[4,16,16])) -> pred[] {
  %state.1 = (s32[], f32[8,16]{1,0}, f32[4,16,16]{2,1,0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%state.1), index=0
  %n = s32[] constant(4)
  ROOT %lt = pred[] compare(%i.1, %n), direction=LT
}

ENTRY %main (a: f32[8,16], ws.1: f32[4,16,16]) -> f32[8,16] {
  %a = f32[8,16]{1,0} parameter(0)
  %ws.1 = f32[4,16,16]{2,1,0} parameter(1)
  %start = s32[] constant(0)
  %init = (s32[], f32[8,16]{1,0}, f32[4,16,16]{2,1,0}) tuple(%start, %a, %ws.1)
  %loop = (s32[], f32[8,16]{1,0}, f32[4,16,16]{2,1,0}) while(%init), condition=%cond, body=%body
  %res = f32[8,16]{1,0} get-tuple-element(%loop), index=1
  %ar = f32[8,16]{1,0} all-reduce(%res), channel_id=2, replica_groups={{0,1}}, to_apply=%add.1
  %cp = (bf16[4,16]{1,0}, bf16[4,16]{1,0}, u32[], u32[]) collective-permute-start(%bf), channel_id=3, source_target_pairs={{0,1},{1,0}}
  %bf = bf16[4,16]{1,0} parameter(2)
  %cpd = bf16[4,16]{1,0} collective-permute-done(%cp)
  ROOT %r = f32[8,16]{1,0} multiply(%ar, %ar)
}
"""


def test_hlo_collectives_count_every_loop_iteration():
  st = aot.hlo_stats(HLO)
  assert st.loops == [4] and st.unknown_trip_counts == 0
  # all-gather of a f32[16,16] shard, 4 times; all-reduce of f32[8,16] once; the
  # permute's bf16[4,16] operand once (its -done is not counted again).
  assert st.collective_bytes_by_op == {"all-gather": 4 * 16 * 16 * 4,
                                       "all-reduce": 8 * 16 * 4, "collective-permute": 4 * 16 * 2}
  assert st.collective_bytes == sum(st.collective_bytes_by_op.values())
  assert st.collective_ops == 3


def test_hlo_flops_follow_xla_and_the_trip_count():
  st = aot.hlo_stats(HLO)
  matmul = 2 * 8 * 16 * 16  # f32[8,16] x f32[16,16] as a 1x1 convolution
  # Per iteration: the matmul and the counter add; outside: the final multiply. (The
  # all-reduce's to_apply runs per element and is not a program computation.)
  assert st.flops_once == matmul + 1 + 8 * 16
  assert st.flops == 4 * (matmul + 1) + 8 * 16
  # Bytes: the dynamic-slice reads and writes its slice; the fusion reads h and the
  # gathered w and writes its result; every iteration.
  per_iteration = 2 * (16 * 16 * 4) + (8 * 16 * 4 + 16 * 16 * 4 + 8 * 16 * 4) + 16 * 16 * 4 * 2
  assert st.bytes - st.bytes_once == 3 * (per_iteration + 4 * 3)


def test_trip_count_from_known_trip_count_and_steps():
  text = HLO.replace("body=%body", 'body=%body, backend_config={"known_trip_count":{"n":"7"}}')
  assert aot.hlo_stats(text).loops == [7]
  # A body that steps its counter by 2 (XLA's unrolled windowed einsum loops).
  text = HLO.replace("%one = s32[] constant(1)", "%one = s32[] constant(2)")
  assert aot.hlo_stats(text).loops == [2]
  # A bound the parser cannot read: counted once and reported.
  text = HLO.replace("ROOT %lt = pred[] compare(%i.1, %n), direction=LT",
                     "ROOT %lt = pred[] compare(%n, %i.1), direction=GT")
  st = aot.hlo_stats(text)
  assert st.loops == [None] and st.unknown_trip_counts == 1
  assert st.collective_bytes_by_op["all-gather"] == 16 * 16 * 4


def test_typed_operands_and_shape_bytes():
  assert aot.shape_bytes("bf16[8,128]{1,0:T(8,128)(2,1)}") == 8 * 128 * 2
  assert aot.shape_bytes("(f32[2]{0}, /*index=1*/s32[], pred[3])") == 8 + 4 + 3
  assert aot.shape_bytes("f32[]") == 4 and aot.shape_bytes("") == 0
  text = "%x = f32[4]{0} parameter(0)\n%y = f32[8]{0} all-gather(f32[4]{0} %x), dimensions={0}\n"
  assert aot.hlo_stats(text).collective_bytes == 16


def test_conv_flops_count_valid_positions_like_xla():
  # A 1D convolution, 10 positions, kernel 3, padding 1: 28 valid (position, tap) pairs.
  attrs = ", window={size=3 pad=1_1}, dim_labels=b0f_0io->b0f"
  assert aot.conv_flops("f32[2,10,8]", "f32[2,10,4]", "f32[3,4,8]", attrs) == 2 * 2 * 4 * 8 * 28
  assert aot.dot_flops("f32[8,32]", "f32[8,16]", ", lhs_contracting_dims={1}") == 2 * 8 * 32 * 16


# ---------------------------------------------------------------------------
# Roofline, memory figures, out-of-memory messages.

CHIP = aot.Chip("test", ("TPU test",), peak_flops=100e12, hbm_bytes=16 * 2 ** 30,
                hbm_bandwidth=1e12, ici_bandwidth=100e9)


def test_roofline_arithmetic():
  r = aot.roofline(flops=50e12, bytes_accessed=200e9, coll_bytes=30e9, chip=CHIP,
                   model_flops=40e12)
  assert r["compute_s"] == pytest.approx(0.5)
  assert r["memory_s"] == pytest.approx(0.2)
  assert r["collective_s"] == pytest.approx(0.3)
  assert r["step_s_estimate"] == pytest.approx(0.5)  # perfect overlap: the slowest
  assert r["step_s_no_overlap"] == pytest.approx(0.8)  # compute then communication
  assert r["mfu_estimate"] == pytest.approx(40e12 / (0.5 * 100e12))
  r = aot.roofline(1e12, 1e12, 0, CHIP)
  assert r["step_s_estimate"] == pytest.approx(1.0) and r["mfu_estimate"] is None
  st = aot.HloStats(flops=10.0, flops_once=4.0, bytes=30.0, bytes_once=10.0)
  assert aot.loop_corrected(100.0, 1000.0, st) == (106.0, 1020.0)


class FakeCompiled:
  def __init__(self, temp_bytes: int):
    self.temp = temp_bytes

  def memory_analysis(self):
    return SimpleNamespace(argument_size_in_bytes=1000, output_size_in_bytes=900,
                           alias_size_in_bytes=800, temp_size_in_bytes=self.temp)

  def cost_analysis(self):
    return {"flops": 2e12, "bytes accessed": 1e9}

  def as_text(self):
    return HLO


class FakeLowered:
  def __init__(self, result=None, error: str | None = None):
    self.result, self.error = result, error

  def compile(self):
    if self.error:
      raise RuntimeError(self.error)
    return self.result


def test_fit_and_peak_from_memory_analysis():
  out = aot.compile_step(lambda: FakeLowered(FakeCompiled(5000)), CHIP, model_flops=1e12)
  assert out["peak_bytes"] == 1000 + 900 - 800 + 5000 and out["fits"] and "error" not in out
  assert out["flops_per_device"] == 2e12 + 3 * (2 * 8 * 16 * 16 + 1)  # loop-corrected
  out = aot.compile_step(lambda: FakeLowered(FakeCompiled(17 * 2 ** 30)), CHIP)
  assert out["fits"] is False and out["error"].startswith("out of HBM: peak")
  assert "mfu_estimate" not in out


def test_out_of_memory_compile_error():
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
             "HLO temporaries (59.62G) exceeds available HBM (15.75G).\nmore details")
  args = jax.ShapeDtypeStruct((1024, 1024), np.float32)
  out = aot.compile_step(lambda: FakeLowered(error=message), CHIP, args=args)
  assert out["fits"] is False
  assert out["error"] == ("out of HBM: RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total "
                          "memory required for HLO temporaries (59.62G) exceeds available "
                          "HBM (15.75G).")
  assert out["oom_required_bytes"] == int(59.62 * 2 ** 30)
  assert out["hbm_available_bytes"] == int(15.75 * 2 ** 30)
  assert out["argument_bytes"] == 4 * 2 ** 20
  assert out["peak_bytes"] == out["oom_required_bytes"] and out["peak_is_lower_bound"]
  other = "Used 120.5G of 95.74G hbm. Exceeded hbm capacity by 24.76G."
  assert aot.parse_oom(other) == {"peak_bytes": int(120.5 * 2 ** 30),
                                  "hbm_available_bytes": int(95.74 * 2 ** 30),
                                  "exceeded_by_bytes": int(24.76 * 2 ** 30)}
  with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):  # not memory: propagates
    aot.compile_step(lambda: FakeLowered(error="INVALID_ARGUMENT: bad"), CHIP)


@needs_libtpu
def test_tpu_compiler_options_parse_and_apply_only_to_tpu_meshes():
  from vidgen.parallel import mesh as mesh_lib
  from vidgen.trainers import loop
  config = configlib.load(SMOKE, {
      "train.tpu_compiler_options": "xla_a=1000000, xla_b=true,xla_c=0.5,xla_d=fast"})
  _, topo = aot.get_topology("v4:2x2x1")
  tpu = mesh_lib.make_mesh(config.mesh, devices=topo.devices)
  cpu = mesh_lib.make_mesh(config.mesh, devices=jax.devices()[:1])
  assert loop.compiler_options(config, tpu) == {"xla_a": 1000000, "xla_b": True,
                                                "xla_c": 0.5, "xla_d": "fast"}
  assert loop.compiler_options(config, cpu) is None
  bad = configlib.load(SMOKE, {"train.tpu_compiler_options": "xla_a"})
  with pytest.raises(ValueError, match="not name=value"):
    loop.compiler_options(bad, tpu)
  # The scaling configs' own option is one libtpu knows (the smoke compiles use it).
  assert "windowed_einsum" in configlib.load(SMOKE).train.tpu_compiler_options
