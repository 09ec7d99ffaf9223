import itertools
import pickle

import pytest

from vidgen.data import moving_shapes
from vidgen.text import tokenizer as tokenizer_lib


def _all_shapes_captions():
  singles = [
      moving_shapes.caption([dict(color=c, shape=s, size=z, motion=m)])
      for c, s, z, m in itertools.product(moving_shapes.COLORS, moving_shapes.SHAPES,
                                          moving_shapes.SIZES, moving_shapes.MOTIONS)
  ]
  return singles, [f"{a} and {b}" for a, b in itertools.product(singles[::7], singles[::5])]


@pytest.fixture(scope="module")
def shapes_tokenizer(tmp_path_factory):
  cfg = moving_shapes.ShapesConfig(num_objects=2)
  captions = [moving_shapes.caption(moving_shapes.sample_objects(cfg, "train", i))
              for i in range(2000)]
  return tokenizer_lib.train(captions, tmp_path_factory.mktemp("tok") / "t.model")


def test_moving_shapes_captions_round_trip_and_fit_32_tokens(shapes_tokenizer):
  singles, pairs = _all_shapes_captions()
  assert len(singles) == 6 * 3 * 2 * 5
  longest = 0
  for text in singles + pairs:
    ids = shapes_tokenizer.encode(text)
    assert ids[-1] == tokenizer_lib.EOS_ID
    assert tokenizer_lib.UNK_ID not in ids, text
    assert shapes_tokenizer.decode(ids) == text
    longest = max(longest, len(ids))
  assert longest <= 32, longest


def test_pad_mask_and_decode_ignore_padding(shapes_tokenizer):
  ids = shapes_tokenizer.encode("a small red circle moving left")
  tokens, mask = shapes_tokenizer.pad(ids, 32)
  assert tokens.shape == mask.shape == (32,)
  assert mask.sum() == len(ids) and mask[: len(ids)].all() and not mask[len(ids):].any()
  assert (tokens[len(ids):] == tokenizer_lib.PAD_ID).all()
  assert shapes_tokenizer.decode(tokens) == "a small red circle moving left"


def test_unseen_text_round_trips_through_byte_fallback(shapes_tokenizer):
  text = "ein grünes Dreieck — 三角形 🙂"
  assert shapes_tokenizer.decode(shapes_tokenizer.encode(text)) == text


def test_pickle_keeps_the_model(shapes_tokenizer):
  clone = pickle.loads(pickle.dumps(shapes_tokenizer))
  text = "a large blue square staying still"
  assert clone.encode(text) == shapes_tokenizer.encode(text)
  assert clone.vocab_size == shapes_tokenizer.vocab_size


def test_missing_model_says_how_to_make_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="--mode=tokenizer"):
    tokenizer_lib.Tokenizer(tmp_path / "nope.model")
