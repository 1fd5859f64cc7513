import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.training.stages import (
  get_stage,
  preference_loss,
  summarize_tokens,
  target_weights,
)


def test_finetune_scores_only_weighted_targets():
  batch = {"targets": jnp.array([[5, 6, 7, 0]]), "targets_segmentation": jnp.array([[1, 1, 1, 0]]),
           "targets_weights": jnp.array([[0.0, 1.0, 1.0, 0.0]])}
  np.testing.assert_array_equal(target_weights(batch), [[0, 1, 1, 0]])
  del batch["targets_weights"]
  np.testing.assert_array_equal(target_weights(batch), [[1, 1, 1, 0]])


def test_reward_summary_from_sums():
  scores = jnp.array([[2.0, 0.0], [0.0, 1.0]])
  _, sums = preference_loss(scores, jnp.ones((2, 2), bool))
  summary = get_stage("reward").summarize(jax.device_get(sums))
  assert summary["accuracy"] == 0.5 and summary["pairs"] == 2
  np.testing.assert_allclose(summary["loss"], (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(1.0))) / 2,
                             rtol=1e-6)


def test_token_summary_divides_sums_on_the_host():
  summary = summarize_tokens({"loss": 6.0, "nll": 4.0, "correct": 1.0, "tokens": 2.0})
  assert summary["loss"] == 3.0 and summary["accuracy"] == 0.5
  np.testing.assert_allclose(summary["perplexity"], np.exp(2.0))


def test_unknown_stage_is_named():
  with pytest.raises(ValueError, match="unknown stage 'distill'"):
    get_stage("distill")
