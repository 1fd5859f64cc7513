r"""Held-out evaluation of a reward model against the fine-tuned model's likelihood scorer.

  python -m transformer.evaluate_reward --workdir=runs/rlhf/reward \
      --baseline_workdir=runs/rlhf/finetune --split=test

Scores every preference example of the split (modules no stage trained on) with the reward
model (its bias applied) and with the baseline: the fine-tuned language model's mean token
log-likelihood of each response. Prints one JSON object: pairwise accuracy of both (ties
count as wrong), the reward mean of chosen and rejected responses, accuracy split by whether
the rejected response is longer, shorter or as long as the chosen one (in tokens: a length
shortcut shows up there), the pair and example counts (rows that pad the last batch are
never counted; examples the data config cannot fit are counted as dropped), and the
chosen mean of the train split after normalisation (0 by construction of the bias) beside
the split's own.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from absl import app, flags

from transformer import cli
from transformer.data import pipeline
from transformer.models.registry import architecture, build_model
from transformer.training import checkpoints
from transformer.training.config import ConfigError
from transformer.training.rewards import RewardModel, load_reward_model
from transformer.training.stages import likelihood_scores, pair_indices


def preference_batches(rm: RewardModel, split: str,
                       batch_size: int) -> Iterator[Mapping[str, np.ndarray]]:
  """One padded pass over `split` of the reward model's preference data."""
  return pipeline.make_dataset(rm.config.data, split, global_batch_size=batch_size, seed=0,
                               train=False, process_index=0, process_count=1,
                               tokenizer=rm.tokenizer)


def chosen_mean(rm: RewardModel, split: str, batch_size: int = 64) -> tuple[float, int]:
  """(mean reward of the chosen responses of `split`, their count), bias applied."""
  total, count = 0.0, 0
  for batch in preference_batches(rm, split, batch_size):
    scores, valid = rm.score_batch(batch)
    total += float(np.sum(scores[:, 0] * valid[:, 0]))
    count += int(np.sum(valid[:, 0]))
  return total / max(count, 1), count


def _accuracy(correct: np.ndarray, mask: np.ndarray) -> float | None:
  return float(np.mean(correct[mask])) if mask.any() else None


def evaluate(workdir: str, baseline_workdir: str | None, split: str = "test",
             batch_size: int = 64, train_mean: bool = True) -> dict[str, Any]:
  """The evaluation JSON of the module docstring (a dict)."""
  rm = load_reward_model(workdir)
  baseline = None
  if baseline_workdir:
    cfg, params, _ = checkpoints.load_params_for_inference(baseline_workdir)
    rm.check_tokenizer(baseline_workdir, "--baseline_workdir")
    if architecture(cfg.architecture).has_encoder != rm.task.encoder:
      raise ConfigError(f"--baseline_workdir={baseline_workdir}: architecture "
                        f"{cfg.architecture!r} does not read the reward data's task")
    model = build_model(cfg)
    baseline = (jax.jit(lambda p, b: likelihood_scores(model, p, b)), params)
  better, worse = pair_indices(rm.config.data.num_responses, rm.config.reward.pairing)
  rm_diff, base_diff, chosen_len, rejected_len, chosen, rejected = [], [], [], [], [], []
  examples = 0
  for batch in preference_batches(rm, split, batch_size):
    scores, valid = rm.score_batch(batch)
    lengths = np.stack([batch[f"response_{k}_weights"].sum(axis=1)
                        for k in range(scores.shape[1])], axis=1)
    on = valid[:, better] & valid[:, worse]
    examples += int(valid[:, 0].sum())
    rm_diff.append((scores[:, better] - scores[:, worse])[on])
    chosen_len.append(lengths[:, better][on])
    rejected_len.append(lengths[:, worse][on])
    chosen.append(scores[:, 0][valid[:, 0]])
    rejected.append(scores[:, 1:][valid[:, 1:]])
    if baseline is not None:
      keys = [k for k in batch if k == "inputs" or k.startswith("response_")]
      base, _ = baseline[0](baseline[1], {k: batch[k] for k in keys})
      base = np.asarray(base)
      base_diff.append((base[:, better] - base[:, worse])[on])
  rm_diff, chosen_len, rejected_len = map(np.concatenate, (rm_diff, chosen_len, rejected_len))
  rm_correct = rm_diff > 0
  longer, shorter = rejected_len > chosen_len, rejected_len < chosen_len
  same = ~longer & ~shorter
  records = len(pipeline.open_source(rm.config.data, split))
  result = {
      "split": split, "reward_workdir": workdir, "step": rm.step, "bias": rm.bias,
      "pairs": int(len(rm_diff)), "examples": examples, "records": records,
      "dropped": records - examples,
      "rm_accuracy": float(np.mean(rm_correct)),
      "likelihood_accuracy": None,
      "rm_chosen_mean": float(np.mean(np.concatenate(chosen))),
      "rm_rejected_mean": float(np.mean(np.concatenate(rejected))),
      "rm_accuracy_rejected_longer": _accuracy(rm_correct, longer),
      "rm_accuracy_rejected_shorter": _accuracy(rm_correct, shorter),
      "rm_accuracy_same_length": _accuracy(rm_correct, same),
      "pairs_rejected_longer": int(longer.sum()), "pairs_rejected_shorter": int(shorter.sum()),
      "pairs_same_length": int(same.sum()),
  }
  if baseline is not None:
    base_correct = np.concatenate(base_diff) > 0
    result.update(likelihood_accuracy=float(np.mean(base_correct)),
                  likelihood_accuracy_rejected_longer=_accuracy(base_correct, longer),
                  likelihood_accuracy_rejected_shorter=_accuracy(base_correct, shorter))
  if train_mean:
    mean, count = chosen_mean(rm, "train", batch_size)
    result.update(train_chosen_mean=mean, train_chosen_examples=count)
  return result


def define_flags() -> None:
  """The command's flags (defined only when run as a command)."""
  flags.DEFINE_string("workdir", None, "The reward run's workdir.", required=True)
  flags.DEFINE_string("baseline_workdir", None,
                      "The fine-tuned run whose likelihood is the baseline scorer.")
  flags.DEFINE_string("split", "test", "Split to evaluate.")
  flags.DEFINE_integer("batch_size", 64, "Examples scored together.")
  flags.DEFINE_bool("train_mean", True,
                    "Also score the train split's chosen responses (their mean).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    f = flags.FLAGS
    result = evaluate(f.workdir, f.baseline_workdir, f.split, f.batch_size, f.train_mean)
  except (ConfigError, FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
