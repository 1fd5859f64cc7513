"""The interpolated Kneser-Ney n-gram model: hand-computed probabilities, normalisation,
perplexity."""

import math

import numpy as np
import pytest

from transformer.models.ngram import NGramModel
from transformer.special_ids import BOS_ID

# vocab 6, BOS = 2. Padded sequences [2 4 5 4] and [2 4 4]: bigrams (2,4)x2, (4,5), (5,4), (4,4).
CORPUS = [[4, 5, 4], [4, 4]]


def test_bigram_probabilities_by_hand():
  model = NGramModel.fit(CORPUS, order=2, vocab_size=6, discount=0.5)
  # Unigram level, continuation counts N1+(• w) over the 4 distinct bigrams: 4 -> 3, 5 -> 1;
  # P1(w) = (max(N - 0.5, 0) + 0.5 * 2 distinct * 1/6) / 4.
  p1 = {4: (2.5 + 1 / 6) / 4, 5: (0.5 + 1 / 6) / 4, 0: (1 / 6) / 4}
  # Bigram level, raw counts: context 4 has (4,5) = 1 and (4,4) = 1 (total 2, distinct 2);
  # context BOS has (2,4) = 2 (total 2, distinct 1).
  expected = {
      ((4,), 5): (0.5 + 0.5 * 2 * p1[5]) / 2,
      ((4,), 0): (0.5 * 2 * p1[0]) / 2,
      ((), 4): (1.5 + 0.5 * 1 * p1[4]) / 2,  # empty context = BOS
      ((3,), 4): p1[4],  # unseen context: the unigram level alone
  }
  for (context, token), p in expected.items():
    assert model.log_prob(context, token) == pytest.approx(math.log(p), abs=1e-12)
  assert expected[((4,), 5)] == pytest.approx(1 / 3) and expected[((), 4)] == pytest.approx(11 / 12)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_distributions_sum_to_one(order):
  rng = np.random.default_rng(0)
  corpus = [rng.integers(3, 20, size=rng.integers(1, 30)) for _ in range(40)]
  model = NGramModel.fit(corpus, order=order, vocab_size=20)
  contexts = [[], [BOS_ID], [5], [5, 7, 9], [19, 19, 19], list(corpus[0][:5]), [0, 1]]
  for context in contexts:
    distribution = model.distribution(context)
    assert distribution.shape == (20,) and np.all(distribution > 0)
    assert abs(distribution.sum() - 1.0) < 1e-9, (context, distribution.sum())


def test_unfitted_and_balanced_unigram_models_are_uniform():
  sequences = [[3, 4, 5, 6], [7]]
  assert NGramModel.fit([], order=3, vocab_size=10).perplexity(sequences) == pytest.approx(10.0)
  balanced = NGramModel.fit([list(range(10))], order=1, vocab_size=10)
  assert balanced.perplexity(sequences) == pytest.approx(10.0)


def test_perplexity_is_exp_mean_negative_log_prob():
  model = NGramModel.fit(CORPUS, order=2, vocab_size=6, discount=0.5)
  sequence = [4, 5, 0]
  log_probs = [model.log_prob(sequence[:i], token) for i, token in enumerate(sequence)]
  assert model.perplexity([sequence]) == pytest.approx(math.exp(-np.mean(log_probs)), rel=1e-12)


def test_higher_order_learns_a_deterministic_cycle():
  cycle = [[4, 5, 6, 4, 7, 8] * 20]  # after (4) comes 5 or 7; after (6, 4) always 7
  ppl = {order: NGramModel.fit(cycle, order, vocab_size=10).perplexity(cycle)
         for order in (1, 2, 3)}
  assert ppl[3] < ppl[2] < ppl[1] and ppl[3] < 1.2


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="order"):
    NGramModel.fit(CORPUS, order=0, vocab_size=6)
  with pytest.raises(ValueError, match="discount"):
    NGramModel.fit(CORPUS, order=2, vocab_size=6, discount=1.5)
  with pytest.raises(ValueError, match="vocab_size"):
    NGramModel.fit(CORPUS, order=6, vocab_size=10**4)
