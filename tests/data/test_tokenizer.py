"""SentencePiece: special ids at the contract's ids, sentinels, lossless round trip, save/load."""

import pickle

import pytest

from transformer import special_ids
from transformer.data import tokenizer as tokenizer_lib


def test_special_ids_and_sentinels(tokenizer):
  assert [tokenizer.id_to_piece(i)
          for i in (special_ids.PAD_ID, special_ids.EOS_ID, special_ids.BOS_ID,
                    special_ids.UNK_ID)] == ["<pad>", "</s>", "<s>", "<unk>"]
  assert tokenizer.num_sentinels == 24 and tokenizer.vocab_size == 600
  for k in (0, 1, 23):
    assert special_ids.sentinel_id(k) == 4 + k == tokenizer.sentinel(k)
    assert tokenizer.id_to_piece(tokenizer.sentinel(k)) == f"<extra_id_{k}>"
  with pytest.raises(ValueError, match="sentinel 24 out of range"):
    tokenizer.sentinel(24)


@pytest.mark.parametrize("text", [
    "def f(x):\n\treturn x  # trailing  \n\n",
    "  leading spaces, then unicode: é ☃ 漢字 \x00 and a byte-fallback emoji 🦜",
    "",
])
def test_round_trip(tokenizer, text):
  ids = tokenizer.encode(text)
  assert ids.dtype.name == "int32"
  assert special_ids.PAD_ID not in ids.tolist()
  assert tokenizer.decode(ids) == text


def test_save_load_and_pickle(tokenizer, tmp_path):
  path = str(tmp_path / "m" / "spm.model")
  tokenizer_lib.save_tokenizer(tokenizer, path)
  loaded = tokenizer_lib.load_tokenizer(path)
  text = "class A:\n    pass\n"
  assert loaded.encode(text).tolist() == tokenizer.encode(text).tolist()
  assert (pickle.loads(pickle.dumps(tokenizer)).encode(text).tolist()
          == tokenizer.encode(text).tolist())


def test_train_options_are_checked():
  with pytest.raises(ValueError, match="spm_model_type"):
    tokenizer_lib.train_tokenizer(["a b c"], vocab_size=300, model_type="bogus")
