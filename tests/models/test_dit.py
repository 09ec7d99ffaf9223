"""The Video DiT, its patches and packing, and the text encoder.

Masks are checked by perturbation: change what a token must not see and its
output stays put; change what it may see and its output moves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vidgen.models import attention, dit, patches
from vidgen.text import encoder

C = 4
KW = dict(channels=C, width=32, depth=2, heads=2, max_frames=8, max_height=8, max_width=8)


def _noisy(params, seed=7, scale=0.1):
  """Non-zero everywhere (the model starts as the identity in its blocks and outputs zeros)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return tree.unflatten([p + scale * jax.random.normal(k, p.shape, p.dtype)
                         for p, k in zip(leaves, keys)])


def _text(b=1, lt=5, width=16, valid=3, seed=1):
  emb = jax.random.normal(jax.random.key(seed), (b, lt, width))
  mask = jnp.arange(lt)[None, :] < valid
  return emb, jnp.broadcast_to(mask, (b, lt))


def _model_and_params(**kw):
  model = dit.VideoDiT(**{**KW, **kw})
  z = jnp.zeros((1, model.patch[0], 2 * model.patch[1], 2 * model.patch[2], C))
  text, mask = _text()
  params = model.init(jax.random.key(0), z, jnp.ones(z.shape[:2]), text, mask)
  return model, _noisy(nn.unbox(params))


@pytest.fixture(scope="module", params=[False, True], ids=["tables", "rope"])
def causal(request):
  """The causal DiT, with and without rotary positions: every mask test runs on both."""
  return _model_and_params(rope=request.param)


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2), (1, 1, 1)])
def test_patchify_round_trip(patch):
  z = jax.random.normal(jax.random.key(0), (2, 4, 6, 8, C))
  x = patches.patchify(z, patch)
  assert x.shape == (2, 4 // patch[0], 6 // patch[1], 8 // patch[2], int(np.prod(patch)) * C)
  np.testing.assert_array_equal(patches.unpatchify(x, patch), z)


def test_patchify_rejects_sizes_that_do_not_divide():
  with pytest.raises(ValueError, match="do not divide"):
    patches.patchify(jnp.zeros((1, 3, 4, 4, C)), (2, 2, 2))


@pytest.mark.parametrize("width", [64, 128, 100])
def test_sincos_positions_start_distinct_on_disjoint_bands(width):
  pos = patches.Positions(width, max_frames=6, max_height=8, max_width=8)
  params = pos.init(jax.random.key(0), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32),
                    jnp.zeros((1,), jnp.int32))["params"]
  tables = [np.asarray(nn.unbox(params[k])) for k in ("pos_t", "pos_h", "pos_w")]
  used = [np.flatnonzero(np.abs(t).sum(0) > 0) for t in tables]
  # Three contiguous, disjoint bands in order, covering D but an odd leftover dimension.
  for u in used:
    np.testing.assert_array_equal(u, np.arange(u[0], u[-1] + 1))
  assert used[0][-1] < used[1][0] and used[1][-1] < used[2][0]
  assert sum(len(u) for u in used) >= width - 1
  # Each row is sin/cos pairs: squared norm = half its band, like a unit vector per pair.
  for t, u in zip(tables, used):
    np.testing.assert_allclose(np.square(t).sum(1), len(u) / 2, rtol=1e-6)
  # Transposed positions differ (the h and w tables are not the same vectors).
  t, h, w = np.meshgrid(np.arange(6), np.arange(8), np.arange(8), indexing="ij")
  emb = np.asarray(pos.apply({"params": params}, t.ravel(), h.ravel(), w.ravel()))
  assert len(np.unique(np.round(emb, 5), axis=0)) == 6 * 8 * 8
  normal = patches.Positions(width, 6, 8, 8, table_init="normal")
  p = normal.init(jax.random.key(0), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32),
                  jnp.zeros((1,), jnp.int32))["params"]
  assert float(np.std(np.asarray(nn.unbox(p["pos_h"])))) < 0.05
  with pytest.raises(ValueError, match="position init"):
    patches.Positions(width, 6, 8, 8, table_init="fourier").init(
        jax.random.key(0), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32),
        jnp.zeros((1,), jnp.int32))


