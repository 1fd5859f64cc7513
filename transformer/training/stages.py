"""The training stages: what each trains on, its loss, and its metrics.

A stage's loss function has one signature, `loss_fn(params, batch, rng, frozen) -> (objective,
sums)`: `frozen` holds the params of the frozen models it reads (`TrainState.frozen`: DPO's
reference; {} for the other stages), `objective` is a sum over the batch (not a mean) and
`sums` holds metric sums plus the stage's denominator (tokens or pairs). Sums add across
microbatches and devices, and the host divides them (`Stage.summarize`), so accumulated and
sharded steps give exactly the single-batch numbers.

Which data tasks a stage trains on is the task table's (`data/tasks.py`, `Task.stages`);
which architectures fit a task is the architecture's (`has_encoder`, `models/registry.py`).

- pretrain: causal LM ('lm': decoder-only, or the LSTM / gated-CNN baselines) or span
  corruption (encoder-decoder).
- finetune: seq2seq (encoder-decoder) or LM ('lm' / 'prefix_lm', any causal LM); the loss
  covers target tokens only (`targets_weights` masks the prompt of a prefix LM).
- reward: a reward model (`models/reward.py`: the architecture with a scalar head read at
  each response's EOS) on K >= 2 ranked responses per prompt; the Bradley-Terry loss
  -log σ(r⁺ - r⁻ - margin) (+ center_coef (r⁺ + r⁻)²) averaged over the pairs of each
  prompt (`preference_loss`). Dropout is off unless `reward.dropout`. The policy's mean
  token log-likelihood (`likelihood_scores`) is the baseline a reward model must beat.
- dpo: direct preference optimisation of the language model on the same preference data:
  the chosen response against each rejected one, `policy_objectives.dpo_loss` of the summed
  response log π (`models/logprobs.py`) of the policy and of the frozen reference, averaged
  over the pairs of each prompt (`dpo_pair_loss`). The reference is a frozen copy of the
  params the run starts from (`config.init_from`: the fine-tuned run), held in
  `TrainState.frozen['reference']`. Dropout is off (policy and reference score alike).
- policy: online RLOO or GRPO (`training/policy.py`): each step samples k responses per
  prompt of a preference batch with the current params (the stage's rollout, inside the
  step), scores them with the reward model of `config.policy.reward_workdir`
  (`frozen['reward']`) and the KL to the frozen reference (`frozen['reference']`, the
  fine-tuned params), and takes `config.policy.updates_per_batch` gradient steps on them.

Adding a stage: its loss and summary here and an entry in STAGES, and its name in the
`stages` of the tasks it trains on (`data/tasks.py`).
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer.data.tasks import TASKS
from transformer.models.config import ModelConfig
from transformer.models.logprobs import first_argmax, target_logprobs
from transformer.models.registry import ARCHITECTURES, architecture, build_model
from transformer.models.reward import reward_model, score_at_eos
from transformer.special_ids import PAD_ID
from transformer.training import policy
from transformer.training.losses import token_cross_entropy
from transformer.training.policy import REFERENCE  # the frozen reference's key (dpo, policy)
from transformer.training.policy_objectives import dpo_loss

Batch = Mapping[str, jnp.ndarray]
Frozen = Mapping[str, Any]  # name -> params of a frozen model (`TrainState.frozen`)
LossFn = Callable[[Any, Batch, jax.Array, Frozen], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage.

  Attributes:
    name: 'pretrain' | 'finetune' | 'reward' | 'dpo' | 'policy'.
    make_loss: (model, label smoothing, **options) -> LossFn.
    denominator: the key of `sums` that the objective and gradients are divided by.
    summarize: host-side sums -> metrics (means, accuracy, perplexity).
    build_model: (ModelConfig in its variant, run config) -> the module the stage trains
      (default: the architecture's own; reward: `models.reward.reward_model`).
    options: run config -> keyword options of `make_loss` (default: none).
    frozen: (the run's starting params, its options) -> the frozen params its loss reads
      (`TrainState.frozen`; default none; dpo: {'reference': a copy}; policy: and
      {'reward': the reward model's params as initialised}).
    reward_field: '' or the dotted config field naming a reward run the stage reads (policy:
      'policy.reward_workdir'): the assembly checks it (`rewards.reward_options`), adds its
      module and bias to the options (reward_model, reward_bias), and loads its trained params
      into frozen['reward'] when the run starts (not on a resume).
    make_rollout: None, or (model, label smoothing, **options) -> rollout(params, batch, rng,
      frozen) -> the batch its loss reads, run in the step before the updates without
      gradient (policy: the sampled responses, their rewards and advantages).
    init_from_stages: the stages whose runs `config.init_from` may name, with the same model
      config (() = any run, any model: params matched by path and shape).
    logits: its module computes the output projection (reward: a scalar head instead), and
    forward_passes: forward passes' worth of one train step over the batch (3: forward and
      backward; dpo 4: and the reference's forward), both for the FLOPs (`flops.py`).
    progress: the train metrics (of `summarize`) that the progress line shows after the loss.
  """
  name: str
  make_loss: Callable[..., LossFn]
  denominator: str
  summarize: Callable[[Mapping[str, float]], dict[str, float]]
  build_model: Callable[[ModelConfig, Any], nn.Module] = None  # type: ignore[assignment]
  options: Callable[[Any], dict[str, Any]] = None  # type: ignore[assignment]
  frozen: Callable[[Any, Mapping[str, Any]], dict[str, Any]] = None  # type: ignore[assignment]
  reward_field: str = ""
  make_rollout: Callable[..., Callable] | None = None
  init_from_stages: tuple[str, ...] = ()
  logits: bool = True
  forward_passes: float = 3.0
  progress: tuple[str, ...] = ()

  def __post_init__(self):
    if self.build_model is None:
      object.__setattr__(self, "build_model", build_language_model)
    if self.options is None:
      object.__setattr__(self, "options", no_options)
    if self.frozen is None:
      object.__setattr__(self, "frozen", no_frozen)

  def check(self, task: str, architecture_name: str) -> str | None:
    """None if this stage trains `architecture_name` on data task `task`, else a one-line reason."""
    tasks = tuple(name for name, t in TASKS.items() if self.name in t.stages)
    if task not in tasks:
      return (f"stage {self.name!r} does not train on data task {task!r} "
              f"(config.data.task must be one of {tasks})")
    encoder = TASKS[task].encoder
    if architecture(architecture_name).has_encoder != encoder:
      fits = tuple(name for name, cls in ARCHITECTURES.items() if cls.has_encoder == encoder)
      return (f"data task {task!r} needs config.model.architecture="
              f"{' or '.join(map(repr, fits))}, got {architecture_name!r}")
    return None


