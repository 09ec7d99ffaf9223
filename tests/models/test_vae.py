"""The causal video VAE: shapes, causality, chunking, the 3D conv, image path, metadata,
latent noise.

Compiling is what costs here (seconds a program on a shared 2-core CPU), so
tests share a few jitted programs: one batch of four clips (a base clip and
three edited copies) serves the causality, chunking and image tests; shapes,
errors and metadata come from `jax.eval_shape` without compiling anything.
Params are random arrays of the shapes `init_params` gives (compiling the
RNG-heavy init costs 10+ s); one test runs the real `init_params`.
"""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vidgen import configlib
from vidgen.models import layers
from vidgen.models import vae as vae_lib
from vidgen.parallel import axes

TINY = dict(latent_channels=4, channels=(8, 16, 16), groups=4, transformer_layers=1,
            transformer_heads=2, transformer_window=2, transformer_mlp_ratio=2.0)
T, HW = 17, 16  # 5 latent frames of 2x2
EDIT_FRAMES = (4, 5, 16)  # encoder causality: edited pixel frames (batch rows 1..3)
EDIT_LATENTS = (1, 2, 4)  # decoder causality: edited latent frames (batch rows 1..3)


def fast_jit(f):
  """jax.jit at XLA backend optimisation level 0: test programs are tiny, compiling is the cost."""
  return jax.jit(f, compiler_options={"xla_backend_optimization_level": 0})


def is_box(x):
  return isinstance(x, nn.LogicallyPartitioned)


def random_params(model, seed=0, shape=None):
  """Boxed params shaped like `init_params`, filled with scaled numpy noise (no compile)."""
  abstract = jax.eval_shape(lambda: vae_lib.init_params(model, jax.random.key(0), shape))
  rng = np.random.default_rng(seed)

  def fill(box):
    shape, dtype = box.value.shape, box.value.dtype
    if len(shape) >= 2:  # kernels: variance 1 / fan-in
      value = rng.normal(size=shape) / math.sqrt(math.prod(shape[:-1]))
    else:  # biases and norm offsets; norm scales get 1 added below
      value = 0.1 * rng.normal(size=shape)
    return box.replace_boxed(jnp.asarray(value, dtype))

  def fill_at(path, box):
    box = fill(box)
    return box.replace_boxed(box.value + 1) if path[-1].key == "scale" else box

  return jax.tree_util.tree_map_with_path(fill_at, abstract, is_leaf=is_box)


def _edited_batch():
  """(4, T, HW, HW, 3): a smooth random clip and copies with one frame in EDIT_FRAMES changed."""
  rng = np.random.default_rng(1)
  base = np.tanh(rng.normal(size=(T, HW, HW, 3))).astype(np.float32)
  rows = [base]
  for t in EDIT_FRAMES:
    row = base.copy()
    row[t] = -row[t]
    rows.append(row)
  return jnp.asarray(np.stack(rows))


def _edit_latents(mean):
  """(4, T', h, w, C): row 0 of `mean` and copies with one latent frame in EDIT_LATENTS changed."""
  base = np.asarray(mean[0])
  rows = [base]
  for j in EDIT_LATENTS:
    row = base.copy()
    row[j] = row[j] + 1.0
    rows.append(row)
  return jnp.asarray(np.stack(rows))


class Setup:
  """A model, its params and its whole-clip encode/decode outputs on the edited batch."""

  def __init__(self, **fields):
    self.model = vae_lib.VideoVAE(**{**TINY, **fields})
    self.params = random_params(self.model)
    apply = lambda method: fast_jit(
        lambda p, x: self.model.apply({"params": p}, x, method=method)[0])
    self._encode, self._decode = apply(vae_lib.VideoVAE.encode), apply(vae_lib.VideoVAE.decode)
    self.video = _edited_batch()
    self.mean, self.logvar = self.encode(self.video)
    self.z = _edit_latents(self.mean)
    self.recon = self.decode(self.z)

  def encode(self, video):
    mean, logvar = self._encode(nn.unbox(self.params), video)
    return np.asarray(mean), np.asarray(logvar)

  def decode(self, z):
    return np.asarray(self._decode(nn.unbox(self.params), z))


@pytest.fixture(scope="module")
def two_plus_one():
  return Setup(conv="2+1d")


