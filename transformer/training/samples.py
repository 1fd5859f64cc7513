"""A few decoded validation examples, printed at the end of training.

`print_samples` takes the decoder as `decode_fn`; the default, `decode_greedily`, runs the
decoding package's cached greedy search.
"""

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from transformer.decoding import generate
from transformer.models.config import ModelConfig
from transformer.models.registry import architecture
from transformer.special_ids import EOS_ID, PAD_ID
from transformer.training.config import DECODER_ONLY_PROMPT

DecodeFn = Callable[[ModelConfig, Any, Mapping[str, np.ndarray], int], np.ndarray]


def decode_greedily(cfg: ModelConfig, params: Any, batch: Mapping[str, np.ndarray],
                    max_length: int) -> np.ndarray:
  """Greedy outputs, int [batch, <= max_length]: from `inputs` (a model with an encoder), or
  continuing the first DECODER_ONLY_PROMPT tokens of `targets` (a model without)."""
  prompts = (batch["inputs"] if architecture(cfg.architecture).has_encoder
             else batch["targets"][:, :DECODER_ONLY_PROMPT])
  return np.asarray(generate(cfg, params, prompts, method="greedy", max_new_tokens=max_length))


def until_eos(ids: np.ndarray) -> list[int]:
  """The ids before the first EOS, without padding."""
  ids = [int(i) for i in ids]
  ids = ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids
  return [i for i in ids if i != PAD_ID]


def first_examples(batch: Mapping[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
  """The first `count` examples of a batch, one per row, unpacked (first segment of each row)."""
  out = {}
  for name in ("inputs", "targets"):
    if name in batch:
      rows = np.asarray(batch[name][:count])
      segmentation = np.asarray(batch.get(f"{name}_segmentation", rows != PAD_ID)[:count])
      out[name] = np.where(segmentation == 1, rows, PAD_ID).astype(np.int32)
  return out


def print_samples(cfg: ModelConfig, params: Any, batch: Mapping[str, np.ndarray], tokenizer: Any,
                  count: int, max_length: int, decode_fn: DecodeFn = decode_greedily,
                  print_fn: Callable[[str], None] = print) -> None:
  """Decodes the first `count` examples of `batch` and prints input, reference and prediction."""
  examples = first_examples(batch, count)
  predictions = decode_fn(cfg, params, examples, max_length)
  text = (lambda ids: tokenizer.decode(ids)) if tokenizer is not None else str
  for i, predicted in enumerate(predictions):
    print_fn(f"sample {i + 1}")
    if "inputs" in examples:
      print_fn(f"  input:     {text(until_eos(examples['inputs'][i]))[:300]!r}")
    print_fn(f"  reference: {text(until_eos(examples['targets'][i]))!r}")
    print_fn(f"  predicted: {text(until_eos(predicted))!r}")
