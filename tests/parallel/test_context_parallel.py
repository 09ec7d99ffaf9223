"""Context parallelism (issue 7): sharded over the `context` axis equals unsharded.

The checks run once, in a subprocess with 8 simulated devices
(tests/parallel/context_check.py); each test reads its part of the result.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidgen.models import attention, dit
from vidgen.parallel import context

CHECK = os.path.join(os.path.dirname(__file__), "context_check.py")
MESHES = ["context8", "fsdp2,context4", "data2,fsdp2,context2", "fsdp2,tensor2,context2"]


@pytest.fixture(scope="module")
def results():
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  run = subprocess.run([sys.executable, CHECK], capture_output=True, text=True, env=env,
                       timeout=900, check=False)
  assert run.returncode == 0, run.stderr[-4000:]
  return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", context.MODES)
@pytest.mark.parametrize("mesh", MESHES)
def test_dit_outputs_and_gradients_equal_the_unsharded_model(results, mode, mesh):
  r = results[f"dit/{mode}/{mesh}"]
  assert r["out"] < 1e-5, r
  assert r["grad"] < 1e-4, r


@pytest.mark.parametrize("mesh", MESHES)
def test_each_mode_moves_data_as_it_says(results, mesh):
  """Ulysses exchanges by all-to-all; the ring passes keys on with collective permutes."""
  assert results[f"dit/ulysses/{mesh}"]["all_to_all"] > 0
  assert results[f"dit/ring/{mesh}"]["collective_permute"] > 0
  if mesh == "context8":  # nothing else is sharded: each mode's own collective only
    assert results["dit/ulysses/context8"]["collective_permute"] == 0
    assert results["dit/ring/context8"]["all_to_all"] == 0


def test_ring_names_frames_it_cannot_split(results):
  error = results["dit/ring/indivisible"]["error"]
  assert "6 patch frames" in error and "context=4" in error and "ulysses" in error


def test_packed_layout_sharded_over_context(results):
  assert results["dit/packed/fsdp2,context4"]["out"] < 1e-5


def test_ring_query_without_visible_keys_averages_all_keys(results):
  r = results["ring/no_visible_keys"]
  assert r["out"] < 1e-5 and r["uniform"] < 1e-5


def test_vae_chunked_encode_and_decode_shard_over_time(results):
  r = results["vae/data2,context4"]
  assert r["encode"] < 1e-5 and r["decode"] < 1e-5
  assert r["collective_permute"] > 0  # halo frames of the causal convolutions


def test_without_a_mesh_ring_is_plain_attention():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 2, 5, 2, 4)), jnp.float32) for _ in range(3))
  index = jnp.asarray([[0, 1, 4, 5, 9]], jnp.int32)
  known = jnp.asarray([[True, False, False, True, False]])
  visible = lambda qi, ki, kk: dit.temporal_visible(qi, ki, kk, causal=True)
  mask = visible(index[:, :, None], index[:, None, :], known[:, None, :])
  np.testing.assert_allclose(
      context.ring(q, k, v, index, index, known, visible, None),
      attention.dot_product_attention(q, k, v, mask[:, None, None]), atol=1e-6)
  assert context.context_size() == 1


def test_unknown_mode_is_rejected():
  model = dit.VideoDiT(channels=4, context_attention="stripes")
  with pytest.raises(ValueError, match="ulysses, ring"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 2, 4, 4, 4)),
                                      jnp.ones((1, 2)), jnp.zeros((1, 3, 8)),
                                      jnp.ones((1, 3), bool)))
