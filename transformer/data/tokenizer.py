"""SentencePiece tokenizer: training, loading, encode/decode, special ids.

Vocabulary layout of every model trained here:

    id 0            <pad>            PAD_ID   (transformer.special_ids)
    id 1            </s>             EOS_ID
    id 2            <s>              BOS_ID
    id 3            <unk>            UNK_ID
    ids 4 .. 4+S-1  <extra_id_0> ..  sentinels for span corruption, `sentinel_id(k) = 4 + k`
    then            <0x00>..<0xFF>   byte-fallback pieces (if byte_fallback), then learned pieces

Sentinels are user-defined symbols reserved right after unk (not T5's top of
the vocabulary), so their ids do not depend on the vocabulary size. A literal
`<extra_id_k>` in raw text is encoded as that sentinel.

The normaliser is the identity, whitespace is kept as is and no dummy prefix is
added, so `decode(encode(text)) == text` for any text (code indentation
included); characters outside the vocabulary round-trip through byte fallback.
"""


import io
import os
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from transformer import special_ids

MODEL_TYPES = ("unigram", "bpe", "char", "word")
TOKENIZER_FILE = "spm.model"  # the file name of a run's SentencePiece model, in its workdir


class Tokenizer:
  """A SentencePiece model with this project's special ids; picklable (for grain workers)."""

  def __init__(self, model_proto: bytes):
    self._proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    expected = {special_ids.PAD_ID: "<pad>", special_ids.EOS_ID: "</s>", special_ids.BOS_ID: "<s>",
                special_ids.UNK_ID: "<unk>"}
    actual = {i: self._sp.id_to_piece(i) for i in expected}
    if actual != expected:
      raise ValueError(f"SentencePiece model has special pieces {actual}, expected {expected}")
    count = 0
    while (special_ids.sentinel_id(count) < self.vocab_size
           and self._sp.id_to_piece(special_ids.sentinel_id(count)) == f"<extra_id_{count}>"):
      count += 1
    self.num_sentinels = count

  def __getstate__(self) -> bytes:
    return self._proto

  def __setstate__(self, proto: bytes) -> None:
    self.__init__(proto)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def model_proto(self) -> bytes:
    return self._proto

  def encode(self, text: str) -> np.ndarray:
    """Token ids of `text`, int32 [length]; no BOS/EOS added."""
    return np.asarray(self._sp.encode(text), dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """The text of `ids` [length]; padding (id 0) is dropped, other control ids decode to ''."""
    return self._sp.decode([int(i) for i in ids if i != special_ids.PAD_ID])

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def sentinel(self, k: int) -> int:
    """`special_ids.sentinel_id(k)`, checked against the number of sentinels in this vocabulary."""
    if not 0 <= k < self.num_sentinels:
      raise ValueError(f"sentinel {k} out of range: the vocabulary has {self.num_sentinels} "
                       "sentinels")
    return special_ids.sentinel_id(k)


def train_tokenizer(
    lines: Iterable[str],
    *,
    vocab_size: int,
    model_type: str = "unigram",
    byte_fallback: bool = True,
    character_coverage: float = 0.9995,
    num_sentinels: int = 100,
    input_sentence_size: int = 1_000_000,
) -> Tokenizer:
  """Trains a SentencePiece model on `lines` (one training sentence each, no newlines).

  `input_sentence_size` caps the sampled sentences (seeded by SentencePiece).
  """
  if model_type not in MODEL_TYPES:
    raise ValueError(f"spm_model_type: got {model_type!r}, expected one of {MODEL_TYPES}")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      byte_fallback=byte_fallback,
      character_coverage=character_coverage,
      pad_id=special_ids.PAD_ID,
      eos_id=special_ids.EOS_ID,
      bos_id=special_ids.BOS_ID,
      unk_id=special_ids.UNK_ID,
      user_defined_symbols=[f"<extra_id_{k}>" for k in range(num_sentinels)],
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      add_dummy_prefix=False,
      allow_whitespace_only_pieces=True,
      split_digits=True,
      input_sentence_size=input_sentence_size,
      shuffle_input_sentence=True,
      num_threads=os.cpu_count() or 1,
      minloglevel=2,
  )
  return Tokenizer(model.getvalue())


def save_tokenizer(tokenizer: Tokenizer, path: str) -> None:
  """Writes the model file atomically (a temporary file renamed into place)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
  with os.fdopen(fd, "wb") as f:
    f.write(tokenizer.model_proto)
  os.replace(tmp, path)


def load_tokenizer(path: str) -> Tokenizer:
  """Loads a model file written by `save_tokenizer` (or any model with this project's special
  ids)."""
  with open(path, "rb") as f:
    return Tokenizer(f.read())
