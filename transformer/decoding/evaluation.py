"""Seq2seq evaluation (the train loop, `transformer.evaluate`): decode batches, score BLEU, chrF and
exact match."""

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from transformer.decoding.generation import generate
from transformer.decoding.metrics import bleu, chrf, exact_match
from transformer.decoding.prompts import Tokenizer, decode_outputs
from transformer.models.config import ModelConfig


def evaluate_seq2seq(config: ModelConfig, params: Any, tokenizer: Tokenizer,
                     batches: Iterable[Mapping[str, np.ndarray]],
                     **generate_kwargs: Any) -> dict[str, Any]:
  """Decodes every batch's inputs and scores the outputs against its targets.

  Args:
    config: the model's config (an encoder-decoder: inputs go to the encoder).
    params: the model's params.
    tokenizer: turns targets and outputs into text.
    batches: dicts with 'inputs' int [batch, input_len] and 'targets' int [batch, target_len]
      (PAD-padded, targets ending in EOS), e.g. the seq2seq task's eval batches; rows whose
      targets are all PAD (filler) are skipped.
    **generate_kwargs: method, beam_size, alpha, max_new_tokens, ... for `decoding.generate`.

  Returns:
    {'bleu': float, 'bleu_signature': str, 'chrf': float, 'chrf_signature': str,
     'exact_match': float, 'examples': int,
     'samples': the first three (input, output, reference) text triples}.
  """
  inputs, hypotheses, references = [], [], []
  for batch in batches:
    real = np.asarray(batch["targets"]).any(axis=1)  # eval batches end with all-PAD filler rows
    outputs = np.asarray(generate(config, params, batch["inputs"], **generate_kwargs))[real]
    hypotheses += decode_outputs(tokenizer, outputs)
    references += decode_outputs(tokenizer, np.asarray(batch["targets"])[real])
    inputs += decode_outputs(tokenizer, np.asarray(batch["inputs"])[real])
  score, signature = bleu(hypotheses, references)
  chrf_score, chrf_signature = chrf(hypotheses, references)
  return {"bleu": score, "bleu_signature": signature, "chrf": chrf_score,
          "chrf_signature": chrf_signature,
          "exact_match": exact_match(hypotheses, references), "examples": len(hypotheses),
          "samples": list(zip(inputs, hypotheses, references))[:3]}
