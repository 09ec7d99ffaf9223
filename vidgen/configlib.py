"""Helpers for config files: typed config arguments, the variants table, validation.

A config file is `configs/<area>/<experiment>.py` exporting `get_config(arg=None)`;
`arg` is what follows the colon in `--config=file.py:key=value,...` and is turned
into typed options by `parse_arg`. Shared pieces (`data_config`, `text_config`)
are functions to compose, not classes to inherit. `validate` checks a finished
config against the reference tree: an unknown key or a value of the wrong type
or range fails with a message naming the dotted key. `load` does all of it for
a `file.py:arg` string (tests and tools); `vidgen.app` does it for `--config`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from collections.abc import Callable
from typing import Any

import ml_collections

ConfigDict = ml_collections.ConfigDict


class ConfigError(ValueError):
  """A config that cannot be used; the message names the key."""


# ---------------------------------------------------------------------------
# `file.py:key=value,...` arguments.


def _coerce(key: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    low = text.lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ConfigError(f"config argument {key!r}: expected a bool, got {text!r}")
  for typ in (int, float):
    if isinstance(default, typ):
      try:
        return typ(text)
      except ValueError:
        raise ConfigError(
            f"config argument {key!r}: expected {typ.__name__}, got {text!r}") from None
  return text


def parse_arg(arg: str | None, **defaults: Any) -> ConfigDict:
  """Parses `"a=1,b=x,flag"` into a locked ConfigDict typed by `defaults`.

  A bare name sets a bool option to True. Unknown names and values of the
  wrong type raise ConfigError naming the option.
  """
  out = dict(defaults)
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    key, eq, text = part.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(
          f"unknown config argument {key!r}; known: {', '.join(sorted(defaults)) or 'none'}")
    if not eq:
      if not isinstance(defaults[key], bool):
        raise ConfigError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    else:
      out[key] = _coerce(key, text.strip(), defaults[key])
  cfg = ConfigDict(out)
  cfg.lock()
  return cfg


# ---------------------------------------------------------------------------
# Model sizes: one table (DiT paper sizes plus a `tiny` for tests and CPUs).


@dataclasses.dataclass(frozen=True)
class Variant:
  """A transformer size.

  Attributes:
    width: model dimension D.
    depth: number of blocks.
    heads: attention heads N (head dim K = D / N).
    mlp_ratio: MLP hidden size / D.
  """

  width: int
  depth: int
  heads: int
  mlp_ratio: float = 4.0


VARIANTS: dict[str, Variant] = {
    "tiny": Variant(width=64, depth=2, heads=2),
    "mini": Variant(width=128, depth=4, heads=4),  # the 2-core CPU demo
    "S": Variant(width=384, depth=12, heads=6),
    "B": Variant(width=768, depth=12, heads=12),
    "L": Variant(width=1024, depth=24, heads=16),
    "XL": Variant(width=1152, depth=28, heads=16),
    # Beyond the DiT paper's table, for the pod configs (configs/scaling/pods.py).
    "H": Variant(width=1536, depth=28, heads=16),  # about 1.4B with the text encoder
    "G": Variant(width=2304, depth=32, heads=24),  # about 3.5B
}

_VARIANT_RE = re.compile(r"^([A-Za-z]+)(?:/(\d+)(?:x(\d+)x(\d+))?)?$")


def parse_variant(name: str) -> tuple[Variant, tuple[int, int, int]]:
  """`"B/2"` -> (B, patch (1, 2, 2)); `"S/2x2x2"` -> (S, (2, 2, 2)); `"tiny"` -> 1x2x2."""
  m = _VARIANT_RE.match(name.strip())
  if not m or m.group(1) not in VARIANTS:
    raise ConfigError(
        f"unknown variant {name!r}; expected NAME[/P or /PtxPhxPw] with NAME in "
        f"{', '.join(VARIANTS)}")
  if m.group(3):
    patch = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
  elif m.group(2):
    patch = (1, int(m.group(2)), int(m.group(2)))
  else:
    patch = (1, 2, 2)
  if min(patch) < 1:
    raise ConfigError(f"variant {name!r}: patch sizes must be >= 1")
  return VARIANTS[m.group(1)], patch


def dit_size(dit: Any) -> tuple[Variant, tuple[int, int, int]]:
  """The (Variant, patch) a `dit` section describes: `dit.variant` with any of
  `dit.width`, `dit.depth`, `dit.heads` that are non-zero in place of its own."""
  variant, patch = parse_variant(dit.variant)
  sizes = {k: int(dit.get(k, 0)) for k in ("width", "depth", "heads")}
  return dataclasses.replace(variant, **{k: v for k, v in sizes.items() if v}), patch


# ---------------------------------------------------------------------------
# Shared config pieces.

DATA_SOURCES = ("shapes", "shapes_records", "folder", "folder_records", "tfds")


def data_config() -> ConfigDict:
  """The `data` section: where clips come from and how they are batched."""
  return ConfigDict(dict(
      # shapes | shapes_records | folder:DIR | folder_records:DIR | tfds:NAME
      source="shapes",
      data_dir="data",  # built data sets, the tokenizer and TFDS data live here
      split="train",
      eval_split="test",
      # Moving Shapes rendered on demand: examples per split (one epoch).
      sizes=dict(train=100_000, test=256, holdout=256),
      # Moving Shapes written to array_record by `vidgen.prepare --mode=build`.
      build_sizes=dict(train=2_000, test=256, holdout=256),
      # train_num_objects: objects per clip of the train split only (0: num_objects).
      shapes=dict(height=64, width=64, frames=16, num_objects=1, train_num_objects=0,
                  holdout=(), seed=0),
      buckets="16x64x64:8",  # TxHxW:global_batch[@weight], comma separated
      sampling=dict(stride=1, fps=0.0, random_start=True, random_crop=False),
      shuffle=True,
      seed=0,
      # Virtual data shards S (0: one per process): shard j reads keys[j::S];
      # process i of n owns shards [i*S/n, (i+1)*S/n). S must be a multiple of
      # n and divide every bucket's batch; a run resumes with the same stream
      # on any process count dividing S.
      shards=0,
      num_epochs=0,  # 0: repeat forever
      num_workers=2,
      worker_buffer_size=2,
      max_bad_fraction=0.1,
      bad_check_after=100,
      # tfds:NAME data sets: which features hold the video and its text.
      tfds=dict(video_key="video", caption_key="", label_key="label",
                caption_template="a video of {label}", fps=25.0),
  ))


def text_config() -> ConfigDict:
  """The `text` section: the tokenizer."""
  return ConfigDict(dict(
      tokenizer="",  # path; empty: <data.data_dir>/tokenizer.model
      max_len=32,
      vocab_size=512,
      train_captions=20_000,  # captions the tokenizer is trained on
      # The text encoder (vidgen/text/encoder.py) over the tokens.
      encoder=dict(width=128, depth=2, heads=4, mlp_ratio=4.0,
                   trainable=True,  # False: frozen (its params get no updates)
                   checkpoint=""),  # a workdir whose params['text'] seed the encoder
  ))


def base_config() -> ConfigDict:
  return ConfigDict(dict(task="prepare", seed=0, data=data_config(), text=text_config()))


def mesh_config() -> ConfigDict:
  """The `mesh` section: devices per mesh axis; one -1 takes what is left."""
  return ConfigDict(dict(data=-1, fsdp=1, tensor=1, context=1))


def optim_config() -> ConfigDict:
  """The `optim` section: AdamW, schedule, clipping, EMA."""
  return ConfigDict(dict(
      lr=1e-4,
      schedule="cosine",  # cosine | constant (both after a linear warmup)
      warmup_steps=500,
      end_lr_factor=0.1,  # cosine ends at lr * end_lr_factor
      b1=0.9,
      b2=0.99,
      eps=1e-8,
      weight_decay=0.0,
      clip_norm=1.0,  # global gradient norm; 0 disables
      ema_decay=0.0,  # 0 disables the EMA copy of the params
  ))


def train_config() -> ConfigDict:
  """The `train` section: loop length, logging, pictures, evaluation, checkpoints."""
  return ConfigDict(dict(
      steps=10_000,
      log_every=50,
      picture_every=1_000,  # reconstruction / sample grids (PNG + TensorBoard); 0: never
      eval_every=1_000,  # 0: only at the end
      eval_batches=4,
      checkpoint_every=1_000,
      keep_checkpoints=3,
      async_checkpoint=True,
      max_consecutive_skips=20,  # non-finite steps in a row that stop the run
      time_limit_minutes=0.0,  # stop (and checkpoint) after this much training time; 0: none
      log_batch_keys=False,  # debug: each step's batch keys to W/batch_keys/process_<i>-of-<n>.jsonl
      # XLA options of the train step when it compiles for TPU, "name=value,...";
      # ignored on other platforms (their compilers reject TPU names).
      tpu_compiler_options="",
  ))


def vae_config() -> ConfigDict:
  """The `vae` section: the causal video VAE and its losses.

  Compression: time x patch[0] * prod(d[0] for d in down), space x patch[1] *
  prod(d[1] for d in down) (4 and 8 by default). Clips have 1 + k * time
  factor frames; an image is a one-frame clip.
  """
  return ConfigDict(dict(
      latent_channels=16,
      patch=(1, 2, 2),  # causal space-to-depth (t, h, w) before the first layer
      channels=(64, 128, 256),  # width of each level
      down=((2, 2), (2, 2)),  # (time, space) factor between consecutive levels
      blocks=1,  # residual blocks per level
      conv="2+1d",  # 2+1d: spatial kh x kw then causal kt x 1 x 1 | 3d: full causal kt x kh x kw
      kernel=(3, 3, 3),  # (kt, kh, kw)
      groups=8,  # GroupNorm groups; statistics per frame, so causality holds
      transformer=dict(layers=2, heads=4, window=8, mlp_ratio=4.0),  # layers=0: off
      dtype="float32",  # compute
      param_dtype="float32",
      checkpoint="",  # a trained VAE workdir or checkpoint dir (stage 2, latents, evaluate)
      # latent_noise: decode z + tau * rms(z) * eps, tau ~ U(0, latent_noise) per clip
      # (models.vae.add_latent_noise), so the decoder reads imprecise latents; 0: off.
      loss=dict(recon="l1", recon_weight=1.0, l2_weight=0.0, kl_weight=1e-6, latent_noise=0.0),
      disc=dict(enabled=False, start_step=2_000, weight=0.1, adaptive=True,
                channels=(32, 64, 128), max_adaptive_weight=1e4),
  ))


def dit_config() -> ConfigDict:
  """The `dit` section: the Video DiT and where its latents come from.

  Sizes come from `variant` (configlib.VARIANTS, `NAME/P` or `NAME/PtxPhxPw`
  for the patch). Position tables are in latent patches: a clip of T' x H' x W'
  latents with patch (pt, ph, pw) needs max_frames >= T'/pt, and so on.
  """
  return ConfigDict(dict(
      variant="tiny",
      # Sizes in place of the variant's (0: the variant's own), for scaling studies
      # between the table's rows: `--config.dit.depth=6` keeps the variant's width.
      width=0,
      depth=0,
      heads=0,
      max_frames=16,
      max_height=32,
      max_width=32,
      temporal="causal",  # causal (a frame sees earlier frames and every known frame) | full
      qk_norm=True,  # RMSNorm on queries and keys (stable attention logits)
      dtype="float32",  # compute
      param_dtype="float32",
      remat="none",  # none | full | dots (save matmul outputs) | offload (dots, to host)
      scan_layers=False,  # nn.scan over blocks: one compiled block, stacked params
      pos_init="sincos",  # learned positions start as sin-cos on a third of D each | normal
      pooled_text=True,  # the caption's pooled embedding joins the time embedding in adaLN
      rope=False,  # rotary (h, w) positions in spatial and frame index in temporal attention
      # Temporal attention with frames sharded over the mesh's context axis:
      # ulysses (all-to-all to a head-sharded layout) | ring (ppermute of keys).
      context_attention="ulysses",
      attention_chunk=0,  # spatial attention in blocks of this many queries (0: off)
      latents="",  # a `prepare --mode=latents` folder; empty: encode with the frozen VAE
      eval_latents="",  # the same for evaluation; empty: encode with the frozen VAE
      # The DiT sees (z - shift) * scale: "scalar" one scale 1 / std for all channels
      # (no shift), "channel" each channel's mean and 1 / std (from the latents metadata).
      latent_norm="scalar",
      latent_scale=0.0,  # "scalar": the scale; 0: 1 / std from the latents metadata
  ))


def diffusion_config() -> ConfigDict:
  """The `diffusion` section: the noise process, conditioning masks and sampling.

  Times run from 0 (data) to 1 (noise). Known (conditioning) frames are clean,
  at time 0, and carry no loss.
  """
  return ConfigDict(dict(
      kind="flow",  # flow (rectified flow, velocity) | ddpm
      flow=dict(shift=0.0,  # > 0: fixed time shift; 0: max(1, sqrt(tokens / base_tokens))
                base_tokens=256, logit_mean=0.0, logit_std=1.0,
                uniform=0.0),  # share of training times uniform on [0, 1] (not shifted)
      ddpm=dict(schedule="cosine",  # cosine | linear
                prediction="v",  # epsilon | v
                steps=1000, beta_start=1e-4, beta_end=0.02),
      caption_dropout=0.1,  # captions replaced by the empty caption (for guidance)
      # Which latent frames are known, drawn per clip with these weights.
      masks=dict(none=0.5, first=0.2, first_k=0.05, last_k=0.1, first_last=0.1, random=0.05),
      # FDM: clips of more than `frames` latent frames train on a sorted subset
      # of `frames` of them at their true frame indices (half contiguous
      # windows, half sparse FDM unions; vidgen.diffusion.masks.fdm_subset). 0: off.
      fdm=dict(frames=0),
      sample=dict(sampler="euler",  # euler | heun (flow); ddim | dpm++2m (ddpm)
                  steps=30, cfg=4.0, cfg_frames=1.0, shift=0.0,
                  # Long videos (vidgen.diffusion.long_video): latent frames per
                  # sampler call (0: the longest bucket of data.buckets), the
                  # scheme beyond it, its conditioning frames (0: half the window)
                  # and the span a window may reach over (0: the position table;
                  # set it to the clip length the DiT trained on).
                  window=0, scheme="autoregressive", context=0, max_span=0),
  ))


def captioner_config() -> ConfigDict:
  """The `captioner` section: the video-caption model (vidgen/models/captioner.py).

  Decoder positions: text.max_len tokens. Position tables are in tubelets.
  """
  return ConfigDict(dict(
      input="pixels",  # pixels | latents (posterior means of the frozen VAE of vae.checkpoint)
      patch=(4, 16, 16),  # tubelet (t, h, w) of the video encoder, in pixels or latents
      max_frames=16,
      max_height=16,
      max_width=16,
      stem="patch",  # patch | luma_chroma (pixels: colour-blind form + one chroma per tubelet)
      width=128,
      depth=2,  # video encoder blocks
      decoder_depth=2,
      heads=4,
      mlp_ratio=4.0,
      dtype="float32",
      param_dtype="float32",
      token_dropout=0.0,  # training: decoder input tokens replaced by UNK (word dropout)
      value_channel=False,  # pixels: add max(R, G, B) as a 4th, colour-blind channel
      beams=1,  # decoding for evaluation and recaptioning: 1 greedy, else beam search
      length_penalty=0.0,  # beam search: GNMT alpha (0: plain log-probability)
  ))


# The reference tree every config is checked against. Later stages add sections.
REFERENCE: dict[str, Callable[[], Any]] = {
    "task": lambda: "prepare",
    "seed": lambda: 0,
    # The TPU topology a pod config targets (jax.experimental.topologies name,
    # e.g. "v5p:2x2x4"); vidgen.aot compiles for it. Empty: none.
    "topology": lambda: "",
    "data": data_config,
    "text": text_config,
    "mesh": mesh_config,
    "optim": optim_config,
    "train": train_config,
    "vae": vae_config,
    "dit": dit_config,
    "diffusion": diffusion_config,
    "captioner": captioner_config,
}

TASKS = ("prepare", "vae", "dit", "captioner")
DTYPES = ("float32", "bfloat16", "float16")


def _positive(v):
  return v > 0


def _non_negative(v):
  return v >= 0


def _mesh_size(v):
  return v == -1 or v >= 1


def _check_factors(n):
  def check(v):
    if len(v) != n or any(int(x) < 1 for x in v):
      return f"must be {n} integers >= 1"
    return True
  return check


def _check_down(v):
  for pair in v:
    if len(pair) != 2 or any(int(x) not in (1, 2) for x in pair):
      return "must be (time, space) pairs of factors 1 or 2"
  return True


def _check_source(v):
  kind, _, arg = v.partition(":")
  if kind not in DATA_SOURCES:
    return f"unknown source kind {kind!r}; known: {', '.join(DATA_SOURCES)}"
  if kind in ("folder", "folder_records", "tfds") and not arg:
    return f"{kind} needs an argument: '{kind}:...'"
  if kind in ("shapes", "shapes_records") and arg:
    return f"{kind} takes no argument"
  return True


def _check_buckets(v):
  from vidgen.data import buckets  # pylint: disable=g-import-not-at-top
  try:
    buckets.parse_buckets(v)
  except ValueError as e:
    return str(e)
  return True


def _check_holdout(v):
  from vidgen.data import moving_shapes  # pylint: disable=g-import-not-at-top
  for pair in v:
    if (len(pair) != 2 or pair[0] not in moving_shapes.COLORS
        or pair[1] not in moving_shapes.SHAPES):
      return (f"{pair!r} is not a (color, shape) pair; colors: "
              f"{', '.join(moving_shapes.COLORS)}; shapes: {', '.join(moving_shapes.SHAPES)}")
  return True


REMAT = ("none", "full", "dots", "offload")
SAMPLERS = ("euler", "heun", "ddim", "dpm++2m")
MASK_KINDS = ("none", "first", "first_k", "last_k", "first_last", "random")
SCHEMES = ("autoregressive", "long_range", "hierarchical", "brute_force")  # long_video.SCHEMES


def _check_variant(v):
  try:
    parse_variant(v)
  except ConfigError as e:
    return str(e)
  return True


def _check_masks(v):
  keys = set(v.keys())
  if keys != set(MASK_KINDS):
    return f"needs exactly the weights {', '.join(MASK_KINDS)}"
  if any(float(v[k]) < 0 for k in keys) or sum(float(v[k]) for k in keys) <= 0:
    return "weights must be >= 0 with a positive sum"
  return True


CHECKS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "task": (lambda v: v in TASKS, f"must be one of {TASKS}"),
    "data.source": (_check_source, ""),
    "data.buckets": (_check_buckets, ""),
    "data.split": (lambda v: bool(v), "must not be empty"),
    "data.shapes.height": (lambda v: v >= 16, "must be >= 16"),
    "data.shapes.width": (lambda v: v >= 16, "must be >= 16"),
    "data.shapes.frames": (_positive, "must be >= 1"),
    "data.shapes.num_objects": (lambda v: v in (1, 2), "must be 1 or 2"),
    "data.shapes.train_num_objects": (lambda v: v in (0, 1, 2), "must be 0 (num_objects), 1 or 2"),
    "data.shapes.holdout": (_check_holdout, ""),
    "data.sizes.train": (_non_negative, "must be >= 0"),
    "data.sizes.test": (_non_negative, "must be >= 0"),
    "data.sizes.holdout": (_non_negative, "must be >= 0"),
    "data.build_sizes.train": (_non_negative, "must be >= 0"),
    "data.build_sizes.test": (_non_negative, "must be >= 0"),
    "data.build_sizes.holdout": (_non_negative, "must be >= 0"),
    "data.sampling.stride": (_positive, "must be >= 1"),
    "data.sampling.fps": (_non_negative, "must be >= 0"),
    "data.num_epochs": (_non_negative, "must be >= 0 (0 repeats forever)"),
    "data.num_workers": (_non_negative, "must be >= 0"),
    "data.worker_buffer_size": (_positive, "must be >= 1"),
    "data.max_bad_fraction": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "data.bad_check_after": (_positive, "must be >= 1"),
    "data.tfds.fps": (_positive, "must be > 0"),
    "text.max_len": (lambda v: v >= 2, "must be >= 2"),
    "text.vocab_size": (lambda v: v >= 300, "must be >= 300 (256 byte pieces + words)"),
    "text.train_captions": (_positive, "must be >= 1"),
    "mesh.data": (_mesh_size, "must be >= 1 or -1"),
    "mesh.fsdp": (_mesh_size, "must be >= 1 or -1"),
    "mesh.tensor": (_mesh_size, "must be >= 1 or -1"),
    "mesh.context": (_mesh_size, "must be >= 1 or -1"),
    "optim.lr": (_positive, "must be > 0"),
    "optim.schedule": (lambda v: v in ("cosine", "constant"), "must be cosine or constant"),
    "optim.warmup_steps": (_non_negative, "must be >= 0"),
    "optim.end_lr_factor": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "optim.b1": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "optim.b2": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "optim.eps": (_positive, "must be > 0"),
    "optim.weight_decay": (_non_negative, "must be >= 0"),
    "optim.clip_norm": (_non_negative, "must be >= 0 (0 disables)"),
    "optim.ema_decay": (lambda v: 0 <= v < 1, "must be in [0, 1) (0 disables)"),
    "train.steps": (_positive, "must be >= 1"),
    "train.log_every": (_positive, "must be >= 1"),
    "train.picture_every": (_non_negative, "must be >= 0"),
    "train.eval_every": (_non_negative, "must be >= 0"),
    "train.eval_batches": (_positive, "must be >= 1"),
    "train.checkpoint_every": (_positive, "must be >= 1"),
    "train.keep_checkpoints": (_positive, "must be >= 1"),
    "train.max_consecutive_skips": (_positive, "must be >= 1"),
    "train.time_limit_minutes": (_non_negative, "must be >= 0"),
    "vae.latent_channels": (_positive, "must be >= 1"),
    "vae.patch": (_check_factors(3), ""),
    "vae.channels": (lambda v: len(v) >= 1 and all(int(c) > 0 for c in v), "must be positive widths"),
    "vae.down": (_check_down, ""),
    "vae.blocks": (_non_negative, "must be >= 0"),
    "vae.conv": (lambda v: v in ("2+1d", "3d"), "must be '2+1d' or '3d'"),
    "vae.kernel": (_check_factors(3), ""),
    "vae.groups": (_positive, "must be >= 1"),
    "vae.transformer.layers": (_non_negative, "must be >= 0 (0 switches it off)"),
    "vae.transformer.heads": (_positive, "must be >= 1"),
    "vae.transformer.window": (_positive, "must be >= 1"),
    "vae.dtype": (lambda v: v in DTYPES, f"must be one of {DTYPES}"),
    "vae.param_dtype": (lambda v: v in DTYPES, f"must be one of {DTYPES}"),
    "vae.loss.recon": (lambda v: v in ("l1", "l2"), "must be l1 or l2"),
    "vae.loss.kl_weight": (_non_negative, "must be >= 0"),
    "vae.disc.start_step": (_non_negative, "must be >= 0"),
    "vae.disc.weight": (_non_negative, "must be >= 0"),
    "text.encoder.width": (_positive, "must be >= 1"),
    "text.encoder.depth": (_positive, "must be >= 1"),
    "text.encoder.heads": (_positive, "must be >= 1"),
    "captioner.input": (lambda v: v in ("pixels", "latents"), "must be pixels or latents"),
    "captioner.patch": (_check_factors(3), ""),
    "captioner.max_frames": (_positive, "must be >= 1"),
    "captioner.max_height": (_positive, "must be >= 1"),
    "captioner.max_width": (_positive, "must be >= 1"),
    "captioner.stem": (lambda v: v in ("patch", "luma_chroma"), "must be patch or luma_chroma"),
    "captioner.width": (_positive, "must be >= 1"),
    "captioner.depth": (_positive, "must be >= 1"),
    "captioner.decoder_depth": (_positive, "must be >= 1"),
    "captioner.heads": (_positive, "must be >= 1"),
    "captioner.dtype": (lambda v: v in DTYPES, f"must be one of {DTYPES}"),
    "captioner.param_dtype": (lambda v: v in DTYPES, f"must be one of {DTYPES}"),
    "captioner.beams": (_positive, "must be >= 1 (1: greedy)"),
    "captioner.token_dropout": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "captioner.length_penalty": (_non_negative, "must be >= 0"),
    "dit.variant": (_check_variant, ""),
    "dit.width": (_non_negative, "must be >= 0 (0: the variant's)"),
    "dit.depth": (_non_negative, "must be >= 0 (0: the variant's)"),
    "dit.heads": (_non_negative, "must be >= 0 (0: the variant's)"),
    "dit.max_frames": (_positive, "must be >= 1"),
    "dit.max_height": (_positive, "must be >= 1"),
    "dit.max_width": (_positive, "must be >= 1"),
    "dit.temporal": (lambda v: v in ("causal", "full"), "must be causal or full"),
    "dit.dtype": (lambda v: v in DTYPES, f"must be one of {DTYPES}"),
    "dit.param_dtype": (lambda v: v in DTYPES, f"must be one of {DTYPES}"),
    "dit.remat": (lambda v: v in REMAT, f"must be one of {REMAT}"),
    "dit.context_attention": (lambda v: v in ("ulysses", "ring"), "must be ulysses or ring"),
    "dit.pos_init": (lambda v: v in ("sincos", "normal"), "must be sincos or normal"),
    "dit.attention_chunk": (_non_negative, "must be >= 0 (0: no query blocks)"),
    "data.shards": (_non_negative, "must be >= 0 (0: one per process)"),
    "dit.latent_norm": (lambda v: v in ("scalar", "channel"), "must be scalar or channel"),
    "dit.latent_scale": (_non_negative, "must be >= 0 (0: from the latents metadata)"),
    "diffusion.kind": (lambda v: v in ("flow", "ddpm"), "must be flow or ddpm"),
    "diffusion.flow.shift": (_non_negative, "must be >= 0 (0: by token count)"),
    "diffusion.flow.base_tokens": (_positive, "must be >= 1"),
    "diffusion.flow.logit_std": (_positive, "must be > 0"),
    "diffusion.flow.uniform": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "diffusion.ddpm.schedule": (lambda v: v in ("cosine", "linear"), "must be cosine or linear"),
    "diffusion.ddpm.prediction": (lambda v: v in ("epsilon", "v"), "must be epsilon or v"),
    "diffusion.ddpm.steps": (lambda v: v >= 2, "must be >= 2"),
    "diffusion.caption_dropout": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "diffusion.masks": (_check_masks, ""),
    "diffusion.fdm.frames": (_non_negative, "must be >= 0"),
    "diffusion.sample.sampler": (lambda v: v in SAMPLERS, f"must be one of {SAMPLERS}"),
    "diffusion.sample.steps": (_positive, "must be >= 1"),
    "diffusion.sample.cfg": (_non_negative, "must be >= 0"),
    "diffusion.sample.cfg_frames": (_non_negative, "must be >= 0"),
    "diffusion.sample.shift": (_non_negative, "must be >= 0"),
    "diffusion.sample.window": (_non_negative, "must be >= 0 (0: the longest bucket)"),
    "diffusion.sample.scheme": (lambda v: v in SCHEMES, f"must be one of {SCHEMES}"),
    "diffusion.sample.context": (_non_negative, "must be >= 0 (0: half the window)"),
    "diffusion.sample.max_span": (_non_negative, "must be >= 0 (0: the position table)"),
}


def _type_ok(value: Any, ref: Any) -> bool:
  if isinstance(ref, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(ref, bool)
  if isinstance(ref, float):
    return isinstance(value, (int, float)) and math.isfinite(value)
  if isinstance(ref, int):
    return isinstance(value, int)
  if isinstance(ref, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(ref))


def _walk(value: Any, ref: Any, path: str, errors: list[str]) -> None:
  if isinstance(ref, ConfigDict):
    if not isinstance(value, (ConfigDict, dict)):
      errors.append(f"config key {path!r} must be a section, got {value!r}")
      return
    for k in value.keys():
      sub = f"{path}.{k}" if path else k
      if k not in ref:
        errors.append(f"unknown config key {sub!r}; known here: {', '.join(sorted(ref.keys()))}")
      else:
        _walk(value[k], ref[k], sub, errors)
    return
  if not _type_ok(value, ref):
    errors.append(
        f"config key {path!r} must be {type(ref).__name__}, got {type(value).__name__} {value!r}")
    return
  if path in CHECKS:
    check, message = CHECKS[path]
    result = check(value)
    if result is not True:
      errors.append(f"config key {path!r} = {value!r}: {result if isinstance(result, str) else message}")


def validate(config: ConfigDict) -> ConfigDict:
  """Checks `config` against `REFERENCE` and `CHECKS`; raises ConfigError listing every problem."""
  reference = ConfigDict({k: fn() for k, fn in REFERENCE.items()})
  errors: list[str] = []
  _walk(config, reference, "", errors)
  missing = [k for k in ("task", "data") if k not in config]
  errors += [f"config is missing the {k!r} section" for k in missing]
  c = config.get("captioner")
  if not errors and c is not None and c.get("stem") == "luma_chroma" and (
      c.input != "pixels" or c.value_channel):
    errors.append("config key 'captioner.stem' = 'luma_chroma' reads RGB pixels: it needs "
                  "captioner.input = 'pixels' and captioner.value_channel = False (its luma is "
                  "the value channel)")
  d = config.get("dit")
  if not errors and d is not None:
    size = dit_size(d)[0]
    if size.width % size.heads:
      errors.append(f"config keys 'dit.width' = {size.width} and 'dit.heads' = {size.heads} "
                    f"(with variant {d.variant!r}): the heads must divide the width")
  if errors:
    raise ConfigError("bad config:\n  " + "\n  ".join(errors))
  return config


def load(spec: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ConfigDict:
  """Loads `path/to/file.py[:arg]`, applies dotted `overrides`, validates, locks."""
  path, _, arg = str(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location(
      "vidgen_config_" + re.sub(r"\W", "_", path), path)
  if module_spec is None or not os.path.exists(path):
    raise ConfigError(f"config file {path!r} not found")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    config = module.get_config(arg or None)
  except TypeError as e:  # ml_collections refuses a value of another type
    raise ConfigError(f"{path}: {e}") from None
  config.lock()
  for key, value in (overrides or {}).items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      if not isinstance(node, ConfigDict) or p not in node:
        raise ConfigError(f"unknown config key {key!r}")
      node = node[p]
    if not isinstance(node, ConfigDict) or leaf not in node:
      raise ConfigError(f"unknown config key {key!r}")
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"config key {key!r}: {e}") from None
  return validate(config)
