"""Text prompts to token arrays and generated tokens back to text.

How awkward prompts are handled (the same for the generate command and the library):
- empty or whitespace-only prompt: ValueError naming the prompt's index (there is
  nothing to translate or continue; a blank line in a prompts file is an error).
- too long: truncated with a `PromptWarning`. An encoder-decoder keeps the first
  max_len tokens (the encoder's positions); a decoder-only model keeps the last
  max_len - max_new_tokens tokens (the most recent context, leaving room for the
  output; max_new_tokens=None leaves room for one token).
- characters outside the vocabulary: with byte fallback (this project's
  tokenizers) they become byte pieces and round-trip exactly, silently; a
  vocabulary without byte fallback maps them to UNK, with a `PromptWarning`
  listing the characters.
"""

import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from transformer.models.config import ModelConfig
from transformer.models.registry import architecture
from transformer.special_ids import EOS_ID, PAD_ID, UNK_ID


class Tokenizer(Protocol):
  """What decoding needs of a tokenizer (a SentencePieceProcessor or data.tokenizer.Tokenizer)."""

  def encode(self, text: str) -> Sequence[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


class PromptWarning(UserWarning):
  """A prompt was changed to fit the model: truncated, or characters mapped to UNK."""


def encode_prompts(tokenizer: Tokenizer, texts: Sequence[str], config: ModelConfig,
                   max_new_tokens: int | None = None) -> np.ndarray:
  """Tokenizes prompts for `decoding.generate`, applying the rules of the module docstring.

  Args:
    tokenizer: encodes text to ids (no BOS/EOS added).
    texts: the prompts.
    config: the model's config (architecture, max_len).
    max_new_tokens: the tokens to generate (decoder-only: reserved out of max_len).

  Returns:
    int32 [len(texts), longest prompt], right-padded with PAD.
  """
  if not texts:
    raise ValueError("no prompts given")
  if architecture(config.architecture).has_encoder:
    limit, keep = config.max_len, "first"
  else:
    limit, keep = config.max_len - (max_new_tokens or 1), "last"
    if limit < 1:
      raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt "
                       f"(model max_len {config.max_len})")
  rows = []
  for index, text in enumerate(texts):
    if not text.strip():
      raise ValueError(f"prompt {index} is empty")
    ids = [int(i) for i in tokenizer.encode(text)]
    if UNK_ID in ids:
      unknown = sorted({c for c in text if UNK_ID in tokenizer.encode(c)})
      warnings.warn(f"prompt {index}: characters {unknown} are not in the vocabulary and "
                    f"were replaced by <unk>", PromptWarning, stacklevel=2)
    if len(ids) > limit:
      warnings.warn(f"prompt {index} has {len(ids)} tokens, more than the {limit} that fit "
                    f"(model max_len {config.max_len}); keeping the {keep} {limit}",
                    PromptWarning, stacklevel=2)
      ids = ids[:limit] if keep == "first" else ids[-limit:]
    rows.append(ids)
  tokens = np.full((len(rows), max(map(len, rows))), PAD_ID, np.int32)
  for index, ids in enumerate(rows):
    tokens[index, :len(ids)] = ids
  return tokens


def decode_outputs(tokenizer: Tokenizer, tokens: np.ndarray) -> list[str]:
  """Text of each row of generated tokens int [batch, length], up to its first EOS."""
  texts = []
  for row in np.asarray(tokens).tolist():
    row = row[:row.index(EOS_ID)] if EOS_ID in row else row
    texts.append(tokenizer.decode([i for i in row if i != PAD_ID]))
  return texts
