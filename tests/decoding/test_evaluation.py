"""Seq2seq evaluation: decodes batches and reports BLEU (with signature) and exact match."""

import numpy as np

from tests.decoding.conftest import init_params, tiny_config
from tests.decoding.test_prompts import train_tokenizer
from transformer.decoding.evaluation import evaluate_seq2seq
from transformer.decoding.prompts import encode_prompts
from transformer.special_ids import EOS_ID


def test_evaluate_seq2seq(tmp_path):
  tokenizer = train_tokenizer(tmp_path, byte_fallback=True)
  config = tiny_config(vocab_size=tokenizer.get_piece_size())
  texts = ["the fox", "a b c", "print the sum"]
  inputs = encode_prompts(tokenizer, texts, config)
  targets = np.concatenate([inputs, np.zeros((3, 1), np.int32)], axis=1)
  targets[np.arange(3), (inputs != 0).sum(1)] = EOS_ID
  result = evaluate_seq2seq(config, init_params(config), tokenizer,
                            [{"inputs": inputs, "targets": targets}], max_new_tokens=4)
  assert result["examples"] == 3 and 0.0 <= result["exact_match"] <= 1.0
  assert 0.0 <= result["bleu"] <= 100.0 and "tok:13a" in result["bleu_signature"]
  assert [reference for _, _, reference in result["samples"]] == texts
