"""Statistics of a system's sampled responses that need no reference text.

    distinct_bigram_rate(["a b a b", "a b"])       # 2 distinct of 4 bigrams -> 0.5
    copy_share(outputs, codes)                      # share of outputs copied from their code
    token_lengths(tokens), ended(tokens)            # per response, from the sampler's tokens

Words are whitespace-separated for bigrams. For copying, an output's word tokens are its
identifier-like tokens (`[A-Za-z_][A-Za-z0-9_]*`, lower-cased); the code's vocabulary is its
identifiers and their underscore-separated parts (`get_name` gives get_name, get and name).
An output is *copied* when it has at least one word token and at least `COPY_THRESHOLD` (80%)
of them, counted with repetition, are in its code's vocabulary.
"""

import re
from collections.abc import Sequence

import numpy as np

from transformer.special_ids import EOS_ID, PAD_ID

COPY_THRESHOLD = 0.8
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def distinct_bigram_rate(texts: Sequence[str]) -> float:
  """Distinct word bigrams / all word bigrams over `texts` (bigrams within each text; 0 when
  there are none)."""
  bigrams = [tuple(words[i:i + 2]) for words in (t.split() for t in texts)
             for i in range(len(words) - 1)]
  return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def code_vocabulary(code: str) -> set[str]:
  """The lower-cased identifiers of `code` and their underscore-separated parts."""
  identifiers = {w.lower() for w in _WORD.findall(code)}
  return identifiers | {part for w in identifiers for part in w.split("_") if part}


def is_copied(output: str, code: str, threshold: float = COPY_THRESHOLD) -> bool:
  """Whether >= `threshold` of the output's word tokens are in the code's vocabulary."""
  words = [w.lower() for w in _WORD.findall(output)]
  vocabulary = code_vocabulary(code)
  return bool(words) and sum(w in vocabulary for w in words) >= threshold * len(words)


def copy_share(outputs: Sequence[str], codes: Sequence[str],
               threshold: float = COPY_THRESHOLD) -> float:
  """Share of outputs[i] copied (`is_copied`) from codes[i]."""
  if len(outputs) != len(codes):
    raise ValueError(f"{len(outputs)} outputs but {len(codes)} codes")
  return float(np.mean([is_copied(o, c, threshold) for o, c in zip(outputs, codes, strict=True)]))


def token_lengths(tokens: np.ndarray) -> np.ndarray:
  """int [n]: tokens before the first EOS (PAD not counted) of each row of int [n, R]."""
  tokens = np.asarray(tokens)
  before_eos = np.cumsum(tokens == EOS_ID, axis=1) == 0
  return np.sum(before_eos & (tokens != PAD_ID), axis=1)


def ended(tokens: np.ndarray) -> np.ndarray:
  """bool [n]: whether each row of int [n, R] holds an EOS (ended within the budget)."""
  return np.any(np.asarray(tokens) == EOS_ID, axis=1)