@pytest.fixture(scope="module")
def full_3d():
  # Time x4 as patch (2, 2, 2) and one (2, 2) level (space x4); kt = 2.
  return Setup(conv="3d", kernel=(2, 3, 3), patch=(2, 2, 2), channels=(8, 16), down=((2, 2),))


# ---------------------------------------------------------------------------
# Shapes and errors (abstract evaluation only).


def _abstract_call(model, shape):
  params = jax.eval_shape(lambda: vae_lib.init_params(model, jax.random.key(0)))
  video = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda p, v: model.apply({"params": p}, v, jax.random.key(0)),
                        params, video)


def test_default_factors_and_shapes():
  cfg = configlib.vae_config()
  model = vae_lib.vae_from_config(cfg)
  assert vae_lib.time_factor(cfg) == vae_lib.time_factor(model) == 4
  assert vae_lib.space_factor(cfg) == vae_lib.space_factor(model) == 8
  assert vae_lib.latent_shape(model, (17, 64, 64)) == (5, 8, 8, 16)
  tiny = vae_lib.VideoVAE(**TINY)
  out = _abstract_call(tiny, (2, 9, 32, 32, 3))
  assert out["mean"].shape == out["logvar"].shape == out["z"].shape == (2, 3, 4, 4, 4)
  assert out["recon"].shape == (2, 9, 32, 32, 3)
  image = _abstract_call(tiny, (2, 1, 32, 32, 3))
  assert image["mean"].shape == (2, 1, 4, 4, 4) and image["recon"].shape == (2, 1, 32, 32, 3)
  uneven = vae_lib.VideoVAE(**{**TINY, "patch": (2, 1, 2)})  # time x8, height x4, width x8
  assert vae_lib.space_factors(uneven) == (4, 8)
  assert _abstract_call(uneven, (1, 9, 16, 32, 3))["mean"].shape == (1, 2, 4, 4, 4)


@pytest.mark.parametrize("shape, match", [
    ((1, 8, 32, 32, 3), "1 \\+ k \\* 4 frames"),
    ((1, 2, 32, 32, 3), "1 \\+ k \\* 4 frames"),
    ((1, 9, 36, 32, 3), "multiples of 8"),
    ((1, 9, 32, 20, 3), "multiples of 8"),
])
def test_bad_shapes_raise(shape, match):
  with pytest.raises(ValueError, match=match):
    _abstract_call(vae_lib.VideoVAE(**TINY), shape)
  with pytest.raises(ValueError, match=match):
    vae_lib.latent_shape(vae_lib.VideoVAE(**TINY), shape[1:4])


def test_logical_partitioning_metadata():
  for module, example in [
      (vae_lib.VideoVAE(**TINY), (1, 5, 8, 8, 3)),
      (vae_lib.VideoVAE(**TINY, conv="3d"), (1, 5, 8, 8, 3)),
      (vae_lib.PatchDiscriminator3D(), (1, 5, 16, 16, 3)),
  ]:
    rng = [jax.random.key(0)] if isinstance(module, vae_lib.VideoVAE) else []  # the VAE samples
    variables = jax.eval_shape(
        lambda m=module, e=example, r=rng: m.init(jax.random.key(0), jnp.zeros(e), *r))
    leaves = jax.tree.leaves(variables["params"], is_leaf=is_box)
    assert leaves
    for leaf in leaves:
      assert is_box(leaf), leaf
      assert len(leaf.names) == leaf.value.ndim, leaf
      assert any(n is not None for n in leaf.names), leaf
      assert all(n is None or n in axes.ALL for n in leaf.names), leaf
  params = jax.eval_shape(lambda: vae_lib.init_params(vae_lib.VideoVAE(**TINY), jax.random.key(0)))
  node = params
  for key in vae_lib.VideoVAE.last_layer:
    node = node[key]
  assert node.value.shape == (8, 3 * 4)  # channels[0] -> 3 * patch volume


def test_discriminator_shapes():
  disc = vae_lib.PatchDiscriminator3D(channels=(8, 16, 16), groups=4)
  for t, t_out in ((1, 1), (9, 2)):
    video = jax.ShapeDtypeStruct((2, t, 32, 32, 3), jnp.float32)
    params = jax.eval_shape(lambda v: disc.init(jax.random.key(0), v), video)
    logits = jax.eval_shape(lambda p, v: disc.apply(p, v), params, video)
    assert logits.shape == (2, t_out, 4, 4, 1)


