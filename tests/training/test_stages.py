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


def numpy_log_pi(model, params, tokens: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """Σ of the weighted tokens' log π per row (NumPy log-softmax over all tokens but PAD)."""
  logits = np.asarray(model.apply({"params": params}, jnp.asarray(tokens)), np.float64)
  logits[..., PAD_ID] = -np.inf
  top = logits.max(-1, keepdims=True)
  log_pi = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_pi, tokens[..., None], axis=-1)[..., 0]
  return np.where(weights > 0, picked, 0.0).sum(-1)


def preference_batch(k: int = 3) -> dict[str, jnp.ndarray]:
  """2 prompts of a decoder-only preference batch, K responses each; element 1 lacks response 2."""
  rng = np.random.default_rng(0)
  batch = {}
  for j in range(k):
    tokens = rng.integers(3, 30, size=(2, 8)).astype(np.int32)
    weights = np.zeros((2, 8), np.float32)
    weights[:, 3:6 + j % 2] = 1.0
    tokens[:, 6 + j % 2:] = PAD_ID
    if j == 2:
      tokens[1], weights[1] = PAD_ID, 0.0
    batch[f"response_{j}"], batch[f"response_{j}_weights"] = tokens, weights
  return batch


@pytest.mark.parametrize("beta, smoothing", [(0.1, 0.0), (0.5, 0.2)])
def test_dpo_loss_equals_numpy_and_is_ln_2_when_policy_equals_reference(beta, smoothing):
  cfg = ModelConfig(architecture="decoder_only", vocab_size=30, d_model=16, num_heads=2, d_ff=32,
                    num_encoder_layers=0, num_decoder_layers=1, max_len=16, dropout_rate=0.0)
  model = build_model(cfg.eval())
  policy, reference = (init_params(model, jax.random.PRNGKey(seed)) for seed in (0, 1))
  batch = preference_batch()
  loss_fn = jax.jit(get_stage("dpo").make_loss(model, 0.0, beta=beta,
                                               dpo_label_smoothing=smoothing))
  same, same_sums = loss_fn(policy, batch, jax.random.PRNGKey(0), {"reference": policy})
  assert float(same_sums["prompts"]) == 2 and float(same_sums["pairs"]) == 3
  np.testing.assert_allclose(float(same) / 2, np.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(float(same_sums["margin"]), 0.0, atol=1e-6)

  objective, sums = loss_fn(policy, batch, jax.random.PRNGKey(0), {"reference": reference})
  logp = {name: np.stack([numpy_log_pi(model, params, np.asarray(batch[f"response_{j}"]),
                                       np.asarray(batch[f"response_{j}_weights"]))
                          for j in range(3)], axis=1)
          for name, params in (("policy", policy), ("reference", reference))}
  z = beta * ((logp["policy"][:, :1] - logp["reference"][:, :1])
              - (logp["policy"][:, 1:] - logp["reference"][:, 1:]))  # [2, 2]
  per_pair = (-(1 - smoothing) * np.log(1 / (1 + np.exp(-z)))
              - smoothing * np.log(1 / (1 + np.exp(z))))
  expected = per_pair[0].mean() + per_pair[1, 0]  # element 1 has one pair
  np.testing.assert_allclose(float(objective), expected, rtol=1e-5)
  on = np.array([[True, True], [True, False]])
  np.testing.assert_allclose(float(sums["margin"]), z[on].sum(), rtol=1e-5)
  assert float(sums["correct"]) == float((z[on] > 0).sum())
  np.testing.assert_allclose(float(sums["chosen_logp"]), logp["policy"][:, 0].sum(), rtol=1e-5)
  summary = get_stage("dpo").summarize(jax.device_get(sums))
  np.testing.assert_allclose(summary["loss"], expected / 2, rtol=1e-5)
  np.testing.assert_allclose(summary["rejected_logp"],
                             logp["policy"][:, 1:][on].mean(), rtol=1e-5)
