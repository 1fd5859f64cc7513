"""Seq2seq evaluation: decodes batches and reports BLEU (with signature) and exact match, skipping
filler rows."""

import numpy as np
import sacrebleu

from tests.decoding.conftest import init_params, tiny_config
from tests.decoding.test_prompts import train_tokenizer
from transformer.decoding import evaluation
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


def test_bleu_and_exact_match_of_known_outputs_skip_filler_rows(tmp_path, monkeypatch):
  """Generation replaced by known outputs: the scores are sacreBLEU's on the detokenized texts."""
  tokenizer = train_tokenizer(tmp_path, byte_fallback=True)
  config = tiny_config(vocab_size=tokenizer.get_piece_size())
  references = ["the quick brown fox jumps over the lazy dog", "print the sum of two numbers",
                "def add(a, b): return a + b"]
  hypotheses = [references[0], "print the sum of three numbers", references[2]]  # row 1 changed
  inputs = encode_prompts(tokenizer, ["a b c", "d e f", "g h i", "j"], config)
  inputs[3] = 0  # the all-PAD filler row that ends an eval batch
  targets = np.zeros((4, 64), np.int32)
  outputs = np.zeros((4, 64), np.int32)
  for row, (reference, hypothesis) in enumerate(zip(references, hypotheses)):
    for array, text in ((targets, reference), (outputs, hypothesis)):
      ids = list(tokenizer.encode(text)) + [EOS_ID]
      array[row, :len(ids)] = ids
  outputs[3, :3] = tokenizer.encode("garbage")[:1] * 3  # what a model makes of a filler row
  calls = []

  def known_outputs(config_, params, prompts, **kwargs):
    calls.append(kwargs)
    np.testing.assert_array_equal(prompts, inputs)
    return outputs

  monkeypatch.setattr(evaluation, "generate", known_outputs)
  result = evaluate_seq2seq(config, None, tokenizer, [{"inputs": inputs, "targets": targets}],
                            method="greedy", max_new_tokens=16)
  assert calls == [{"method": "greedy", "max_new_tokens": 16}]
  assert result["examples"] == 3
  assert result["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
  assert 0.0 < result["bleu"] < 100.0
  assert result["exact_match"] == 2 / 3
  assert result["samples"] == [("a b c", hypotheses[0], references[0]),
                               ("d e f", hypotheses[1], references[1]),
                               ("g h i", hypotheses[2], references[2])]
  assert all(type(text) is str for sample in result["samples"] for text in sample)