# ---------------------------------------------------------------------------
# Numerics (each fixture compiles the whole-clip encode and decode once).


@pytest.mark.parametrize("setup_name", ["two_plus_one", "full_3d"])
def test_encoder_is_causal(setup_name, request):
  s = request.getfixturevalue(setup_name)
  for row, t in enumerate(EDIT_FRAMES, start=1):
    first = -(-t // 4)  # the first latent frame that sees pixel frame t
    np.testing.assert_allclose(s.mean[row, :first], s.mean[0, :first], atol=1e-6)
    for j in range(first, s.mean.shape[1]):
      assert np.abs(s.mean[row, j] - s.mean[0, j]).max() > 1e-4, (t, j)


@pytest.mark.parametrize("setup_name", ["two_plus_one", "full_3d"])
def test_decoder_is_causal(setup_name, request):
  s = request.getfixturevalue(setup_name)
  assert s.recon.shape == (4, T, HW, HW, 3)
  for row, j in enumerate(EDIT_LATENTS, start=1):
    first = 1 + (j - 1) * 4  # the first frame that depends on latent frame j
    np.testing.assert_allclose(s.recon[row, :first], s.recon[0, :first], atol=1e-6)
    for t in range(first, T):
      assert np.abs(s.recon[row, t] - s.recon[0, t]).max() > 1e-4, (j, t)


@pytest.mark.parametrize("setup_name, chunk", [("two_plus_one", 1), ("full_3d", 2)])
def test_chunked_equals_whole(setup_name, chunk, request):
  """5 latent frames in chunks of 1 (5 pieces) or 2 (2 + 2 + 1 padded); windows of 2 cross them."""
  s = request.getfixturevalue(setup_name)
  mean, logvar = vae_lib.encode_chunked(s.model, s.params, s.video, chunk)
  np.testing.assert_allclose(mean, s.mean, atol=1e-5)
  np.testing.assert_allclose(logvar, s.logvar, atol=1e-5)
  video = vae_lib.decode_chunked(s.model, s.params, s.z, chunk)
  chex.assert_shape(video, s.recon.shape)
  np.testing.assert_allclose(video, s.recon, atol=1e-5)


def test_image_path(two_plus_one):
  """An image is a one-frame clip; a video's first latent is that of its first frame alone."""
  s = two_plus_one
  params = nn.unbox(s.params)
  # The programs of the first chunk of size 1 in `test_chunked_equals_whole`.
  (mean, _), _ = vae_lib.encode_step(s.model, params, s.video[:, :1], None)
  chex.assert_shape(mean, (4, 1, 2, 2, 4))
  np.testing.assert_allclose(mean, s.mean[:, :1], atol=1e-5)
  video, _ = vae_lib.decode_step(s.model, params, mean, None)
  chex.assert_shape(video, (4, 1, HW, HW, 3))
  np.testing.assert_allclose(video, s.decode(jnp.asarray(s.mean))[:, :1], atol=1e-5)


@pytest.mark.parametrize("kernel", [(3, 3, 3), (2, 2, 3)])
def test_3d_conv_matches_lax_conv3d(kernel):
  """"3d" mode is a causal 3D conv: XLA's 3D conv with kt - 1 copies of frame 0 in front."""
  kt, kh, kw = kernel
  conv = layers.CausalConv3d(5, kernel, mode="3d")
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 4, 6, 7, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kt, kh, kw, 3, 5)) / 9, jnp.float32)
  b = jnp.asarray(rng.normal(size=(5,)), jnp.float32)

  @jax.jit
  def both(x, w, b):
    y, cache = conv.apply({"params": {"kernel": w, "bias": b}}, x)
    padded = jnp.concatenate([jnp.repeat(x[:, :1], kt - 1, axis=1), x], axis=1)
    same = lambda k: ((k - 1) // 2, k // 2)  # XLA's 'SAME' split
    want = lax.conv_general_dilated(padded, w, (1, 1, 1), ((0, 0), same(kh), same(kw)),
                                    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                    precision=lax.Precision.HIGHEST)
    return y, cache, want + b, padded[:, -(kt - 1):]

  y, cache, want, want_cache = both(x, w, b)
  np.testing.assert_allclose(y, want, atol=1e-5)
  np.testing.assert_array_equal(cache, want_cache)


def test_real_init_no_transformer_and_bfloat16():
  """`init_params` with a real key on a model without transformer; a bfloat16 model; both run."""
  off = vae_lib.VideoVAE(latent_channels=2, channels=(4,), down=(), groups=2, transformer_layers=0)
  params = vae_lib.init_params(off, jax.random.key(0, impl="rbg"))  # rbg: a faster compile
  assert all(is_box(b) for b in jax.tree.leaves(params, is_leaf=is_box))
  assert np.std(params["decoder"]["conv_out"]["kernel"].value) > 0
  bf16 = vae_lib.VideoVAE(latent_channels=2, channels=(8,), down=(), groups=2, transformer_layers=1,
                          transformer_heads=2, transformer_window=2, dtype="bfloat16",
                          param_dtype="bfloat16")
  bf16_params = random_params(bf16)
  assert all(b.value.dtype == jnp.bfloat16 for b in jax.tree.leaves(bf16_params, is_leaf=is_box))
  assert "mid_transformer" not in params["encoder"] and "mid_transformer" in bf16_params["encoder"]

  run = fast_jit(lambda p, q, v, r: (off.apply({"params": p}, v, r),
                                     bf16.apply({"params": q}, v, r)))
  video = jnp.linspace(-1, 1, 2 * 4 * 4 * 3).reshape(1, 2, 4, 4, 3)  # time x1: any length
  for out in run(nn.unbox(params), nn.unbox(bf16_params), video, jax.random.key(1)):
    chex.assert_shape([out["recon"], out["z"]], [(1, 2, 4, 4, 3), (1, 2, 2, 2, 2)])
    chex.assert_tree_all_finite(out)
    assert float(jnp.min(vae_lib.kl(out["mean"], out["logvar"]))) >= 0


# ---------------------------------------------------------------------------
# Latent noise in training (the decoder reads imprecise latents).


def test_latent_noise_is_relative_per_clip_and_carries_no_gradient_through_its_scale():
  z = jnp.asarray(np.random.default_rng(0).normal(size=(512, 2, 4, 4, 8)) * 5.0, jnp.float32)
  noisy = np.asarray(vae_lib.add_latent_noise(z, jax.random.key(1), 0.3))
  rms = float(jnp.sqrt(jnp.mean(jnp.square(z))))
  # Per clip: noise of RMS tau * rms(z), tau uniform in [0, 0.3].
  tau = np.sqrt(np.mean(np.square(noisy - np.asarray(z)), axis=(1, 2, 3, 4))) / rms
  assert tau.min() >= 0 and tau.max() <= 0.3 * 1.2, (tau.min(), tau.max())
  assert 0.13 < np.median(tau) < 0.17, np.median(tau)  # U(0, 0.3): median 0.15
  assert np.std(tau) > 0.07  # one tau per clip, not one for the batch (U(0, 0.3): 0.087)
  # Zero scale: the latents unchanged. The scale is not differentiated: the
  # latents cannot outgrow the noise.
  np.testing.assert_array_equal(vae_lib.add_latent_noise(z, jax.random.key(1), 0.0), z)
  grad = jax.grad(lambda z: jnp.sum(vae_lib.add_latent_noise(z, jax.random.key(1), 0.3)))(z)
  np.testing.assert_allclose(grad, np.ones(z.shape), rtol=1e-6)


def test_latent_noise_changes_the_decoded_clip_not_the_latents():
  model = vae_lib.VideoVAE(**TINY)
  params = nn.unbox(random_params(model))
  video = _edited_batch()[:2, :5]
  call = lambda noise: fast_jit(lambda p, x: model.apply(
      {"params": p}, x, jax.random.key(3), latent_noise=noise))(params, video)
  plain, noisy = call(0.0), call(0.5)
  np.testing.assert_array_equal(noisy["z"], plain["z"])
  np.testing.assert_array_equal(noisy["mean"], plain["mean"])
  assert float(jnp.max(jnp.abs(noisy["recon"] - plain["recon"]))) > 1e-3
