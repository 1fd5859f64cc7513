"""The training stages: what each trains on, its loss, and its metrics.

A stage's loss function has one signature, `loss_fn(params, batch, rng) -> (objective, sums)`:
`objective` is a sum over the batch (not a mean) and `sums` holds metric sums plus the
stage's denominator (tokens or pairs). Sums add across microbatches and devices, and the
host divides them (`Stage.summarize`), so accumulated and sharded steps give exactly the
single-batch numbers.

Which data tasks a stage trains on is the task table's (`data/tasks.py`, `Task.stages`);
which architectures fit a task is the architecture's (`has_encoder`, `models/registry.py`).

- pretrain: causal LM ('lm': decoder-only, or the LSTM / gated-CNN baselines) or span
  corruption (encoder-decoder).
- finetune: seq2seq (encoder-decoder) or LM ('lm' / 'prefix_lm', any causal LM); the loss
  covers target tokens only (`targets_weights` masks the prompt of a prefix LM).
- reward: preference pairs; the pairwise (Bradley-Terry) loss over a sequence score. The
  score here is the policy's mean token log-likelihood; the reward issue plugs in a
  reward model's scalar head through `pairwise_loss(score_fn)`.

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
from transformer.models.registry import ARCHITECTURES, architecture
from transformer.special_ids import PAD_ID
from transformer.training.losses import token_cross_entropy

Batch = Mapping[str, jnp.ndarray]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage.

  Attributes:
    name: 'pretrain' | 'finetune' | 'reward'.
    make_loss: (model, label smoothing) -> LossFn.
    denominator: the key of `sums` that the objective and gradients are divided by.
    summarize: host-side sums -> metrics (means, accuracy, perplexity).
  """
  name: str
  make_loss: Callable[[nn.Module, float], LossFn]
  denominator: str
  summarize: Callable[[Mapping[str, float]], dict[str, float]]

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
  def loss_fn(params, batch, rng):
    logits = logits_fn(model, params, batch, rng)
    loss, nll = token_cross_entropy(logits, batch["targets"], label_smoothing)
    weights = target_weights(batch)
    correct = (jnp.argmax(logits, axis=-1) == batch["targets"]).astype(jnp.float32)
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

ScoreFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jax.Array], jnp.ndarray]


def mean_log_likelihood_score(model: nn.Module) -> ScoreFn:
  """score(params, tokens [b, t], weights [b, t], rng) -> [b]: mean log p(token) over weights."""
  def score(params, tokens, weights, rng):
    logits = logits_fn(model, params, {"targets": tokens}, rng)
    _, nll = token_cross_entropy(logits, tokens)
    weights = weights.astype(jnp.float32)
    return -jnp.sum(nll * weights, axis=-1) / jnp.maximum(jnp.sum(weights, axis=-1), 1.0)
  return score


def pairwise_loss(score_fn: ScoreFn) -> LossFn:
  """Bradley-Terry: -log σ(score(chosen) - score(rejected)) summed over pairs; sums loss,
  correct, pairs."""
  def loss_fn(params, batch, rng):
    chosen_rng, rejected_rng = jax.random.split(rng)
    margin = (score_fn(params, batch["chosen"], batch["chosen_weights"], chosen_rng)
              - score_fn(params, batch["rejected"], batch["rejected_weights"], rejected_rng))
    sums = {"loss": jnp.sum(-jax.nn.log_sigmoid(margin)),
            "correct": jnp.sum((margin > 0).astype(jnp.float32)),
            "pairs": jnp.asarray(margin.shape[0], jnp.float32)}
    return sums["loss"], sums
  return loss_fn


def summarize_pairs(sums: Mapping[str, float]) -> dict[str, float]:
  """loss per pair and accuracy (chosen scored above rejected)."""
  pairs = max(float(sums["pairs"]), 1.0)
  return {"loss": float(sums["loss"]) / pairs, "accuracy": float(sums["correct"]) / pairs,
          "pairs": float(sums["pairs"])}


# ----------------------------------------------------------------------------- registry

STAGES: Mapping[str, Stage] = {stage.name: stage for stage in (
    Stage("pretrain", token_loss, "tokens", summarize_tokens),
    Stage("finetune", token_loss, "tokens", summarize_tokens),
    Stage("reward", lambda model, _: pairwise_loss(mean_log_likelihood_score(model)),
          "pairs", summarize_pairs),
)}


def get_stage(name: str) -> Stage:
  """The Stage called `name`; ValueError names the choices otherwise."""
  if name not in STAGES:
    raise ValueError(f"unknown stage {name!r}: must be one of {tuple(STAGES)}")
  return STAGES[name]