# ----------------------------------------------------------------------------- forward

def logits_fn(model: nn.Module, params: Any, batch: Batch, rng: jax.Array) -> jnp.ndarray:
  """Teacher-forced logits [batch, target_len, vocab] for a data batch of any architecture."""
  return model.apply({"params": params}, *model.batch_args(batch), rngs={"dropout": rng})


def target_weights(batch: Batch) -> jnp.ndarray:
  """float32 [batch, target_len]: `targets_weights`, else 1 on every non-padding target."""
  if "targets_weights" in batch:
    return batch["targets_weights"].astype(jnp.float32)
  if "targets_segmentation" in batch:
    return (batch["targets_segmentation"] > 0).astype(jnp.float32)
  return (batch["targets"] != PAD_ID).astype(jnp.float32)


# ----------------------------------------------------------------------------- token stages

def token_loss(model: nn.Module, label_smoothing: float) -> LossFn:
  """Smoothed cross-entropy summed over weighted target tokens; sums loss, nll, correct, tokens."""
  def loss_fn(params, batch, rng, frozen):
    del frozen  # reads no frozen model
    logits = logits_fn(model, params, batch, rng)
    loss, nll = token_cross_entropy(logits, batch["targets"], label_smoothing)
    weights = target_weights(batch)
    correct = (first_argmax(logits) == batch["targets"]).astype(jnp.float32)
    sums = {"loss": jnp.sum(loss * weights), "nll": jnp.sum(nll * weights),
            "correct": jnp.sum(correct * weights), "tokens": jnp.sum(weights)}
    return sums["loss"], sums
  return loss_fn


