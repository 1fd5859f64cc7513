"""A count-based n-gram language model over token ids, with interpolated Kneser-Ney smoothing.

Each sequence is scored like a packed segment of the neural LMs: its tokens are predicted
left to right from a context that starts with BOS (order - 1 BOS tokens of padding), so
the n-gram and neural perplexities on the same token rows measure the same thing.

Interpolated Kneser-Ney (Chen & Goodman, 1998, eq. for interpolated KN with one discount
per order). For context h of n - 1 tokens and its suffix h' (one token shorter):

  P_n(w | h) = max(c(h w) - D_n, 0) / c(h •) + D_n N1+(h •) / c(h •) · P_{n-1}(w | h')

where c are raw counts at the highest order and continuation counts N1+(• h w) (distinct
left extensions) at lower orders, c(h •) = Σ_w c(h w), N1+(h •) = #{w : c(h w) > 0}. A
context never seen (c(h •) = 0) passes P_{n-1} through unchanged; below the unigram is the
uniform 1 / vocab_size. Every level is a proper distribution over the vocabulary, so
Σ_w P(w | h) = 1 for every context. Discounts default to Ney's D = n1 / (n1 + 2 n2) from
the count-of-counts of each level, clipped to [0.05, 0.95].

N-grams are stored as int64 keys (base vocab_size), sorted, and looked up with
`np.searchsorted`, so fitting and scoring are vectorised NumPy: vocab_size ** order must
fit in int64.
"""

import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

from transformer.special_ids import BOS_ID

MIN_DISCOUNT, MAX_DISCOUNT = 0.05, 0.95


@dataclasses.dataclass(frozen=True)
class _Level:
  """The counts of one order k (k-grams: k - 1 context tokens, then the token).

  Attributes:
    keys: int64 [n] sorted k-gram keys; counts: float64 [n] their (raw or continuation) counts.
    contexts: int64 [m] sorted context keys (key // vocab); totals: [m] c(h •);
    distinct: [m] N1+(h •).
    discount: D_k.
  """
  keys: np.ndarray
  counts: np.ndarray
  contexts: np.ndarray
  totals: np.ndarray
  distinct: np.ndarray
  discount: float


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
  """values[i] where sorted_keys[i] == query, else 0; queries int64 [q] -> [q]."""
  if not len(sorted_keys):
    return np.zeros(queries.shape, np.float64)
  index = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
  return np.where(sorted_keys[index] == queries, values[index], 0).astype(np.float64)


def _ney_discount(counts: np.ndarray) -> float:
  """n1 / (n1 + 2 n2) from the count-of-counts, clipped to [MIN_DISCOUNT, MAX_DISCOUNT]."""
  n1, n2 = np.sum(counts == 1), np.sum(counts == 2)
  estimate = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
  return float(np.clip(estimate, MIN_DISCOUNT, MAX_DISCOUNT))


