"""Spacetime latent patches, learned factorised positions and NaViT packing.

A latent clip (T, H, W, C) is cut into pt x ph x pw patches: a grid of
T' x H' x W' = T/pt x H/ph x W/pw tokens of pt*ph*pw*C values each. Each token
has a position (t, h, w) on that grid (t may be a true frame index from a
sparse set of frames); its embedding is pos_t[t] + pos_h[h] + pos_w[w], so
any resolution, aspect ratio and duration within the tables is just a
different set of indices.

Batches come two ways:
  * bucketed: every clip of the batch has one (T, H, W); tokens stay a grid
    (B, T', H'*W', D) and attention runs per frame or per position with no
    mask over the whole clip (the fast path);
  * packed (NaViT): clips of different shapes share rows of one token
    sequence (R, L, D); `segment` (R, L) tells clips apart (1, 2, ...; 0 pads)
    and (t, h, w) (R, L) place each token. `pack_layout` plans rows by first
    fit, `pack` fills them, `unpack` inverts it. Packing runs on the host (numpy).

Shape legend: B batch, T frames, H height, W width, C channels, P patch
values, L tokens, R packed rows, D width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidgen.parallel import axes

Array = jax.Array


def grid_shape(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, int, int]:
  """(T, H, W) latents -> (T', H', W') patches; raises when a size does not divide."""
  t, h, w = (int(s) for s in shape)
  pt, ph, pw = (int(p) for p in patch)
  if t % pt or h % ph or w % pw:
    raise ValueError(
        f"latents of {t}x{h}x{w} (TxHxW) do not divide into {pt}x{ph}x{pw} patches")
  return t // pt, h // ph, w // pw


def patchify(z: Array, patch: Sequence[int]) -> Array:
  """(B, T, H, W, C) -> (B, T', H', W', pt*ph*pw*C)."""
  grid_shape(z.shape[1:4], patch)
  pt, ph, pw = patch
  return einops.rearrange(z, "b (t pt) (h ph) (w pw) c -> b t h w (pt ph pw c)",
                          pt=pt, ph=ph, pw=pw)


def unpatchify(x: Array, patch: Sequence[int]) -> Array:
  """(B, T', H', W', pt*ph*pw*C) -> (B, T, H, W, C)."""
  pt, ph, pw = patch
  return einops.rearrange(x, "b t h w (pt ph pw c) -> b (t pt) (h ph) (w pw) c",
                          pt=pt, ph=ph, pw=pw)


POSITION_INITS = ("sincos", "normal")


def sincos_band_init(band: int, bands: int = 3, max_period: float = 10_000.0):
  """Initialiser of a (rows, D) table: sin/cos of the row index in band `band` of D, zeros elsewhere.

  D is cut into `bands` contiguous bands of even width (the last takes the
  rest), so the three factorised tables start on disjoint dimensions: pos_h[i]
  + pos_w[j] differs from pos_h[j] + pos_w[i], and every position starts as
  distinct as a fixed 3D sin-cos embedding (about unit size per dimension,
  like the patch embedding), instead of being drowned by the content at high
  noise as a 0.02-scale random table is.
  """

  def init(key, shape, dtype=jnp.float32):
    del key
    rows, d = shape
    size = (d // bands) // 2 * 2
    lo = band * size
    hi = d if band == bands - 1 else lo + size
    half = (hi - lo) // 2
    table = np.zeros((rows, d), np.float64)
    if half:
      freqs = max_period ** (-np.arange(half) / half)
      angle = np.arange(rows)[:, None] * freqs[None]
      table[:, lo:lo + half] = np.sin(angle)
      table[:, lo + half:lo + 2 * half] = np.cos(angle)
    return jnp.asarray(table, dtype)

  return init


class Positions(nn.Module):
  """Learned factorised positions: pos_t[t] + pos_h[h] + pos_w[w].

  Attributes:
    width: D.
    max_frames: rows of pos_t (patch frames).
    max_height: rows of pos_h (patch rows).
    max_width: rows of pos_w (patch columns).
    table_init: "sincos" (each table starts as sin/cos of its index on its
      own third of D, `sincos_band_init`) or "normal" (N(0, 0.02^2)).
    param_dtype: parameter dtype.
  """

  width: int
  max_frames: int
  max_height: int
  max_width: int
  table_init: str = "sincos"
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, t: Array, h: Array, w: Array) -> Array:
    """Index arrays (broadcastable to one shape S) -> (*S, D)."""
    if self.table_init not in POSITION_INITS:
      raise ValueError(f"unknown position init {self.table_init!r}; known: "
                       f"{', '.join(POSITION_INITS)}")
    tables = []
    for band, (name, rows) in enumerate((("pos_t", self.max_frames), ("pos_h", self.max_height),
                                         ("pos_w", self.max_width))):
      init = (sincos_band_init(band) if self.table_init == "sincos"
              else nn.initializers.normal(0.02))
      init = nn.with_logical_partitioning(init, (axes.TABLE, axes.EMBED))
      tables.append(self.param(name, init, (rows, self.width), self.param_dtype))
    return tables[0][t] + tables[1][h] + tables[2][w]


def check_grid(grid: Sequence[int], max_frames: int, max_height: int, max_width: int,
               max_frame_index: int | None = None, section: str = "dit") -> None:
  """Raises ValueError when a (T', H', W') grid, or its largest frame index, is off the tables.

  `section`: the config section whose max_frames / max_height / max_width the
  message names.
  """
  t, h, w = grid
  last = t - 1 if max_frame_index is None else int(max_frame_index)
  if last >= max_frames or h > max_height or w > max_width:
    raise ValueError(
        f"a {t}x{h}x{w} patch grid (largest frame index {last}) is outside the position "
        f"tables: at most {max_frames} patch frames (indices 0..{max_frames - 1}), "
        f"{max_height} patch rows and {max_width} patch columns; raise {section}.max_frames / "
        "max_height / max_width (and retrain) or request a smaller video")


# ---------------------------------------------------------------------------
# NaViT packing (host side).


@dataclasses.dataclass(frozen=True)
class PackLayout:
  """Where each clip's tokens live in the packed rows.

  Attributes:
    rows: R.
    length: L, tokens per row.
    grids: (T', H', W') of each clip.
    row: the row of each clip.
    segment: each clip's segment id in its row (1, 2, ...).
    offset: index of each clip's first token in its row.
  """

  rows: int
  length: int
  grids: tuple[tuple[int, int, int], ...]
  row: tuple[int, ...]
  segment: tuple[int, ...]
  offset: tuple[int, ...]

  @property
  def max_segments(self) -> int:
    return max(self.segment, default=0)


def pack_layout(grids: Sequence[Sequence[int]], length: int, rows: int | None = None
                ) -> PackLayout:
  """First-fit-decreasing packing of clips of `grids` (T', H', W') into rows of `length` tokens.

  With `rows` given the layout has exactly that many rows (empty ones pad) and
  raises when the clips do not fit; otherwise it uses as few as first fit needs.
  """
  sizes = [int(np.prod(g)) for g in grids]
  if any(n > length for n in sizes):
    raise ValueError(f"a clip of {max(sizes)} tokens does not fit rows of {length}")
  order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
  used: list[int] = []
  count: list[int] = []
  row, segment, offset = [0] * len(sizes), [0] * len(sizes), [0] * len(sizes)
  for i in order:
    for r, u in enumerate(used):
      if u + sizes[i] <= length:
        break
    else:
      used.append(0)
      count.append(0)
      r = len(used) - 1
    row[i], offset[i] = r, used[r]
    count[r] += 1
    segment[i] = count[r]
    used[r] += sizes[i]
  n_rows = len(used) if rows is None else rows
  if len(used) > n_rows:
    raise ValueError(f"{len(sizes)} clips need {len(used)} rows of {length} tokens; "
                     f"only {n_rows} allowed")
  return PackLayout(rows=n_rows, length=length, grids=tuple(tuple(int(x) for x in g) for g in grids),
                    row=tuple(row), segment=tuple(segment), offset=tuple(offset))


def _grid_indices(grid: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  t, h, w = np.meshgrid(*(np.arange(n) for n in grid), indexing="ij")
  return t.ravel(), h.ravel(), w.ravel()


def pack(tokens: Sequence[np.ndarray], layout: PackLayout,
         frame_index: Sequence[np.ndarray] | None = None,
         frame_values: Mapping[str, Sequence[np.ndarray]] | None = None) -> dict[str, np.ndarray]:
  """Packs per-clip token grids (T', H', W', P) into rows.

  Args:
    tokens: one (T', H', W', P) array per clip, in layout order.
    layout: from `pack_layout` over the same grids.
    frame_index: per clip, the true index (T',) of each patch frame (default 0..T'-1).
    frame_values: name -> per clip a (T',) array (a time per frame, a known flag, ...);
      each becomes an (R, L) per-token array under that name.

  Returns:
    tokens (R, L, P), segment (R, L) int32 (0: padding), t, h, w (R, L) int32,
    and the `frame_values` per token (padding 0 / False).
  """
  p = tokens[0].shape[-1]
  out = {"tokens": np.zeros((layout.rows, layout.length, p), tokens[0].dtype),
         "segment": np.zeros((layout.rows, layout.length), np.int32)}
  for name in ("t", "h", "w"):
    out[name] = np.zeros((layout.rows, layout.length), np.int32)
  for name, values in (frame_values or {}).items():
    out[name] = np.zeros((layout.rows, layout.length), np.asarray(values[0]).dtype)
  for i, grid in enumerate(layout.grids):
    if tuple(tokens[i].shape[:3]) != grid:
      raise ValueError(f"clip {i}: tokens of grid {tokens[i].shape[:3]}, layout says {grid}")
    r, start = layout.row[i], layout.offset[i]
    sl = slice(start, start + int(np.prod(grid)))
    t, h, w = _grid_indices(grid)
    frames = np.arange(grid[0]) if frame_index is None else np.asarray(frame_index[i])
    out["tokens"][r, sl] = tokens[i].reshape(-1, p)
    out["segment"][r, sl] = layout.segment[i]
    out["t"][r, sl], out["h"][r, sl], out["w"][r, sl] = frames[t], h, w
    for name, values in (frame_values or {}).items():
      out[name][r, sl] = np.asarray(values[i])[t]
  return out


def unpack(tokens: np.ndarray | Array, layout: PackLayout) -> list[np.ndarray]:
  """Packed (R, L, P) -> one (T', H', W', P) grid per clip, in layout order."""
  tokens = np.asarray(tokens)
  out = []
  for i, grid in enumerate(layout.grids):
    start = layout.offset[i]
    flat = tokens[layout.row[i], start:start + int(np.prod(grid))]
    out.append(flat.reshape(*grid, tokens.shape[-1]))
  return out