def test_output_shape_and_zero_init_output():
  model = dit.VideoDiT(**KW)
  z = jax.random.normal(jax.random.key(0), (2, 3, 4, 6, C))
  text, mask = _text(2)
  params = model.init(jax.random.key(0), z, jnp.ones((2, 3)), text, mask)
  out = model.apply(params, z, jnp.full((2, 3), 0.5), text, mask)
  assert out.shape == z.shape
  np.testing.assert_array_equal(out, 0.0)  # adaLN-zero style: the output layer starts at 0


def _run(model, params, z, times, text=None, frame_index=None):
  text, mask = _text(z.shape[0]) if text is None else text
  return np.asarray(model.apply(params, z, times, text, mask, frame_index))


def test_causal_temporal_attention_cannot_see_the_future(causal):
  model, params = causal
  z = jax.random.normal(jax.random.key(1), (1, 5, 4, 4, C))
  times = jnp.full((1, 5), 0.7)
  base = _run(model, params, z, times)
  later = z.at[:, 3:].add(1.0)  # change frames 3 and 4
  out = _run(model, params, later, times)
  np.testing.assert_allclose(out[:, :3], base[:, :3], atol=1e-5)
  assert np.abs(out[:, 3:] - base[:, 3:]).max() > 1e-3


def test_causal_attention_sees_known_later_frames(causal):
  """A known (time 0) last frame conditions the frames before it (interpolation, extend back)."""
  model, params = causal
  z = jax.random.normal(jax.random.key(1), (1, 5, 4, 4, C))
  times = jnp.array([[0.7, 0.7, 0.7, 0.7, 0.0]])
  base = _run(model, params, z, times)
  out = _run(model, params, z.at[:, 4].add(1.0), times)
  assert np.abs(out[:, :4] - base[:, :4]).max() > 1e-3


def test_full_temporal_attention_sees_every_frame():
  model, params = _model_and_params(causal=False)
  z = jax.random.normal(jax.random.key(1), (1, 4, 4, 4, C))
  times = jnp.full((1, 4), 0.5)
  base = _run(model, params, z, times)
  out = _run(model, params, z.at[:, 3].add(1.0), times)
  assert np.abs(out[:, 0] - base[:, 0]).max() > 1e-3


def test_spatial_attention_stays_within_a_frame():
  attn = attention.Attention(heads=2)
  x = jax.random.normal(jax.random.key(0), (1, 3, 8, 16))  # (B, T, S, D)
  params = attn.init(jax.random.key(1), x)
  geom = {"frame": jnp.arange(3)[None], "known": jnp.zeros((1, 3), bool)}
  fn = lambda v: np.asarray(dit.spatial_attention(lambda *a, **k: attn.apply(params, *a, **k),
                                                  v, geom))
  base = fn(x)
  out = fn(x.at[:, 1].add(1.0))
  np.testing.assert_allclose(out[:, [0, 2]], base[:, [0, 2]], atol=1e-6)
  assert np.abs(out[:, 1] - base[:, 1]).max() > 1e-3


def test_padding_text_tokens_are_ignored(causal):
  model, params = causal
  z = jax.random.normal(jax.random.key(1), (1, 2, 4, 4, C))
  text, mask = _text(valid=3)
  base = _run(model, params, z, jnp.full((1, 2), 0.5), (text, mask))
  out = _run(model, params, z, jnp.full((1, 2), 0.5), (text.at[:, 3:].add(5.0), mask))
  np.testing.assert_allclose(out, base, atol=1e-6)
  moved = _run(model, params, z, jnp.full((1, 2), 0.5), (text.at[:, 1].add(5.0), mask))
  assert np.abs(moved - base).max() > 1e-3


def test_sparse_frame_indices_change_the_output(causal):
  """Frames carry their true indices: {0, 2, 4} is not {0, 1, 2}."""
  model, params = causal
  z = jax.random.normal(jax.random.key(1), (1, 3, 4, 4, C))
  times = jnp.full((1, 3), 0.5)
  dense_idx = _run(model, params, z, times, frame_index=jnp.array([[0, 1, 2]]))
  sparse_idx = _run(model, params, z, times, frame_index=jnp.array([[0, 2, 4]]))
  np.testing.assert_allclose(dense_idx, _run(model, params, z, times), atol=1e-6)
  assert np.abs(sparse_idx - dense_idx).max() > 1e-3


