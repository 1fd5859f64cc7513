import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.training.stages import get_stage, pairwise_loss, summarize_tokens, target_weights


def test_finetune_scores_only_weighted_targets():
  batch = {"targets": jnp.array([[5, 6, 7, 0]]), "targets_segmentation": jnp.array([[1, 1, 1, 0]]),
           "targets_weights": jnp.array([[0.0, 1.0, 1.0, 0.0]])}
  np.testing.assert_array_equal(target_weights(batch), [[0, 1, 1, 0]])
  del batch["targets_weights"]
  np.testing.assert_array_equal(target_weights(batch), [[1, 1, 1, 0]])


def test_pairwise_loss_and_accuracy_from_scores():
  # keyed by the first token of each sequence
  scores = {1: jnp.array([2.0, 0.0]), 2: jnp.array([0.0, 1.0])}
  score_fn = lambda params, tokens, weights, rng: scores[int(tokens[0, 0])]
  batch = {"chosen": jnp.ones((2, 3), jnp.int32), "rejected": 2 * jnp.ones((2, 3), jnp.int32),
           "chosen_weights": jnp.ones((2, 3)), "rejected_weights": jnp.ones((2, 3))}
  objective, sums = pairwise_loss(score_fn)(None, batch, jax.random.PRNGKey(0))
  expected = np.log1p(np.exp(-2.0)) + np.log1p(np.exp(1.0))
  np.testing.assert_allclose(objective, expected, rtol=1e-6)
  assert get_stage("reward").summarize(jax.device_get(sums))["accuracy"] == 0.5


def test_token_summary_divides_sums_on_the_host():
  summary = summarize_tokens({"loss": 6.0, "nll": 4.0, "correct": 1.0, "tokens": 2.0})
  assert summary["loss"] == 3.0 and summary["accuracy"] == 0.5
  np.testing.assert_allclose(summary["perplexity"], np.exp(2.0))


def test_unknown_stage_is_named():
  with pytest.raises(ValueError, match="unknown stage 'distill'"):
    get_stage("distill")