def _make_level(keys: np.ndarray, counts: np.ndarray, vocab_size: int,
                discount: float | None) -> _Level:
  contexts, inverse = np.unique(keys // vocab_size, return_inverse=True)
  totals = np.bincount(inverse, weights=counts, minlength=len(contexts))
  distinct = np.bincount(inverse, minlength=len(contexts)).astype(np.float64)
  return _Level(keys, counts, contexts, totals, distinct,
                _ney_discount(counts) if discount is None else float(discount))


@dataclasses.dataclass(frozen=True)
class NGramModel:
  """A fitted interpolated Kneser-Ney n-gram model; build it with `NGramModel.fit`.

  Attributes:
    order: n (1 = unigram).
    vocab_size: token ids are 0 .. vocab_size - 1; probabilities sum to 1 over them.
    levels: the counts of orders 1 .. n (index k - 1).
  """
  order: int
  vocab_size: int
  levels: tuple[_Level, ...]

  @classmethod
  def fit(cls, sequences: Iterable[Sequence[int]], order: int, vocab_size: int,
          discount: float | None = None) -> "NGramModel":
    """Counts the n-grams of `sequences` (each scored from a BOS-padded start).

    Args:
      sequences: token-id sequences (no BOS; EOS included if it is to be predicted).
      order: n >= 1.
      vocab_size: size of the id space (> every id).
      discount: D in (0, 1] for every order; None: Ney's estimate per order.
    """
    if not isinstance(order, int) or order < 1:
      raise ValueError(f"order must be an int >= 1, got {order!r}")
    if vocab_size < 1 or vocab_size ** order >= 2 ** 63:
      raise ValueError(f"vocab_size ** order must fit in int64, got vocab_size={vocab_size}, "
                       f"order={order}")
    if discount is not None and not 0 < discount <= 1:
      raise ValueError(f"discount must be in (0, 1], got {discount!r}")
    grams = [ngram_keys(np.asarray(s, np.int64), order, vocab_size) for s in sequences]
    keys, counts = np.unique(np.concatenate(grams + [np.zeros(0, np.int64)]), return_counts=True)
    levels = [_make_level(keys, counts.astype(np.float64), vocab_size, discount)]
    for k in range(order - 1, 0, -1):  # continuation counts: distinct left extensions
      keys, counts = np.unique(keys % vocab_size ** k, return_counts=True)
      levels.append(_make_level(keys, counts.astype(np.float64), vocab_size, discount))
    return cls(order, vocab_size, tuple(reversed(levels)))

  def probabilities(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """P(token | context) for a batch.

    Args:
      contexts: int [q, order - 1], the previous tokens (BOS-padded), oldest first.
      tokens: int [q].

    Returns:
      float64 [q].
    """
    contexts = np.asarray(contexts, np.int64).reshape(len(tokens), self.order - 1)
    tokens = np.asarray(tokens, np.int64)
    p = np.full(tokens.shape, 1.0 / self.vocab_size)
    for k, level in enumerate(self.levels, start=1):
      context = np.zeros(tokens.shape, np.int64)
      for column in range(self.order - k, self.order - 1):  # the last k - 1 context tokens
        context = context * self.vocab_size + contexts[:, column]
      totals = _lookup(level.contexts, level.totals, context)
      distinct = _lookup(level.contexts, level.distinct, context)
      counts = _lookup(level.keys, level.counts, context * self.vocab_size + tokens)
      interpolated = ((np.maximum(counts - level.discount, 0.0) + level.discount * distinct * p)
                      / np.maximum(totals, 1.0))
      p = np.where(totals > 0, interpolated, p)
    return p

  def log_prob(self, context: Sequence[int], token: int) -> float:
    """log P(token | context); context: the previous tokens, most recent last (BOS-padded here)."""
    padded = [BOS_ID] * (self.order - 1) + list(context)
    window = padded[len(padded) - (self.order - 1):] if self.order > 1 else []
    return float(np.log(self.probabilities(np.array([window]), np.array([token]))[0]))

  def distribution(self, context: Sequence[int]) -> np.ndarray:
    """float64 [vocab_size]: P(w | context) for every id w (sums to 1)."""
    padded = [BOS_ID] * (self.order - 1) + list(context)
    window = padded[len(padded) - (self.order - 1):] if self.order > 1 else []
    tokens = np.arange(self.vocab_size)
    return self.probabilities(np.tile(np.array(window, np.int64), (self.vocab_size, 1)), tokens)

  def nll(self, sequences: Iterable[Sequence[int]]) -> tuple[float, int]:
    """(summed -log P of every token, token count) with each sequence scored from BOS."""
    total, count = 0.0, 0
    for sequence in sequences:
      sequence = np.asarray(sequence, np.int64)
      if not len(sequence):
        continue
      padded = np.concatenate([np.full(self.order - 1, BOS_ID, np.int64), sequence])
      windows = np.lib.stride_tricks.sliding_window_view(padded, self.order)
      total -= float(np.sum(np.log(self.probabilities(windows[:, :-1], windows[:, -1]))))
      count += len(sequence)
    return total, count

  def perplexity(self, sequences: Iterable[Sequence[int]]) -> float:
    """exp(mean -log P) over every token of `sequences`."""
    total, count = self.nll(sequences)
    if not count:
      raise ValueError("perplexity needs at least one token")
    return math.exp(total / count)


def ngram_keys(sequence: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
  """int64 keys of the `order`-grams ending at each token of a BOS-padded sequence: [len]."""
  padded = np.concatenate([np.full(order - 1, BOS_ID, np.int64), sequence.astype(np.int64)])
  windows = np.lib.stride_tricks.sliding_window_view(padded, order)
  return windows @ (vocab_size ** np.arange(order - 1, -1, -1, dtype=np.int64))