def _packed_vs_bucketed(model, params, shapes, frame_indices):
  text, mask = _text(1)
  outs, grids, times, frames = [], [], [], []
  for i, (shape, idx) in enumerate(zip(shapes, frame_indices)):
    z = jax.random.normal(jax.random.key(10 + i), (1, *shape, C))
    tt = jnp.linspace(0.0, 0.9, shape[0])[None]  # frame 0 known
    outs.append(np.asarray(patches.patchify(
        model.apply(params, z, tt, text, mask, jnp.asarray(idx)[None]), model.patch))[0])
    grids.append(np.asarray(patches.patchify(z, model.patch))[0])
    pt = model.patch[0]
    times.append(np.asarray(tt[0, ::pt]))
    frames.append(np.asarray(idx)[::pt] // pt)
  sizes = [int(np.prod(g.shape[:3])) for g in grids]
  layout = patches.pack_layout([g.shape[:3] for g in grids], length=max(sizes) + 2)
  packed = patches.pack(grids, layout, frame_index=frames, frame_values={"times": times})
  m = layout.max_segments
  ptext = np.broadcast_to(np.asarray(text)[:, None], (layout.rows, m) + text.shape[1:])
  pmask = np.broadcast_to(np.asarray(mask)[:, None], (layout.rows, m) + mask.shape[1:])
  y = model.apply(params, packed["tokens"], packed["segment"], packed["t"], packed["h"],
                  packed["w"], packed["times"], ptext, pmask, method=model.packed)
  return layout, outs, patches.unpack(y, layout)


@pytest.mark.parametrize("patch,rope", [((1, 2, 2), False), ((2, 2, 2), False),
                                        ((1, 2, 2), True)])
def test_packed_equals_bucketed_for_every_clip(patch, rope):
  model, params = _model_and_params(patch=patch, rope=rope)
  shapes = [(4, 4, 4), (2, 4, 6), (4, 2, 2), (2, 6, 2)]
  frame_indices = [np.arange(4), np.array([0, 1]), np.array([0, 1, 4, 5]), np.arange(2)]
  layout, outs, back = _packed_vs_bucketed(model, params, shapes, frame_indices)
  assert layout.rows >= 2 and layout.max_segments >= 2  # several rows, several clips per row
  for want, got in zip(outs, back):
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_segments_cannot_see_each_other(causal):
  model, params = causal
  grids = [np.asarray(jax.random.normal(jax.random.key(i), (2, 2, 2, 4 * C))) for i in range(2)]
  layout = patches.pack_layout([g.shape[:3] for g in grids], length=16)
  assert layout.rows == 1
  text, mask = _text(1)
  ptext = np.broadcast_to(np.asarray(text)[:, None], (1, 2) + text.shape[1:])
  pmask = np.broadcast_to(np.asarray(mask)[:, None], (1, 2) + mask.shape[1:])

  def run(gs):
    p = patches.pack(gs, layout, frame_values={"times": [np.full(2, 0.5, np.float32)] * 2})
    y = model.apply(params, p["tokens"], p["segment"], p["t"], p["h"], p["w"], p["times"],
                    ptext, pmask, method=model.packed)
    return patches.unpack(y, layout)

  base = run(grids)
  moved = run([grids[0], grids[1] + 1.0])
  np.testing.assert_allclose(moved[0], base[0], atol=1e-6)
  assert np.abs(moved[1] - base[1]).max() > 1e-3


def test_pack_layout_first_fit_and_limits():
  layout = patches.pack_layout([(2, 2, 2), (1, 2, 2), (3, 2, 2)], length=12)
  assert layout.rows == 2 and sorted(layout.row) == [0, 1, 1]  # 12 | 8 + 4
  with pytest.raises(ValueError, match="does not fit"):
    patches.pack_layout([(4, 4, 4)], length=12)
  with pytest.raises(ValueError, match="rows"):
    patches.pack_layout([(2, 2, 3)] * 3, length=12, rows=2)


def test_sizes_outside_the_position_tables_fail_with_the_limits(causal):
  model, params = causal
  z = jnp.zeros((1, 2, 18, 4, C))  # 9 patch rows > max_height 8
  with pytest.raises(ValueError, match="at most 8 patch frames.*8 patch rows"):
    _run(model, params, z, jnp.ones((1, 2)))


@pytest.mark.parametrize("rope", [False, True])
def test_scan_and_remat_match_the_plain_stack(rope):
  model, params = _model_and_params(rope=rope)
  scanned = dit.VideoDiT(**KW, scan_layers=True, remat="dots", rope=rope)
  p = dict(params["params"])
  blocks = [p.pop(f"block_{i}") for i in range(KW["depth"])]
  p["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  z = jax.random.normal(jax.random.key(1), (1, 3, 4, 4, C))
  times = jnp.full((1, 3), 0.4)
  text, mask = _text()
  want = model.apply(params, z, times, text, mask)
  got = scanned.apply({"params": p}, z, times, text, mask)
  np.testing.assert_allclose(got, want, atol=1e-5)
  g = jax.grad(lambda q: jnp.sum(scanned.apply({"params": q}, z, times, text, mask) ** 2))(p)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))


