"""Context-parallel runs on 8 simulated devices, against the unsharded model (one JSON line).

Run by tests/parallel/test_context_parallel.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the suite's own process
has one device). Prints {case: {"out": rel. error, "grad": rel. error, ...}}.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from vidgen import configlib
from vidgen.models import attention, dit, patches, vae as vae_lib
from vidgen.parallel import context, mesh as mesh_lib, rules

MESHES = [dict(data=1, fsdp=1, tensor=1, context=8), dict(data=1, fsdp=2, tensor=1, context=4),
          dict(data=2, fsdp=2, tensor=1, context=2), dict(data=1, fsdp=2, tensor=2, context=2)]
KW = dict(channels=4, patch=(1, 2, 2), width=32, depth=2, heads=8, max_frames=16,
          max_height=8, max_width=8, rope=True)  # rotary tables travel with sharded frames too
B, T, H, W = 4, 8, 4, 4


def rel(a, b) -> float:
  """max |a - b| / max |b| over the leaves of two trees."""
  pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
  return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30)) for x, y in pairs)


def mesh_of(sizes):
  return mesh_lib.make_mesh(configlib.ConfigDict(sizes))


def name(sizes) -> str:
  return ",".join(f"{k}{v}" for k, v in sizes.items() if v > 1)


def dit_inputs():
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(B, T, H, W, 4)), jnp.float32)
  # Known frames (time 0) at the start of every clip and in the middle of one;
  # one clip is a sparse frame set (FDM), so the frames carry their true indices.
  times = jnp.asarray(rng.uniform(0.1, 1.0, size=(B, T)), jnp.float32)
  times = times.at[:, 0].set(0.0).at[1, 5].set(0.0)
  index = np.stack([np.arange(T)] * 3 + [np.array([0, 2, 3, 7, 8, 9, 12, 15])])
  text = jnp.asarray(rng.normal(size=(B, 6, 16)), jnp.float32)
  text_mask = jnp.asarray(np.arange(6)[None] < np.array([6, 3, 1, 4])[:, None])
  return z, times, text, text_mask, jnp.asarray(index, jnp.int32)


def random_params(model, *args):
  params = nn.unbox(model.init(jax.random.key(0), *args)["params"])
  # Zero-initialised gates and projections would hide most of the block: perturb all.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return tree.unflatten([p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


def sharded_params(model, params, mesh, *args):
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *args)["params"])
  return jax.device_put(params, mesh_lib.tree_shardings(mesh, rules.TRANSFORMER,
                                                       nn.get_partition_spec(boxed)))


def check_dit(results):
  args = dit_inputs()
  ref_model = dit.VideoDiT(**KW)
  params = random_params(ref_model, *args)

  def loss(p, model, *args):
    out = model.apply({"params": p}, *args)
    return jnp.mean(out ** 2), out

  ref_grad, ref_out = jax.grad(loss, has_aux=True)(params, ref_model, *args)
  for mode in context.MODES:
    model = dit.VideoDiT(**KW, context_attention=mode)
    for sizes in MESHES:
      mesh = mesh_of(sizes)
      with mesh_lib.activate(mesh, rules.TRANSFORMER):
        p = sharded_params(model, params, mesh, *args)
        z = jax.device_put(args[0], NamedSharding(mesh, P(("data", "fsdp"), "context")))
        step = jax.jit(jax.grad(lambda p, z: loss(p, model, z, *args[1:]), has_aux=True))
        grad, out = step(p, z)
        hlo = step.lower(p, z).compile().as_text()
      results[f"dit/{mode}/{name(sizes)}"] = dict(
          out=rel(out, ref_out), grad=rel(grad, ref_grad),
          all_to_all=hlo.count("all-to-all("), collective_permute=hlo.count("collective-permute("))

  # A frame count the ring cannot split fails clearly.
  model = dit.VideoDiT(**KW, context_attention="ring")
  mesh = mesh_of(MESHES[1])
  z6 = args[0][:, :6]
  try:
    with mesh_lib.activate(mesh, rules.TRANSFORMER):
      jax.eval_shape(lambda: model.apply({"params": params}, z6, args[1][:, :6], args[2], args[3]))
    results["dit/ring/indivisible"] = dict(error="")
  except ValueError as e:
    results["dit/ring/indivisible"] = dict(error=str(e))


def check_packed(results):
  """The packed (NaViT) layout with its token axis over context (segment-masked attention)."""
  z, times, text, text_mask, _ = dit_inputs()
  model = dit.VideoDiT(**KW)
  grids = [np.asarray(patches.patchify(z[i:i + 1, :2 + 2 * i], KW["patch"])[0]) for i in range(B)]
  layout = patches.pack_layout([g.shape[:3] for g in grids], length=32, rows=4)
  packed = patches.pack(grids, layout, frame_values={
      "times": [np.asarray(times[i, :2 + 2 * i]) for i in range(B)]})
  m = layout.max_segments
  ptext = jnp.broadcast_to(text[:1, None], (4, m) + text.shape[1:])
  pmask = jnp.broadcast_to(text_mask[:1, None], (4, m, text.shape[1]))
  args = [jnp.asarray(packed[k]) for k in ("tokens", "segment", "t", "h", "w", "times")]
  args += [ptext, pmask]
  params = random_params(model, *dit_inputs()[:4])
  apply = lambda p, *a: model.apply({"params": p}, *a, method=model.packed)
  ref = apply(params, *args)
  mesh = mesh_of(dict(data=1, fsdp=2, tensor=1, context=4))
  with mesh_lib.activate(mesh, rules.TRANSFORMER):
    p = sharded_params(model, params, mesh, *dit_inputs()[:4])
    tokens = jax.device_put(args[0], NamedSharding(mesh, P(("data", "fsdp"), "context")))
    out = jax.jit(apply)(p, tokens, *args[1:])
  results["dit/packed/fsdp2,context4"] = dict(out=rel(out, ref))


def check_ring_no_visible_keys(results):
  """A query that sees no key averages all keys, across ring blocks as in one softmax."""
  rng = np.random.default_rng(2)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 3, 8, 4, 8)), jnp.float32) for _ in range(3))
  index = jnp.broadcast_to(jnp.arange(8, dtype=jnp.int32), (2, 8))
  known = jnp.zeros((2, 8), bool)
  visible = lambda qi, ki, kk: ki < qi  # strictly earlier: frame 0 sees nothing
  mask = visible(index[:, :, None], index[:, None, :], known[:, None, :])
  ref = attention.dot_product_attention(q, k, v, mask[:, None, None])
  mesh = mesh_of(dict(data=1, fsdp=2, tensor=1, context=4))
  with mesh_lib.activate(mesh, rules.TRANSFORMER):
    out = jax.jit(lambda q, k, v: context.ring(q, k, v, index, index, known, visible, None))(
        q, k, v)
  results["ring/no_visible_keys"] = dict(
      out=rel(out, ref), uniform=float(jnp.max(jnp.abs(out[:, :, 0] - v.mean(2)))))


def check_vae(results):
  cfg = configlib.vae_config()
  cfg.channels, cfg.latent_channels, cfg.groups = (8, 16, 16), 4, 4
  cfg.transformer = dict(layers=1, heads=2, window=2, mlp_ratio=2.0)
  model = vae_lib.vae_from_config(cfg)
  params = nn.unbox(vae_lib.init_params(model, jax.random.key(0)))
  video = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (2, 33, 32, 32, 3)), jnp.float32)
  mean, _ = vae_lib.encode_chunked(model, params, video, 4)
  decoded = vae_lib.decode_chunked(model, params, mean, 4)
  mesh = mesh_of(dict(data=2, fsdp=1, tensor=1, context=4))
  mean_s, _ = vae_lib.encode_chunked(model, params, video, 4, mesh=mesh)
  decoded_s = vae_lib.decode_chunked(model, params, mean, 4, mesh=mesh)
  with mesh_lib.activate(mesh, rules.VAE):
    hlo = vae_lib.encode_step.lower(model, params, video[:, :13], None).compile().as_text()
  results["vae/data2,context4"] = dict(
      encode=rel(mean_s, mean), decode=rel(decoded_s, decoded),
      collective_permute=hlo.count("collective-permute("))


if __name__ == "__main__":
  assert jax.device_count() == 8, "run with --xla_force_host_platform_device_count=8"
  out = {}
  for check in (check_dit, check_packed, check_ring_no_visible_keys, check_vae):
    check(out)
  print(json.dumps(out))
