"""SentencePiece tokenizer: trained on a data set's captions, saved beside the data.

Ids: 0 is padding, 1 unknown, 2 end of sequence; there is no beginning token.
Identity normalisation and byte fallback make every UTF-8 caption encodable
and every caption of a closed vocabulary (Moving Shapes) round-trip exactly.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm

PAD_ID = 0
UNK_ID = 1
EOS_ID = 2


def train(
    captions: Iterable[str], path: str | os.PathLike[str], vocab_size: int = 512
) -> "Tokenizer":
  """Trains a BPE SentencePiece model on `captions` and writes it to `path`."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(captions),
      model_writer=model,
      model_type="bpe",
      vocab_size=vocab_size,
      hard_vocab_limit=False,  # small closed vocabularies give fewer pieces
      byte_fallback=True,  # any UTF-8 text encodes, no <unk> for new characters
      normalization_rule_name="identity",  # exact round trip
      character_coverage=1.0,
      pad_id=PAD_ID,
      unk_id=UNK_ID,
      eos_id=EOS_ID,
      bos_id=-1,
      num_threads=1,
      minloglevel=2,
  )
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp, path)  # never leave a half-written model behind
  return Tokenizer(path)


class Tokenizer:
  """A SentencePiece model loaded from a local file; picklable.

  Attributes:
    path: the model file.
    vocab_size: number of ids.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = str(path)
    if not os.path.exists(self.path):
      raise FileNotFoundError(
          f"tokenizer model {self.path!r} not found; train it with "
          "`python -m vidgen.prepare --config=... --mode=tokenizer`"
      )
    with open(self.path, "rb") as f:
      self._proto = f.read()
    self._load()

  def _load(self):
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    self.vocab_size = self._sp.get_piece_size()

  def __getstate__(self):
    return {"path": self.path, "_proto": self._proto}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._load()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, followed by EOS."""
    return self._sp.encode(text) + [EOS_ID]

  def decode(self, ids: Iterable[int]) -> str:
    """Inverse of `encode`; stops at the first EOS and ignores padding."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i != PAD_ID:
        out.append(i)
    return self._sp.decode(out)

  def pad(self, ids: list[int], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(max_len,) int32 ids and (max_len,) bool mask. Caller checks the length."""
    tokens = np.full((max_len,), PAD_ID, np.int32)
    tokens[: len(ids)] = ids
    mask = np.zeros((max_len,), bool)
    mask[: len(ids)] = True
    return tokens, mask