def test_compute_dtype_is_separate_from_param_dtype():
  model = dit.VideoDiT(**KW, dtype=jnp.bfloat16)
  z = jax.random.normal(jax.random.key(0), (1, 2, 4, 4, C))
  text, mask = _text()
  params = model.init(jax.random.key(0), z, jnp.ones((1, 2)), text, mask)
  assert {x.dtype for x in jax.tree.leaves(nn.unbox(params))} == {jnp.dtype(jnp.float32)}
  out = model.apply(_noisy(nn.unbox(params)), z, jnp.full((1, 2), 0.3), text, mask)
  assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()


def test_text_encoder_ignores_padding():
  enc = encoder.TextEncoder(vocab_size=64, max_len=8, width=16, depth=2, heads=2)
  tokens = jnp.array([[5, 6, 2, 0, 0, 0, 0, 0]], jnp.int32)
  mask = tokens > 0
  mask = mask.at[:, 2].set(True)
  params = enc.init(jax.random.key(0), tokens, mask)
  base, _ = enc.apply(params, tokens, mask)
  other, _ = enc.apply(params, tokens.at[:, 5].set(9), mask)  # change a padding id
  np.testing.assert_allclose(other[:, :3], base[:, :3], atol=1e-6)
  changed, _ = enc.apply(params, tokens.at[:, 0].set(9), mask)
  assert np.abs(changed[:, 1] - base[:, 1]).max() > 1e-4
  with pytest.raises(ValueError, match="at most 8"):
    enc.apply(params, jnp.zeros((1, 9), jnp.int32), jnp.ones((1, 9), bool))


def test_text_encoder_keeps_one_word_differences_at_init():
  """Captions that differ in one word ("... moving left" / "... moving right") must map to
  clearly different embeddings at that word from the first step: with 0.02-scale token
  embeddings under unit-scale attention and MLP branches, the shared context swamped the
  word, and the jointly trained DiT never learnt the motion direction (mean cosine 0.998)."""
  enc = encoder.TextEncoder(vocab_size=64, max_len=8, width=128, depth=2, heads=4)
  tokens = jnp.array([[10, 11, 12, 13, 14, w, 2, 0] for w in (20, 21, 22, 23)], jnp.int32)
  mask = tokens > 0
  sims = []
  for seed in range(3):
    out = np.asarray(enc.apply(enc.init(jax.random.key(seed), tokens, mask), tokens, mask)[0])
    word = out[:, 5] / np.linalg.norm(out[:, 5], axis=-1, keepdims=True)
    sims.append((word @ word.T)[~np.eye(4, dtype=bool)].mean())
  assert np.mean(sims) < 0.7, sims  # 0.80 with the old 0.02-scale start


