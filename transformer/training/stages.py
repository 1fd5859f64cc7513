"""The training stages: what each trains on, its loss, and its metrics.

A stage's loss function has one signature, `loss_fn(params, batch, rng) -> (objective, sums)`:
`objective` is a sum over the batch (not a mean) and `sums` holds metric sums plus the
stage's denominator (tokens or pairs). Sums add across microbatches and devices, and the
host divides them (`Stage.summarize`), so accumulated and sharded steps give exactly the
single-batch numbers.

- pretrain: causal LM ('lm': decoder-only, or the LSTM / gated-CNN baselines) or span
  corruption (encoder-decoder).
- finetune: seq2seq (encoder-decoder) or LM ('lm' / 'prefix_lm', any causal LM); the loss
  covers target tokens only (`targets_weights` masks the prompt of a prefix LM).
- reward: preference pairs; the pairwise (Bradley-Terry) loss over a sequence score. The
  score here is the policy's mean token log-likelihood; the reward issue plugs in a
  reward model's scalar head through `pairwise_loss(score_fn)`.
"""

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer.models.config import CAUSAL_LM_ARCHITECTURES, ModelConfig
from transformer.special_ids import PAD_ID
from transformer.training.losses import token_cross_entropy

Batch = Mapping[str, jnp.ndarray]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage.

  Attributes:
    name: 'pretrain' | 'finetune' | 'reward'.
    tasks: data task -> the model architectures that train on it.
    make_loss: (model, model config, label smoothing) -> LossFn.
    denominator: the key of `sums` that the objective and gradients are divided by.
    summarize: host-side sums -> metrics (means, accuracy, perplexity).
  """
  name: str
  tasks: Mapping[str, tuple[str, ...]]
  make_loss: Callable[[nn.Module, ModelConfig, float], LossFn]
  denominator: str
  summarize: Callable[[Mapping[str, float]], dict[str, float]]

  def check(self, task: str, architecture: str) -> str | None:
    """None if this stage trains `architecture` on `task`, else a one-line reason."""
    if task not in self.tasks:
      return (f"stage {self.name!r} does not train on data task {task!r} "
              f"(config.data.task must be one of {tuple(self.tasks)})")
    if architecture not in self.tasks[task]:
      return (f"data task {task!r} needs config.model.architecture="
              f"{' or '.join(map(repr, self.tasks[task]))}, got {architecture!r}")
    return None


# ----------------------------------------------------------------------------- forward

def logits_fn(model: nn.Module, cfg: ModelConfig, params: Any, batch: Batch,
              rng: jax.Array) -> jnp.ndarray:
  """Teacher-forced logits [batch, target_len, vocab] for a data batch of any architecture."""
  get = batch.get
  if cfg.architecture == "encoder_decoder":
    args = (batch["inputs"], batch["targets"], get("inputs_segmentation"),
            get("targets_segmentation"), get("inputs_position"), get("targets_position"))
  else:
    args = (batch["targets"], get("targets_segmentation"), get("targets_position"))
  return model.apply({"params": params}, *args, rngs={"dropout": rng})


def target_weights(batch: Batch) -> jnp.ndarray:
  """float32 [batch, target_len]: `targets_weights`, else 1 on every non-padding target."""
  if "targets_weights" in batch:
    return batch["targets_weights"].astype(jnp.float32)
  if "targets_segmentation" in batch:
    return (batch["targets_segmentation"] > 0).astype(jnp.float32)
  return (batch["targets"] != PAD_ID).astype(jnp.float32)


# ----------------------------------------------------------------------------- token stages

def token_loss(model: nn.Module, cfg: ModelConfig, label_smoothing: float) -> LossFn:
  """Smoothed cross-entropy summed over weighted target tokens; sums loss, nll, correct, tokens."""
  def loss_fn(params, batch, rng):
    logits = logits_fn(model, cfg, params, batch, rng)
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
  return {"loss": float(sums["loss"]) / tokens, "nll": nll, "accuracy": float(sums["correct"]) / tokens,
          "perplexity": float(np.exp(min(nll, 50.0))), "tokens": float(sums["tokens"])}


# ----------------------------------------------------------------------------- reward stage

ScoreFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jax.Array], jnp.ndarray]


def mean_log_likelihood_score(model: nn.Module, cfg: ModelConfig) -> ScoreFn:
  """score(params, tokens [b, t], weights [b, t], rng) -> [b]: mean log p(token) over weights."""
  def score(params, tokens, weights, rng):
    logits = logits_fn(model, cfg, params, {"targets": tokens}, rng)
    _, nll = token_cross_entropy(logits, tokens)
    weights = weights.astype(jnp.float32)
    return -jnp.sum(nll * weights, axis=-1) / jnp.maximum(jnp.sum(weights, axis=-1), 1.0)
  return score


def pairwise_loss(score_fn: ScoreFn) -> LossFn:
  """Bradley-Terry: -log σ(score(chosen) - score(rejected)) summed over pairs; sums loss, correct, pairs."""
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

def get_stage(name: str) -> Stage:
  """The Stage called `name`; ValueError names the choices otherwise."""
  if name in ("pretrain", "finetune"):
    encoder_decoder = ("encoder_decoder",)
    tasks = ({"lm": CAUSAL_LM_ARCHITECTURES, "span_corruption": encoder_decoder} if name == "pretrain" else
             {"seq2seq": encoder_decoder, "lm": CAUSAL_LM_ARCHITECTURES, "prefix_lm": CAUSAL_LM_ARCHITECTURES})
    return Stage(name, tasks, token_loss, "tokens", summarize_tokens)
  if name == "reward":
    return Stage(name, {"preference": ("decoder_only",)},
                 lambda model, cfg, _: pairwise_loss(mean_log_likelihood_score(model, cfg)),
                 "pairs", summarize_pairs)
  raise ValueError(f"unknown stage {name!r}: must be one of ('pretrain', 'finetune', 'reward')")
