"""Policy objectives against hand computations and NumPy: RLOO and GRPO advantages, the KL
estimates, the shaped reward and the DPO loss."""

import jax.numpy as jnp
import numpy as np
import pytest

from transformer.training.policy_objectives import (
  dpo_loss,
  grpo_advantages,
  kl_k1,
  kl_k3,
  rloo_advantages,
  shaped_rewards,
)

REWARDS = np.array([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5]], np.float32)


def test_rloo_advantages_equal_a_hand_computation_and_sum_to_zero_per_group():
  advantages = np.asarray(rloo_advantages(jnp.asarray(REWARDS)))
  # 1 - (2+3+6)/3, 2 - (1+3+6)/3, 3 - (1+2+6)/3, 6 - (1+2+3)/3
  np.testing.assert_allclose(advantages[0], [1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2], rtol=1e-6)
  np.testing.assert_array_equal(advantages[1], 0.0)  # equal rewards: no signal
  np.testing.assert_allclose(advantages.sum(axis=1), 0.0, atol=1e-6)
  random = np.random.default_rng(0).normal(size=(5, 3))
  np.testing.assert_allclose(np.asarray(rloo_advantages(jnp.asarray(random))).sum(1), 0.0,
                             atol=1e-5)


def test_rloo_needs_two_samples_per_prompt():
  with pytest.raises(ValueError, match="RLOO needs k >= 2 samples per prompt, got 1"):
    rloo_advantages(jnp.ones((3, 1)))


def test_grpo_advantages_equal_a_hand_computation():
  advantages = np.asarray(grpo_advantages(jnp.asarray(REWARDS)))
  # group 0: mean 3, std sqrt((4 + 1 + 0 + 9) / 4) = sqrt(3.5)
  np.testing.assert_allclose(advantages[0], np.array([-2, -1, 0, 3]) / (np.sqrt(3.5) + 1e-6),
                             rtol=1e-6)
  np.testing.assert_array_equal(advantages[1], 0.0)
  np.testing.assert_allclose(advantages.mean(axis=1), 0.0, atol=1e-6)
  unscaled = np.asarray(grpo_advantages(jnp.asarray(REWARDS), scale=False))
  np.testing.assert_allclose(unscaled[0], [-2, -1, 0, 3], rtol=1e-6)


def test_kl_estimates_are_zero_when_policy_equals_reference():
  logprobs = jnp.asarray(np.log(np.random.default_rng(1).uniform(0.05, 1.0, size=(3, 6))))
  np.testing.assert_array_equal(kl_k1(logprobs, logprobs), 0.0)
  np.testing.assert_array_equal(kl_k3(logprobs, logprobs), 0.0)


def test_kl_estimates_against_numpy():
  rng = np.random.default_rng(2)
  policy, reference = (np.log(rng.uniform(0.05, 1.0, size=(2, 5))) for _ in range(2))
  policy[:, 3:] = reference[:, 3:] = 0.0  # padding: 0 in both
  np.testing.assert_allclose(kl_k1(jnp.asarray(policy), jnp.asarray(reference)),
                             (policy - reference).sum(1), rtol=1e-5)
  d = reference - policy
  k3 = np.asarray(kl_k3(jnp.asarray(policy), jnp.asarray(reference)))
  np.testing.assert_allclose(k3, np.exp(d) - d - 1, rtol=1e-5, atol=1e-7)
  assert np.all(k3 >= 0) and np.all(k3[:, 3:] == 0)


def test_k3_is_an_unbiased_estimate_of_the_kl():
  """E_{y~π}[k3] = KL(π ‖ π_ref) for a categorical π: the expectation taken exactly."""
  pi, ref = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
  expected_k3 = np.sum(pi * np.asarray(kl_k3(jnp.asarray(np.log(pi)), jnp.asarray(np.log(ref)))))
  np.testing.assert_allclose(expected_k3, np.sum(pi * np.log(pi / ref)), rtol=1e-5)


def test_shaped_rewards_subtract_the_kl_and_the_missing_eos_penalty():
  rewards = shaped_rewards(jnp.array([1.0, 1.0, 2.0]), jnp.array([0.5, 2.0, 0.0]),
                           jnp.array([True, True, False]), beta=0.1, eos_penalty=1.0)
  np.testing.assert_allclose(rewards, [1.0 - 0.05, 1.0 - 0.2, 2.0 - 1.0], rtol=1e-6)


def numpy_dpo(pc, pr, rc, rr, beta, eps):
  z = beta * ((pc - rc) - (pr - rr))
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
  return -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z), z


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_dpo_loss_is_ln_2_when_policy_equals_reference(label_smoothing):
  chosen, rejected = jnp.array([-3.0, -10.0]), jnp.array([-5.0, -1.0])
  loss, margin = dpo_loss(chosen, rejected, chosen, rejected, beta=0.1,
                          label_smoothing=label_smoothing)
  np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
  np.testing.assert_array_equal(margin, 0.0)


@pytest.mark.parametrize("beta, label_smoothing", [(0.1, 0.0), (0.5, 0.0), (0.5, 0.2)])
def test_dpo_loss_equals_the_numpy_formula(beta, label_smoothing):
  rng = np.random.default_rng(3)
  pc, pr, rc, rr = (rng.uniform(-30, -1, size=6) for _ in range(4))
  loss, margin = dpo_loss(*(jnp.asarray(x, jnp.float32) for x in (pc, pr, rc, rr)), beta=beta,
                          label_smoothing=label_smoothing)
  expected_loss, expected_margin = numpy_dpo(pc, pr, rc, rr, beta, label_smoothing)
  np.testing.assert_allclose(margin, expected_margin, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-6)