def summarize_tokens(sums: Mapping[str, float]) -> dict[str, float]:
  """loss, nll (per token), token accuracy, perplexity = exp(nll), tokens."""
  tokens = max(float(sums["tokens"]), 1.0)
  nll = float(sums["nll"]) / tokens
  return {"loss": float(sums["loss"]) / tokens, "nll": nll,
          "accuracy": float(sums["correct"]) / tokens,
          "perplexity": float(np.exp(min(nll, 50.0))), "tokens": float(sums["tokens"])}


# ----------------------------------------------------------------------------- reward stage

PAIRINGS = ("best_vs_rest", "all")


def response_names(batch: Batch) -> list[str]:
  """'response_0', 'response_1', ... of a preference batch, in rank order (0 = best)."""
  names = []
  while f"response_{len(names)}" in batch:
    names.append(f"response_{len(names)}")
  return names


def response_batch(batch: Batch) -> tuple[dict[str, jnp.ndarray], jnp.ndarray, int]:
  """A preference batch as one model batch of its b*K responses.

  Returns:
    ({'targets' [b*K, L] (and 'inputs' [b, S] if the task has an encoder: the model
    encodes each prompt once for its K responses)}, response weights float32 [b*K, L], K).
    Row i*K + k is response k of element i.
  """
  names = response_names(batch)
  tokens = jnp.stack([batch[n] for n in names], axis=1)
  weights = jnp.stack([batch[f"{n}_weights"] for n in names], axis=1).astype(jnp.float32)
  b, k, length = tokens.shape
  flat = {"targets": tokens.reshape(b * k, length)}
  if "inputs" in batch:
    flat["inputs"] = batch["inputs"]
  return flat, weights.reshape(b * k, length), k


