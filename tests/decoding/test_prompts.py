"""Text prompts: empty -> error, too long -> truncated with a warning, unknown chars ->
bytes/UNK."""

import warnings

import numpy as np
import pytest
import sentencepiece as spm

from tests.decoding.conftest import tiny_config
from transformer.decoding.prompts import PromptWarning, decode_outputs, encode_prompts
from transformer.special_ids import EOS_ID, PAD_ID, UNK_ID

TEXT = ["the quick brown fox jumps over the lazy dog", "a b c d e f g h i j k l m n o p",
        "def add(a, b): return a + b", "print the sum of two numbers"] * 20


def train_tokenizer(directory, byte_fallback: bool) -> spm.SentencePieceProcessor:
  corpus = directory / "corpus.txt"
  corpus.write_text("\n".join(TEXT))
  prefix = directory / f"spm_{byte_fallback}"
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(prefix), vocab_size=300 if byte_fallback else 40,
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, byte_fallback=byte_fallback,
      hard_vocab_limit=False, minloglevel=2)
  return spm.SentencePieceProcessor(model_file=f"{prefix}.model")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return train_tokenizer(tmp_path_factory.mktemp("spm"), byte_fallback=True)


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_prompt_is_an_error_naming_it(tokenizer, text):
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    encode_prompts(tokenizer, ["the fox", text], tiny_config())


def test_prompts_are_right_padded(tokenizer):
  tokens = encode_prompts(tokenizer, ["the fox", "the quick brown fox"], tiny_config())
  assert tokens.dtype == np.int32
  short = tokenizer.encode("the fox")
  np.testing.assert_array_equal(tokens[0, :len(short)], short)
  assert np.all(tokens[0, len(short):] == PAD_ID) and np.all(tokens[1] != PAD_ID)


def test_too_long_encoder_input_keeps_the_first_max_len_tokens(tokenizer):
  config = tiny_config("encoder_decoder", max_len=8)
  text = " ".join(TEXT[:3])
  with pytest.warns(PromptWarning, match="prompt 0 has .* keeping the first 8"):
    tokens = encode_prompts(tokenizer, [text], config)
  np.testing.assert_array_equal(tokens[0], tokenizer.encode(text)[:8])


def test_too_long_decoder_prefix_keeps_the_last_tokens_leaving_room(tokenizer):
  config = tiny_config("decoder_only", max_len=12)
  text = " ".join(TEXT[:3])
  with pytest.warns(PromptWarning, match="keeping the last 7"):
    tokens = encode_prompts(tokenizer, [text], config, max_new_tokens=5)
  np.testing.assert_array_equal(tokens[0], tokenizer.encode(text)[-7:])
  with pytest.raises(ValueError, match="max_new_tokens=12 leaves no room"):
    encode_prompts(tokenizer, [text], config, max_new_tokens=12)


def test_out_of_vocabulary_characters_use_byte_fallback(tokenizer):
  text = "the fox ∑ 😀 ünïcode"
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no warning: every character is representable
    tokens = encode_prompts(tokenizer, [text], tiny_config(max_len=64))
  assert UNK_ID not in tokens
  assert tokenizer.decode(tokens[0].tolist()) == text


def test_out_of_vocabulary_characters_without_byte_fallback_warn(tmp_path):
  tokenizer = train_tokenizer(tmp_path, byte_fallback=False)
  with pytest.warns(PromptWarning, match=r"prompt 0: characters \['Z', '😀'\]"):
    tokens = encode_prompts(tokenizer, ["the Z fox 😀"], tiny_config())
  assert UNK_ID in tokens


def test_outputs_are_cut_at_eos(tokenizer):
  fox = tokenizer.encode("the fox")
  tokens = np.array([fox + [EOS_ID] + fox, fox + [PAD_ID] * (len(fox) + 1)])
  assert decode_outputs(tokenizer, tokens) == ["the fox", "the fox"]

