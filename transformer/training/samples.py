"""A few decoded validation examples, printed at the end of training.

`print_samples` takes the decoder as `decode_fn`, so the decoding package's cached greedy
search can replace `uncached_greedy` (which reruns the full model for every new token).
"""

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer.models.config import ModelConfig
from transformer.special_ids import EOS_ID, PAD_ID

DecodeFn = Callable[[nn.Module, ModelConfig, Any, Mapping[str, np.ndarray], int], np.ndarray]
DECODER_ONLY_PROMPT = 8  # tokens of a validation text that prompt a decoder-only model


def uncached_greedy(model: nn.Module, cfg: ModelConfig, params: Any,
                    batch: Mapping[str, np.ndarray], max_length: int) -> np.ndarray:
  """Greedy decoding, int [batch, prompt + max_length]: the prompt, then max_length new tokens.

  Encoder-decoder models decode from `batch['inputs']` with an empty prompt; decoder-only
  models continue the first DECODER_ONLY_PROMPT tokens of `batch['targets']`. Position i of the buffer is filled from the logits at position i.
  """
  size = len(batch["targets"])
  prompt = 0 if cfg.architecture == "encoder_decoder" else min(DECODER_ONLY_PROMPT, batch["targets"].shape[1])
  length = prompt + max_length
  buffer = jnp.zeros((size, length), jnp.int32).at[:, :prompt].set(
      jnp.asarray(batch["targets"][:, :prompt]))
  segmentation = jnp.ones_like(buffer)

  def logits(tokens):
    if cfg.architecture == "encoder_decoder":
      return model.apply({"params": params}, jnp.asarray(batch["inputs"]), tokens,
                         targets_segmentation=segmentation)
    return model.apply({"params": params}, tokens, segmentation)

  def fill(i, tokens):
    return tokens.at[:, i].set(jnp.argmax(logits(tokens)[:, i], axis=-1).astype(jnp.int32))

  return np.asarray(jax.jit(lambda t: jax.lax.fori_loop(prompt, length, fill, t))(buffer))


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


def print_samples(model: nn.Module, cfg: ModelConfig, params: Any, batch: Mapping[str, np.ndarray],
                  tokenizer: Any, count: int, max_length: int,
                  decode_fn: DecodeFn = uncached_greedy, print_fn: Callable[[str], None] = print) -> None:
  """Decodes the first `count` examples of `batch` and prints input, reference and prediction."""
  examples = first_examples(batch, count)
  predictions = decode_fn(model, cfg, params, examples, max_length)
  text = (lambda ids: tokenizer.decode(ids)) if tokenizer is not None else str
  for i, predicted in enumerate(predictions):
    print_fn(f"sample {i + 1}")
    if "inputs" in examples:
      print_fn(f"  input:     {text(until_eos(examples['inputs'][i]))[:300]!r}")
    print_fn(f"  reference: {text(until_eos(examples['targets'][i]))!r}")
    print_fn(f"  predicted: {text(until_eos(predicted))!r}")