def test_logical_axis_names_on_every_parameter():
  model = dit.VideoDiT(**KW, scan_layers=True)
  z = jnp.zeros((1, 1, 2, 2, C))
  text, mask = _text()
  boxed = jax.eval_shape(model.init, jax.random.key(0), z, jnp.ones((1, 1)), text, mask)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  names = {n for x in leaves for n in x.names}
  assert "layers" in names


def test_attention_with_qk_norm_matches_the_textbook_formula():
  attn = attention.Attention(heads=2, qk_norm=True)
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))
  ctx = jax.random.normal(jax.random.key(1), (2, 5, 12))
  mask = jnp.arange(5)[None, None, None, :] < 4
  params = _noisy(nn.unbox(attn.init(jax.random.key(2), x, ctx, mask)), scale=0.3)
  p = params["params"]

  def rms(v, s):
    return v / jnp.sqrt(jnp.mean(v * v, axis=-1, keepdims=True) + 1e-6) * s

  q = rms(jnp.einsum("bld,dnk->blnk", x, p["query"]), p["query_norm"]["scale"])
  k = rms(jnp.einsum("bld,dnk->blnk", ctx, p["key"]), p["key_norm"]["scale"])
  v = jnp.einsum("bld,dnk->blnk", ctx, p["value"])
  logits = jnp.einsum("bqnk,bsnk->bnqs", q, k) / np.sqrt(8)
  w = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
  want = jnp.einsum("bnqs,bsnk,nkd->bqd", w, v, p["out"])
  np.testing.assert_allclose(attn.apply(params, x, ctx, mask), want, atol=2e-5, rtol=1e-5)


def test_rotary_attention_depends_only_on_position_differences():
  """RoPE: shifting every position by the same offset leaves the output; other positions move it."""
  attn = attention.Attention(heads=2, qk_norm=True)
  x = jax.random.normal(jax.random.key(0), (2, 6, 16))  # head dim 8: 4 pairs, 2 per axis
  params = _noisy(nn.unbox(attn.init(jax.random.key(1), x)), scale=0.3)
  h, w = jnp.array([0, 0, 1, 1, 2, 2]), jnp.array([0, 1, 0, 1, 0, 1])
  tables = lambda *pos: tuple(r[:, None] for r in attention.rope_tables(pos, 8))
  run = lambda hh, ww: np.asarray(attn.apply(params, x, rope=tables(hh, ww)))
  base = run(h, w)
  np.testing.assert_allclose(run(h + 3, w + 5), base, atol=1e-5)
  assert np.abs(run(h, w[::-1]) - base).max() > 1e-3  # positions, not only content, matter
  np.testing.assert_allclose(  # rotation preserves the norm of queries and keys
      np.linalg.norm(attention.apply_rope(x.reshape(2, 6, 2, 8), tables(h, w)), axis=-1),
      np.linalg.norm(x.reshape(2, 6, 2, 8), axis=-1), rtol=1e-5)
  with pytest.raises(ValueError, match="self-attention"):
    attn.apply(params, x, x, rope=tables(h))
  with pytest.raises(ValueError, match="divisible by 6"):
    attention.rope_tables((h, w, h), 8)


def test_query_blocks_give_the_same_output_and_gradients(causal):
  """`attention_chunk`: spatial attention in query blocks (5 does not divide S = 16: padded)."""
  model, params = causal
  chunked = dit.VideoDiT(**KW, attention_chunk=5, rope=model.rope)
  z = jax.random.normal(jax.random.key(3), (2, 3, 8, 8, C))
  times = jnp.asarray([[0.0, 0.4, 0.8], [0.2, 0.5, 0.9]])
  text, mask = _text(b=2)

  def loss(p, m):
    out = m.apply(p, z, times, text, mask)
    return jnp.mean(out ** 2), out

  (g_ref, out_ref), (g, out) = (jax.grad(loss, has_aux=True)(params, m) for m in (model, chunked))
  np.testing.assert_allclose(out, out_ref, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)
  with pytest.raises(ValueError, match="without a query axis"):
    attention.chunked_attention(*(jnp.zeros((1, 8, 2, 4)),) * 3, jnp.ones((1, 2, 8, 8), bool),
                                chunk=3)
