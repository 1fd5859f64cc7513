"""The policy stage: online RLOO or GRPO of the fine-tuned policy against a reward model.

One train step (`step.make_train_step` with this stage's rollout), all inside the one jitted
(or pmapped) step, so it runs on every layout as the other stages do:
  1. `rollout` (no gradient, the step's current params): each prompt of the batch sampled
     k = `samples_per_prompt` times with the KV-cached sampler (`decoding.generate`,
     temperature T, up to `max_new_tokens`); the sampler's log π of each token; log π_ref of
     the frozen reference (`TrainState.frozen['reference']`, the fine-tuned params); the
     reward model's score (`frozen['reward']`, loaded from `config.policy.reward_workdir`,
     its bias subtracted); the reward and the advantages (`policy_objectives`):
       rloo: r = score - β Σ_t (log π - log π_ref) - eos_penalty [no EOS] (the KL as reward
             shaping, detached), A_i = r_i - mean of the other k - 1 of its prompt;
       grpo: r = score - eos_penalty [no EOS], A_i = (r_i - mean) / (std + ε) in its group,
             and β k3 per token in the loss instead.
  2. `updates_per_batch` gradient steps of `policy_loss` on that rollout: per sample the
     clipped surrogate -min(ρ_t A, clip(ρ_t, 1 ± ε) A) with ρ_t = π(y_t) / π_old(y_t),
     summed over the response tokens (rloo; at the first update ρ = 1 and this is
     REINFORCE, -A ∇ Σ_t log π) or averaged over them with + β k3_t (grpo).
The k samples of a prompt stay on the device of their prompt (the batch is split by prompt),
so the group baselines need no collective. Under pmap each device folds its index into the
sampling key (its own draws); under jit the draws do not depend on the layout.

Dropout is off (the policy, reference and reward model are the eval variants). log π is the
model's own untempered distribution (`models/logprobs.py`): at T = 1 (the default) the samples
are on-policy; at T != 1 they come from π_T and the estimate is that of the tempered sampler.

Prompts come from a preference batch (`data/tasks.py`: preference, preference_seq2seq): the
encoder inputs, or the unweighted tokens of `response_0` (decoder-only). A row without
weights (a filler row) samples but counts nowhere.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer.decoding.generation import generate
from transformer.models.logprobs import joined_sequences, sequence_logprobs
from transformer.models.reward import score_at_eos
from transformer.special_ids import EOS_ID, PAD_ID
from transformer.training.policy_objectives import (
  clipped_surrogate,
  grpo_advantages,
  kl_k1,
  kl_k3,
  rloo_advantages,
  shaped_rewards,
)
from transformer.training.state import boxed_params, init_params

Batch = Mapping[str, jnp.ndarray]
REFERENCE, REWARD = "reference", "reward"  # keys of TrainState.frozen (dpo has the first)


@dataclasses.dataclass(frozen=True)
class PolicySettings:
  """The policy stage's options (`config.policy`).

  Attributes:
    algorithm: 'rloo' | 'grpo'.
    samples_per_prompt: k >= 2.
    beta: the KL coefficient β (rloo: reward shaping; grpo: the k3 term of the loss).
    eos_penalty: subtracted from the reward of a sample that never emits EOS.
    temperature, max_new_tokens: the sampler's.
    clip_epsilon: ε of the clipped importance ratio (matters from the second update on).
  """
  algorithm: str
  samples_per_prompt: int
  beta: float
  eos_penalty: float
  temperature: float
  max_new_tokens: int
  clip_epsilon: float


# ----------------------------------------------------------------------------- rollout

def batch_prompts(batch: Batch) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(prompts int [b, P] right-padded, valid bool [b]) of a preference batch: its encoder
  `inputs`, else the prompt part (weight 0) of `response_0`; a filler row is not valid."""
  weights = batch["response_0_weights"]
  valid = jnp.sum(weights, axis=-1) > 0
  if "inputs" in batch:
    return batch["inputs"], valid
  tokens = batch["response_0"]
  return jnp.where((weights == 0) & (tokens != PAD_ID), tokens, PAD_ID), valid


