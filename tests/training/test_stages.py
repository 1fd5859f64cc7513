import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.models.config import ModelConfig
from transformer.models.registry import build_model
from transformer.special_ids import PAD_ID
from transformer.training.stages import (
  get_stage,
  likelihood_scores,
  preference_loss,
  summarize_tokens,
  target_weights,
)
from transformer.training.state import init_params


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


def test_likelihood_baseline_is_the_mean_log_pi_of_each_response():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                    num_encoder_layers=0, num_decoder_layers=1, max_len=16, dropout_rate=0.0)
  model = build_model(cfg.eval())
  params = init_params(model, jax.random.PRNGKey(0))
  batch = {"response_0": jnp.array([[5, 6, 7, 1, 0]]), "response_0_weights":
           jnp.array([[0.0, 1.0, 1.0, 1.0, 0.0]]),
           "response_1": jnp.zeros((1, 5), jnp.int32), "response_1_weights": jnp.zeros((1, 5))}
  scores, valid = likelihood_scores(model, params, batch)
  logits = np.asarray(model.apply({"params": params}, batch["response_0"]), np.float64)[0]
  logits[:, PAD_ID] = -np.inf
  log_pi = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
                           ) - logits.max(-1, keepdims=True)
  expected = np.mean([log_pi[i, t] for i, t in ((1, 6), (2, 7), (3, 1))])
  np.testing.assert_allclose(scores[0, 0], expected, rtol=1e-5)
  np.testing.assert_array_equal(valid, [[True, False]])