def reward_scores(model: nn.Module, params: Any, batch: Batch,
                  rng: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(scores float32 [b, K], valid bool [b, K]) of a reward model on a preference batch.

  One forward pass over all b*K responses; each score is read at its response's EOS
  (`models.reward.score_at_eos`); a response without weights (filler row) is not valid.
  """
  flat, weights, k = response_batch(batch)
  rewards = model.apply({"params": params}, *model.batch_args(flat), rngs={"dropout": rng})
  scores, valid = score_at_eos(rewards, weights)
  return scores.reshape(-1, k), valid.reshape(-1, k)


def pair_indices(num_responses: int, pairing: str) -> tuple[np.ndarray, np.ndarray]:
  """(better, worse) response indices of every compared pair of one element.

  'best_vs_rest': (0, j) for j >= 1 (one chosen against K-1 rejected); 'all': every (i, j)
  with i < j (a full ranking, InstructGPT).
  """
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
  pairs = [(i, j) for i in range(num_responses) for j in range(i + 1, num_responses)
           if pairing == "all" or i == 0]
  return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def preference_loss(scores: jnp.ndarray, valid: jnp.ndarray, *, pairing: str = "best_vs_rest",
                    margin: jnp.ndarray | None = None,
                    center_coef: float = 0.0) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Bradley-Terry loss of K ranked responses per element, its pairs averaged in the element.

  Per pair (better i, worse j): -log σ(r_i - r_j - margin) + center_coef (r_i + r_j)²; a pair
  counts where both responses are valid; an element's loss is the mean over its pairs
  (InstructGPT), and the objective sums elements (an element without pairs adds 0).

  Args:
    scores: float [b, K] (index 0 best).
    valid: bool [b, K].
    pairing: which pairs (`pair_indices`).
    margin: optional float [b] (every pair of the element) or [b, pairs].
    center_coef: weight of the centering term (0: off).

  Returns:
    (objective, sums): loss, prompts (elements with a pair), pairs, correct (r_i > r_j;
    ties wrong), margin (Σ r_i - r_j), and chosen / rejected (index 0 / the others) sums,
    sums of squares and counts of the rewards.
  """
  better, worse = pair_indices(scores.shape[1], pairing)
  scores = scores.astype(jnp.float32)
  diff = scores[:, better] - scores[:, worse]  # [b, P]
  pair_on = (valid[:, better] & valid[:, worse]).astype(jnp.float32)
  offset = 0.0 if margin is None else jnp.asarray(margin, jnp.float32)
  if margin is not None and offset.ndim == 1:
    offset = offset[:, None]
  per_pair = -jax.nn.log_sigmoid(diff - offset)
  if center_coef:
    per_pair = per_pair + center_coef * (scores[:, better] + scores[:, worse]) ** 2
  count = jnp.sum(pair_on, axis=1)
  element_loss = jnp.sum(per_pair * pair_on, axis=1) / jnp.maximum(count, 1.0)
  chosen_on = valid[:, 0].astype(jnp.float32)
  rejected_on = valid[:, 1:].astype(jnp.float32)
  sums = {"loss": jnp.sum(element_loss), "prompts": jnp.sum((count > 0).astype(jnp.float32)),
          "pairs": jnp.sum(pair_on), "correct": jnp.sum((diff > 0) * pair_on),
          "margin": jnp.sum(diff * pair_on),
          "chosen_sum": jnp.sum(scores[:, 0] * chosen_on),
          "chosen_sq": jnp.sum(scores[:, 0] ** 2 * chosen_on), "chosen_n": jnp.sum(chosen_on),
          "rejected_sum": jnp.sum(scores[:, 1:] * rejected_on),
          "rejected_sq": jnp.sum(scores[:, 1:] ** 2 * rejected_on),
          "rejected_n": jnp.sum(rejected_on)}
  return sums["loss"], sums


def reward_model_loss(model: nn.Module, label_smoothing: float = 0.0, *,
                      pairing: str = "best_vs_rest", center_coef: float = 0.0,
                      margin_field: str = "") -> LossFn:
  """The reward stage's loss: `preference_loss` of the reward model's scores.

  margin_field: the batch feature holding per-pair margins ('' = no margin).
  """
  del label_smoothing  # no smoothing in a reward model's loss

  def loss_fn(params, batch, rng, frozen):
    del frozen  # reads no frozen model
    scores, valid = reward_scores(model, params, batch, rng)
    margin = batch[margin_field] if margin_field else None
    return preference_loss(scores, valid, pairing=pairing, margin=margin,
                           center_coef=center_coef)
  return loss_fn


def _mean_std(total: float, squares: float, count: float) -> tuple[float, float]:
  n = max(count, 1.0)
  mean = total / n
  return mean, float(np.sqrt(max(squares / n - mean * mean, 0.0)))


def summarize_rewards(sums: Mapping[str, float]) -> dict[str, float]:
  """loss per prompt, pairwise accuracy (ties wrong), mean margin, chosen/rejected mean, std."""
  pairs = max(float(sums["pairs"]), 1.0)
  chosen_mean, chosen_std = _mean_std(float(sums["chosen_sum"]), float(sums["chosen_sq"]),
                                      float(sums["chosen_n"]))
  rejected_mean, rejected_std = _mean_std(float(sums["rejected_sum"]),
                                          float(sums["rejected_sq"]), float(sums["rejected_n"]))
  return {"loss": float(sums["loss"]) / max(float(sums["prompts"]), 1.0),
          "accuracy": float(sums["correct"]) / pairs, "margin": float(sums["margin"]) / pairs,
          "chosen_mean": chosen_mean, "chosen_std": chosen_std,
          "rejected_mean": rejected_mean, "rejected_std": rejected_std,
          "pairs": float(sums["pairs"])}


def likelihood_scores(model: nn.Module, params: Any,
                      batch: Batch) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(scores [b, K], valid [b, K]) of the likelihood baseline on a preference batch: each
  response's mean token log π (`models.logprobs`) under a language model (eval variant)."""
  flat, weights, k = response_batch(batch)
  _, total = target_logprobs(model, params, flat, weights)
  count = jnp.sum((weights > 0).astype(jnp.float32), axis=-1)
  return (total / jnp.maximum(count, 1.0)).reshape(-1, k), (count > 0).reshape(-1, k)


def reward_options(config: Any) -> dict[str, Any]:
  """The reward loss's options from a run config's `reward` section."""
  return {"pairing": config.reward.pairing, "center_coef": config.reward.center_coef,
          "margin_field": config.reward.margin_field}


def build_reward_model(cfg: ModelConfig, config: Any) -> nn.Module:
  """The reward model of `cfg`, dropout off unless `config.reward.dropout`."""
  return reward_model(cfg if config.reward.dropout else cfg.eval())


# ----------------------------------------------------------------------------- dpo stage



def dpo_pair_loss(policy: jnp.ndarray, reference: jnp.ndarray, valid: jnp.ndarray, *,
                  beta: float, label_smoothing: float
                  ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """DPO's loss of the chosen response (index 0) against each rejected one, averaged over the
  pairs of each element (as `preference_loss`).

  Args:
    policy, reference: float [b, K], each response's summed log π and log π_ref.
    valid: bool [b, K] (a filler row or missing response is not).
    beta, label_smoothing: `policy_objectives.dpo_loss`'s.

  Returns:
    (objective, sums): loss, prompts (elements with a pair), pairs, correct (implicit reward
    of the chosen above the rejected), margin (Σ of that difference), and the sums and counts
    of chosen / rejected log π and implicit rewards β(log π - log π_ref).
  """
  policy, reference = policy.astype(jnp.float32), reference.astype(jnp.float32)
  loss, margin = dpo_loss(policy[:, :1], policy[:, 1:], reference[:, :1], reference[:, 1:],
                          beta=beta, label_smoothing=label_smoothing)  # [b, K-1]
  pair_on = (valid[:, :1] & valid[:, 1:]).astype(jnp.float32)
  count = jnp.sum(pair_on, axis=1)
  rewards = beta * (policy - reference)
  chosen_on, rejected_on = valid[:, 0].astype(jnp.float32), valid[:, 1:].astype(jnp.float32)
  sums = {"loss": jnp.sum(jnp.sum(loss * pair_on, axis=1) / jnp.maximum(count, 1.0)),
          "prompts": jnp.sum((count > 0).astype(jnp.float32)), "pairs": jnp.sum(pair_on),
          "correct": jnp.sum((margin > 0) * pair_on), "margin": jnp.sum(margin * pair_on),
          "chosen_logp": jnp.sum(policy[:, 0] * chosen_on),
          "chosen_reward": jnp.sum(rewards[:, 0] * chosen_on), "chosen_n": jnp.sum(chosen_on),
          "rejected_logp": jnp.sum(policy[:, 1:] * rejected_on),
          "rejected_reward": jnp.sum(rewards[:, 1:] * rejected_on),
          "rejected_n": jnp.sum(rejected_on)}
  return sums["loss"], sums


def dpo_model_loss(model: nn.Module, label_smoothing: float = 0.0, *, beta: float,
                   dpo_label_smoothing: float) -> LossFn:
  """The dpo stage's loss: `dpo_pair_loss` of the policy's and the frozen reference's summed
  response log π on a preference batch (one forward pass each over its b*K responses).

  label_smoothing: the token loss's (unused: no log-probability here is smoothed);
  dpo_label_smoothing: DPO's conservative ε (`config.dpo.label_smoothing`).
  """
  del label_smoothing

  def loss_fn(params, batch, rng, frozen):
    del rng  # dropout is off
    flat, weights, k = response_batch(batch)
    policy = target_logprobs(model, params, flat, weights)[1].reshape(-1, k)
    reference = target_logprobs(model, frozen[REFERENCE], flat, weights)[1].reshape(-1, k)
    valid = (jnp.sum(weights, axis=-1) > 0).reshape(-1, k)
    return dpo_pair_loss(policy, reference, valid, beta=beta,
                         label_smoothing=dpo_label_smoothing)
  return loss_fn


def summarize_dpo(sums: Mapping[str, float]) -> dict[str, float]:
  """loss per prompt, implicit-reward accuracy (ties wrong) and mean margin, mean chosen /
  rejected log π and implicit reward."""
  pairs = max(float(sums["pairs"]), 1.0)
  chosen, rejected = max(float(sums["chosen_n"]), 1.0), max(float(sums["rejected_n"]), 1.0)
  return {"loss": float(sums["loss"]) / max(float(sums["prompts"]), 1.0),
          "accuracy": float(sums["correct"]) / pairs, "margin": float(sums["margin"]) / pairs,
          "chosen_logp": float(sums["chosen_logp"]) / chosen,
          "rejected_logp": float(sums["rejected_logp"]) / rejected,
          "chosen_reward": float(sums["chosen_reward"]) / chosen,
          "rejected_reward": float(sums["rejected_reward"]) / rejected,
          "pairs": float(sums["pairs"])}


def dpo_options(config: Any) -> dict[str, Any]:
  """The dpo loss's options from a run config's `dpo` section."""
  return {"beta": config.dpo.beta, "dpo_label_smoothing": config.dpo.label_smoothing}


def build_deterministic_model(cfg: ModelConfig, config: Any) -> nn.Module:
  """The architecture's own module without dropout (in both the train and eval variants)."""
  del config
  return build_model(cfg.eval())


def reference_copy(params: Any, options: Mapping[str, Any]) -> dict[str, Any]:
  """{'reference': a copy of `params`}: DPO's frozen reference, the run's starting params."""
  del options
  return {REFERENCE: jax.tree.map(jnp.copy, params)}


def build_language_model(cfg: ModelConfig, config: Any) -> nn.Module:
  """The architecture's own module (`registry.build_model`)."""
  del config
  return build_model(cfg)


def no_options(config: Any) -> dict[str, Any]:
  del config
  return {}


def no_frozen(params: Any, options: Mapping[str, Any]) -> dict[str, Any]:
  del params, options
  return {}


# ----------------------------------------------------------------------------- registry

STAGES: Mapping[str, Stage] = {stage.name: stage for stage in (
    Stage("pretrain", token_loss, "tokens", summarize_tokens),
    Stage("finetune", token_loss, "tokens", summarize_tokens),
    Stage("reward", reward_model_loss, "prompts", summarize_rewards,
          build_model=build_reward_model, options=reward_options, logits=False,
          progress=("accuracy", "margin")),
    Stage("dpo", dpo_model_loss, "prompts", summarize_dpo, build_model=build_deterministic_model,
          options=dpo_options, frozen=reference_copy, init_from_stages=("finetune",),
          forward_passes=4.0, progress=("accuracy", "margin")),
    Stage("policy", policy.policy_loss, "samples", policy.summarize_policy,
          build_model=build_deterministic_model, options=policy.policy_options,
          frozen=policy.policy_frozen, reward_field="policy.reward_workdir",
          make_rollout=policy.make_rollout, init_from_stages=("finetune",),
          progress=("score", "kl", "reward", "eos_rate", "response_length", "entropy")),
)}


def get_stage(name: str) -> Stage:
  """The Stage called `name`; ValueError names the choices otherwise."""
  if name not in STAGES:
    raise ValueError(f"unknown stage {name!r}: must be one of {tuple(STAGES)}")
  return STAGES[name]