def reward_scores(rm: nn.Module, bias: float, params: Any, prompts: jnp.ndarray,
                  responses: jnp.ndarray) -> jnp.ndarray:
  """float32 [n]: the reward model `rm`'s score of each response [n, R] to its prompt (prompts
  [n / k, P]: rows i k .. i k + k - 1 answer prompt i) at the response's last token (its EOS
  where it has one), `bias` subtracted."""
  if rm.has_encoder:
    batch, weights = {"inputs": prompts, "targets": responses}, (responses != PAD_ID)
  else:
    prompts = jnp.repeat(prompts, responses.shape[0] // prompts.shape[0], axis=0)
    targets, weights, _ = joined_sequences(prompts, responses)
    batch = {"targets": targets}
  rewards = rm.apply({"params": params}, *rm.batch_args(batch))
  return score_at_eos(rewards, weights)[0] - jnp.float32(bias)


def make_rollout(model: nn.Module, label_smoothing: float = 0.0, *, settings: PolicySettings,
                 reward_model: nn.Module, reward_bias: float):
  """rollout(params, batch, rng, frozen) -> the rollout batch of a preference batch, scored by
  `reward_model` (its params `frozen['reward']`) less `reward_bias`.

  Returns a function giving {'prompts' int [b, P], 'responses' int [b, k, R] (EOS included
  where sampled, then PAD), 'logprobs' and 'reference' float32 [b, k, R] (log π of the
  sampler and log π_ref, 0 on PAD), 'advantages', 'scores', 'kl', 'rewards' float32 [b, k],
  'ended' and 'valid' bool [b, k]}; nothing in it carries a gradient.
  """
  del label_smoothing
  k = settings.samples_per_prompt

  def rollout(params, batch, rng, frozen):
    params = jax.lax.stop_gradient(params)
    prompts, valid = batch_prompts(batch)
    responses, logprobs = generate(model.config, params, prompts, method="sample",
                                   max_new_tokens=settings.max_new_tokens,
                                   temperature=settings.temperature, rng=rng, num_samples=k,
                                   with_log_probs=True)
    reference = sequence_logprobs(model, frozen[REFERENCE], prompts, responses)[0]
    scores = reward_scores(reward_model, reward_bias, frozen[REWARD], prompts, responses)
    ended = jnp.any(responses == EOS_ID, axis=-1)
    kl = kl_k1(logprobs, reference)
    if settings.algorithm == "rloo":
      rewards = shaped_rewards(scores, kl, ended, beta=settings.beta,
                               eos_penalty=settings.eos_penalty)
      advantages = rloo_advantages(rewards.reshape(-1, k))
    else:  # grpo: the KL is in the loss
      rewards = shaped_rewards(scores, kl, ended, beta=0.0, eos_penalty=settings.eos_penalty)
      advantages = grpo_advantages(rewards.reshape(-1, k))
    grouped = lambda x: x.reshape(-1, k, *x.shape[1:])  # noqa: E731
    out = {"prompts": prompts, "responses": grouped(responses), "logprobs": grouped(logprobs),
           "reference": grouped(reference), "advantages": advantages, "scores": grouped(scores),
           "kl": grouped(kl), "rewards": grouped(rewards), "ended": grouped(ended),
           "valid": jnp.repeat(valid[:, None], k, axis=1)}
    return jax.lax.stop_gradient(out)
  return rollout


# ----------------------------------------------------------------------------- loss

def policy_loss(model: nn.Module, label_smoothing: float = 0.0, *, settings: PolicySettings,
                **reward: Any):
  """The policy stage's loss on a rollout batch (`make_rollout`): (Σ over valid samples of
  the per-sample objective of the module docstring, sums): loss, samples, score, kl, reward,
  ended, response_tokens and neg_logp (Σ -log π_old over response tokens). `reward` (the
  reward model's options) is the rollout's."""
  del label_smoothing, reward

  def loss_fn(params, batch, rng, frozen):
    del rng, frozen  # dropout is off; the rollout read the frozen models
    b, k, length = batch["responses"].shape
    responses = batch["responses"].reshape(b * k, length)
    flat = lambda name: batch[name].reshape(b * k, *batch[name].shape[2:])  # noqa: E731
    logprobs = sequence_logprobs(model, params, batch["prompts"], responses)[0]
    mask = (responses != PAD_ID).astype(jnp.float32)
    per_token = clipped_surrogate(logprobs, flat("logprobs"), flat("advantages")[:, None],
                                  epsilon=settings.clip_epsilon) * mask
    tokens = jnp.sum(mask, axis=-1)
    if settings.algorithm == "rloo":
      per_sample = jnp.sum(per_token, axis=-1)
    else:
      penalty = settings.beta * kl_k3(logprobs, flat("reference")) * mask
      per_sample = jnp.sum(per_token + penalty, axis=-1) / jnp.maximum(tokens, 1.0)
    on = flat("valid").astype(jnp.float32)
    total = lambda x: jnp.sum(x * on)  # noqa: E731
    sums = {"loss": total(per_sample), "samples": jnp.sum(on), "score": total(flat("scores")),
            "kl": total(flat("kl")), "reward": total(flat("rewards")),
            "ended": total(flat("ended").astype(jnp.float32)), "response_tokens": total(tokens),
            "neg_logp": total(-jnp.sum(flat("logprobs"), axis=-1))}
    return sums["loss"], sums
  return loss_fn


def summarize_policy(sums: Mapping[str, float]) -> dict[str, float]:
  """Per sample: loss, reward-model score, KL to the reference (k1), total reward, EOS rate,
  response length; entropy: mean -log π per sampled token (its Monte Carlo estimate at T = 1)."""
  n, tokens = max(float(sums["samples"]), 1.0), max(float(sums["response_tokens"]), 1.0)
  return {"loss": float(sums["loss"]) / n, "score": float(sums["score"]) / n,
          "kl": float(sums["kl"]) / n, "reward": float(sums["reward"]) / n,
          "eos_rate": float(sums["ended"]) / n,
          "response_length": float(sums["response_tokens"]) / n,
          "entropy": float(sums["neg_logp"]) / tokens, "samples": float(sums["samples"])}


# ----------------------------------------------------------------------------- frozen models

def is_boxed(tree: Any) -> bool:
  """Whether `tree`'s leaves are still in their logical-partitioning boxes."""
  leaves = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  return any(isinstance(x, nn.meta.AxisMetadata) for x in leaves)


def policy_frozen(params: Any, options: Mapping[str, Any]) -> dict[str, Any]:
  """{'reference': a copy of the starting params, 'reward': the reward model's params as
  initialised (their shapes and shardings; the assembly loads the trained values)}."""
  rm, key = options["reward_model"], jax.random.PRNGKey(0)
  reward = boxed_params(rm, key) if is_boxed(params) else init_params(rm, key)
  return {REFERENCE: jax.tree.map(jnp.copy, params), REWARD: reward}


# ----------------------------------------------------------------------------- options

def policy_options(config: Any) -> dict[str, Any]:
  """{'settings': PolicySettings of `config.policy`} (the assembly adds the reward model's
  options: `Stage.reward_field`)."""
  policy = config.policy
  return {"settings": PolicySettings(
      algorithm=policy.algorithm, samples_per_prompt=policy.samples_per_prompt,
      beta=policy.beta, eos_penalty=policy.eos_penalty, temperature=policy.temperature,
      max_new_tokens=policy.max_new_tokens, clip_epsilon=policy.clip_epsilon)}
