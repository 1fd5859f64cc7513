"""The pure objectives that optimise a policy π against a frozen reference π_ref.

Every input is a log-probability from `models.logprobs` (log π of response tokens, 0 on
padding) or a reward; nothing here calls a model. Notation: a group is the k responses
sampled for one prompt, laid out as a row of a [groups, k] array.

- KL estimates of KL(π ‖ π_ref) on samples of π, with d_t = log π_ref(y_t) - log π(y_t):
  k1 = Σ_t -d_t (the log-ratio summed over a response: the reward-shaping KL of RLHF) and
  k3_t = exp(d_t) - d_t - 1 per token (Schulman's low-variance estimator, >= 0; GRPO's loss);
  both are 0 where π = π_ref, and padding (d = 0) adds nothing.
- `shaped_rewards`: the reward a policy step maximises, r = RM - β k1 - penalty · [no EOS].
- Advantages (critic-free; the group is the baseline):
  RLOO (Ahmadian et al. 2024): A_i = r_i - mean_{j≠i} r_j (k >= 2), which sum to 0 per group;
  GRPO (Shao et al. 2024): A_i = (r_i - mean r) / (std r + ε) (std over the group, ddof 0),
  or r_i - mean r without the scaling (Dr. GRPO).
- `clipped_surrogate` (PPO's clipped importance ratio, per token): -min(ρ A, clip(ρ, 1 ± ε) A)
  with ρ = π / π_old; at π = π_old its gradient is -A ∇log π (REINFORCE), and from a second
  update on the same samples the clip bounds how far one batch moves the policy.
- `dpo_loss` (Rafailov et al. 2023), offline on preference pairs: with
  z = β((log π(y⁺) - log π_ref(y⁺)) - (log π(y⁻) - log π_ref(y⁻))), the loss is -log σ(z), or
  with conservative label smoothing ε (the label flipped with probability ε):
  -(1 - ε) log σ(z) - ε log σ(-z). At π = π_ref it is ln 2 for every ε.
"""

import jax
import jax.numpy as jnp


def kl_k1(policy_logprobs: jnp.ndarray, reference_logprobs: jnp.ndarray) -> jnp.ndarray:
  """Σ_t (log π - log π_ref): float32 [...] from per-token log-probabilities [..., T]."""
  return jnp.sum(policy_logprobs - reference_logprobs, axis=-1).astype(jnp.float32)


def kl_k3(policy_logprobs: jnp.ndarray, reference_logprobs: jnp.ndarray) -> jnp.ndarray:
  """Per token exp(d) - d - 1 with d = log π_ref - log π: float32 [..., T], >= 0."""
  d = (reference_logprobs - policy_logprobs).astype(jnp.float32)
  return jnp.exp(d) - d - 1.0


def shaped_rewards(scores: jnp.ndarray, kl: jnp.ndarray, ended: jnp.ndarray, *, beta: float,
                   eos_penalty: float) -> jnp.ndarray:
  """The reward of each sample: RM score - β KL - eos_penalty where no EOS was emitted.

  Args:
    scores: float [...], the reward model's scores (bias applied).
    kl: float [...], each sample's KL estimate (`kl_k1`).
    ended: bool [...], the sample emitted EOS.
    beta: the KL coefficient β >= 0.
    eos_penalty: subtracted from a sample that never ended (>= 0).

  Returns:
    float32 [...].
  """
  penalty = jnp.where(ended, 0.0, eos_penalty)
  return (scores - beta * kl - penalty).astype(jnp.float32)


def rloo_advantages(rewards: jnp.ndarray) -> jnp.ndarray:
  """Leave-one-out advantages: float [groups, k] -> float32 [groups, k], r_i minus the mean
  of the other k - 1 rewards of its group; ValueError if k < 2 (no other sample)."""
  k = rewards.shape[-1]
  if k < 2:
    raise ValueError(f"RLOO needs k >= 2 samples per prompt, got {k}")
  rewards = rewards.astype(jnp.float32)
  others = (jnp.sum(rewards, axis=-1, keepdims=True) - rewards) / (k - 1)
  return rewards - others


def grpo_advantages(rewards: jnp.ndarray, *, scale: bool = True,
                    eps: float = 1e-6) -> jnp.ndarray:
  """Group-normalised advantages: float [groups, k] -> float32 [groups, k].

  (r_i - mean) / (std + eps) with the group's mean and standard deviation (ddof 0); without
  `scale`, r_i - mean (Dr. GRPO: no difficulty bias from the std).
  """
  rewards = rewards.astype(jnp.float32)
  centred = rewards - jnp.mean(rewards, axis=-1, keepdims=True)
  if not scale:
    return centred
  return centred / (jnp.std(rewards, axis=-1, keepdims=True) + eps)


def clipped_surrogate(logprobs: jnp.ndarray, old_logprobs: jnp.ndarray, advantages: jnp.ndarray,
                      *, epsilon: float) -> jnp.ndarray:
  """-min(ρ A, clip(ρ, 1 - ε, 1 + ε) A), ρ = exp(log π - log π_old): float32 [..., T].

  Args:
    logprobs: float [..., T], log π of the sampled tokens under the params being trained.
    old_logprobs: float [..., T], their log π under the params that sampled them.
    advantages: float, broadcastable to [..., T] (a sample's advantage on each of its tokens).
    epsilon: ε > 0.
  """
  ratio = jnp.exp((logprobs - old_logprobs).astype(jnp.float32))
  clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
  return -jnp.minimum(ratio * advantages, clipped * advantages)


def dpo_loss(policy_chosen: jnp.ndarray, policy_rejected: jnp.ndarray,
             reference_chosen: jnp.ndarray, reference_rejected: jnp.ndarray, *, beta: float,
             label_smoothing: float = 0.0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """DPO's loss of preference pairs, from summed response log-probabilities.

  Args:
    policy_chosen, policy_rejected: float [...], log π of the preferred and the other response.
    reference_chosen, reference_rejected: float [...], the same under π_ref.
    beta: β > 0, applied once to the log-ratio difference.
    label_smoothing: ε in [0, 0.5), the assumed probability that a label is flipped (cDPO).

  Returns:
    (loss float32 [...], margin z float32 [...]: the implicit reward of the chosen response,
    β(log π - log π_ref), minus that of the rejected one).
  """
  chosen = policy_chosen - reference_chosen
  rejected = policy_rejected - reference_rejected
  z = (beta * (chosen - rejected)).astype(jnp.float32)
  loss = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
  return loss, z
