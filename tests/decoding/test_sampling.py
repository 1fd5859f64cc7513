"""Sampling: top-k = 1 is greedy, top-p against a numpy reference, seeds reproduce samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding.conftest import init_params, tiny_config
from transformer.decoding import generate
from transformer.decoding.sampling import top_k_filter, top_p_filter

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
  return config, init_params(config, seed=1)


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
