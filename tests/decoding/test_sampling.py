"""Sampling: top-k = 1 is greedy, top-p against a numpy reference, seeds reproduce samples, and the
draws follow softmax(logits / temperature) after the filters (chi-square over 20,000 draws); the
log-probabilities returned with the samples are the teacher-forced log π of the same tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding.conftest import init_params, tiny_config
from transformer.decoding import generate
from transformer.decoding.sampling import sampler, top_k_filter, top_p_filter
from transformer.models.logprobs import sequence_logprobs
from transformer.models.registry import build_model
from transformer.special_ids import PAD_ID

PROMPTS = jnp.array([[5, 6, 7, 8, 9], [10, 11, 0, 0, 0]], jnp.int32)


def numpy_top_p(logits: np.ndarray, p: float) -> np.ndarray:
  """Reference nucleus: the smallest prefix of tokens by probability whose sum reaches p."""
  probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  order = np.argsort(-probs)
  count = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)
  kept = np.zeros(len(logits), bool)
  kept[order[:min(count, len(logits))]] = True
  return kept


def test_top_p_keeps_the_smallest_set_reaching_p():
  logits = np.random.default_rng(0).normal(size=(5, 30)).astype(np.float32) * 2
  for p in (0.05, 0.3, 0.5, 0.9, 0.99, 1.0):
    kept = np.isfinite(np.asarray(top_p_filter(jnp.asarray(logits), p)))
    for row in range(len(logits)):
      np.testing.assert_array_equal(kept[row], numpy_top_p(logits[row], p), err_msg=f"p={p}")


def test_top_k_keeps_the_k_largest():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 20)), jnp.float32)
  kept = np.isfinite(np.asarray(top_k_filter(logits, 4)))
  np.testing.assert_array_equal(kept.sum(axis=1), 4)
  assert np.all(np.asarray(logits)[kept].reshape(3, 4).min(1) >=
                np.where(kept, -np.inf, np.asarray(logits)).max(1))


@pytest.fixture(scope="module", params=["encoder_decoder", "decoder_only"])
def model(request):
  config = tiny_config(request.param, tie_output_embedding=False, position_encoding="rope")
  return config, init_params(config, seed=2)


def test_top_k_1_equals_greedy(model):
  config, params = model
  greedy = generate(config, params, PROMPTS, method="greedy", max_new_tokens=8)
  sampled = generate(config, params, PROMPTS, method="sample", top_k=1, temperature=2.0,
                     max_new_tokens=8, rng=jax.random.key(3))
  np.testing.assert_array_equal(sampled, greedy)


def test_same_seed_same_samples(model):
  config, params = model
  sample = lambda seed: np.asarray(generate(
      config, params, PROMPTS, method="sample", top_p=0.95, temperature=1.5, max_new_tokens=8,
      rng=jax.random.key(seed)))
  first = sample(7)
  np.testing.assert_array_equal(sample(7), first)
  assert any(not np.array_equal(sample(seed), first) for seed in (8, 9))


# chi-square critical values at p = 0.001 by degrees of freedom (scipy.stats.chi2.ppf(0.999, df)).
CHI2_CRITICAL = {1: 10.828, 2: 13.816, 5: 20.515, 38: 70.703}


def chi_square(samples: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
  """(Pearson's statistic of the sample counts against probabilities `expected`, degrees of
  freedom).

  Tokens of probability 0 must never be drawn; they add no degree of freedom."""
  counts = np.bincount(np.asarray(samples), minlength=len(expected))
  support = expected > 0
  assert counts[~support].sum() == 0, "drew a token of probability 0"
  n = counts.sum()
  statistic = float(np.sum((counts[support] - n * expected[support]) ** 2
                           / (n * expected[support])))
  return statistic, int(support.sum()) - 1


def softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - np.max(x[np.isfinite(x)]))
  return e / e.sum()


PROBS = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
DRAWS = 20_000


@pytest.mark.parametrize("temperature, top_k, top_p, kept", [
    (1.0, 0, 1.0, 6), (0.5, 0, 1.0, 6), (2.0, 0, 1.0, 6),
    (1.0, 3, 1.0, 3),  # the 3 most likely tokens, renormalized
    (2.0, 0, 0.6, 3),  # the nucleus at temperature 2: tempered 0.28 + 0.22 + 0.17 >= 0.6
])
def test_sampler_draws_from_the_tempered_filtered_distribution(temperature, top_k, top_p, kept):
  log_probs = jnp.asarray(np.broadcast_to(np.log(PROBS), (DRAWS, len(PROBS))), jnp.float32)
  draws = np.asarray(sampler(temperature, top_k, top_p)(log_probs, jax.random.key(0)))
  tempered = softmax(np.log(PROBS) / temperature)
  order = np.argsort(-tempered)
  expected = np.zeros_like(tempered)
  if top_p < 1.0:  # the smallest most-likely set whose tempered probability reaches top_p
    kept_count = int(np.searchsorted(np.cumsum(tempered[order]), top_p) + 1)
  else:
    kept_count = top_k or len(PROBS)
  assert kept_count == kept
  expected[order[:kept_count]] = tempered[order[:kept_count]]
  expected /= expected.sum()
  statistic, dof = chi_square(draws, expected)
  assert statistic < CHI2_CRITICAL[dof], (statistic, dof)
  if kept_count == len(PROBS) and temperature != 1.0:  # the untempered distribution is rejected
    assert chi_square(draws, PROBS)[0] > 10 * CHI2_CRITICAL[dof]


def test_generate_samples_the_models_next_token_distribution_at_the_temperature():
  config = tiny_config("decoder_only")
  params = init_params(config, seed=1, scale=3.0)  # peaked logits: temperatures differ visibly
  prompt = [5, 6, 7]
  logits = build_model(config.eval()).apply({"params": params},
                                            jnp.array([prompt + [4]]))[0, len(prompt)]
  logits = np.asarray(logits, np.float64)
  logits[PAD_ID] = -np.inf  # generation never emits PAD
  prompts = jnp.asarray(np.tile(prompt, (DRAWS, 1)), jnp.int32)
  for temperature in (0.7, 1.5):
    first = np.asarray(generate(config, params, prompts, method="sample", temperature=temperature,
                                max_new_tokens=1, rng=jax.random.key(11)))[:, 0]
    statistic, dof = chi_square(first, softmax(logits / temperature))
    assert statistic < CHI2_CRITICAL[dof], (temperature, statistic)
    other = 1.5 if temperature == 0.7 else 0.7
    assert chi_square(first, softmax(logits / other))[0] > 10 * CHI2_CRITICAL[dof]


@pytest.mark.parametrize("method, temperature, top_k, top_p", [
    ("sample", 1.0, 0, 1.0), ("sample", 0.7, 0, 1.0), ("sample", 1.5, 5, 0.9),
    ("greedy", 1.0, 0, 1.0)])
def test_returned_log_probs_equal_teacher_forced_sequence_logprobs(model, method, temperature,
                                                                   top_k, top_p):
  """The log π the sampler returns with its tokens is the model's own (untempered, unfiltered),
  the teacher-forced `sequence_logprobs` of the same tokens."""
  config, params = model
  tokens, log_probs = generate(config, params, PROMPTS, method=method, temperature=temperature,
                               top_k=top_k, top_p=top_p, max_new_tokens=8,
                               rng=jax.random.key(5), with_log_probs=True)
  assert log_probs.shape == tokens.shape and log_probs.dtype == jnp.float32
  assert np.all(np.asarray(log_probs)[np.asarray(tokens) == PAD_ID] == 0.0)
  per_token, total = sequence_logprobs(build_model(config.eval()), params, PROMPTS, tokens)
  np.testing.assert_allclose(log_probs, per_token, atol=1e-5)
  np.testing.assert_allclose(np.sum(log_probs, axis=1), total, atol=1e-5)
  assert np.all(np.asarray(log_probs)[np.asarray(tokens) != PAD_ID] < 0)


def test_beam_search_has_no_per_token_log_probs(model):
  config, params = model
  with pytest.raises(ValueError, match="with_log_probs is for method='greedy' or 'sample'"):
    generate(config, params, PROMPTS, method="beam", max_new_tokens=4, with_log_probs=True)


def test_num_samples_draws_as_the_prompts_repeated(model):
  """k samples per prompt (each prompt encoded once) are the draws of the prompts repeated k
  times, row prompt * k + j, with the same log π; and they differ from one another."""
  config, params = model
  kwargs = dict(method="sample", max_new_tokens=8, rng=jax.random.key(3), with_log_probs=True)
  tokens, log_probs = generate(config, params, PROMPTS, num_samples=3, **kwargs)
  expected_tokens, expected_log_probs = generate(config, params, jnp.repeat(PROMPTS, 3, axis=0),
                                                 **kwargs)
  assert tokens.shape == (6, 8)
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(log_probs, expected_log_probs, atol=1e-5)
  assert len({tuple(row) for row in np.asarray(tokens)[:3]}) > 1
  with pytest.raises(ValueError, match="num_samples must be >= 1, and 1 unless method='sample'"):
    generate(config, params, PROMPTS, method="greedy", num_samples=2)
