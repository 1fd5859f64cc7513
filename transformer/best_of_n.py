r"""Best-of-N reranking with a reward model, and its evaluation against a gold metric.

  python -m transformer.best_of_n --policy_workdir=runs/rlhf/finetune \
      --reward_workdir=runs/rlhf/reward --split=test --out=runs/rlhf/bon

For each held-out prompt (a function's code from the split's preference data) the policy
samples a pool of 16 candidates once; the reward model scores each. For N = 1, 2, 4, 8, 16
the expected result of "draw N, keep the reward model's favourite" is computed exactly
over every size-N subset of the pool: with the pool sorted by reward, ascending ranks
r = 1..M, the candidate of rank r is the subset's best with probability
C(r-1, N-1) / C(M, N) (these weights sum to 1). Reported for each N: the mean reward-model
score and a gold score that does not use the reward model, chrF (sacreBLEU) of the chosen
candidate against the function's true summary; and a paired bootstrap (over prompts) 95%
interval of chrF(N=8) - chrF(N=1). Writes best_of_n.json and best_of_n.png to --out.
"""

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import sacrebleu
from absl import app, flags

from transformer import cli
from transformer.data import pipeline
from transformer.decoding import generate
from transformer.decoding.prompts import decode_outputs
from transformer.models.config import ModelConfig
from transformer.models.registry import architecture
from transformer.special_ids import PAD_ID
from transformer.training import checkpoints
from transformer.training.config import ConfigError
from transformer.training.rewards import RewardModel, load_reward_model

NS = (1, 2, 4, 8, 16)
CANDIDATES_FILE = "best_of_n_candidates.jsonl"


def best_of_n_weights(pool: int, n: int) -> np.ndarray:
  """float [pool]: P(the candidate of ascending rank r = 1..pool is the best of a random
  n-subset) = C(r-1, n-1) / C(pool, n)."""
  if not 1 <= n <= pool:
    raise ValueError(f"N must be in [1, {pool}] (the pool size), got {n}")
  return np.array([math.comb(r - 1, n - 1) for r in range(1, pool + 1)]) / math.comb(pool, n)


def expected_best_of_n(proxy: np.ndarray, gold: np.ndarray,
                       n: int) -> tuple[np.ndarray, np.ndarray]:
  """(E[proxy of the best-of-n], E[gold of the best-of-n]) per prompt, exactly over subsets.

  Args:
    proxy: float [prompts, pool], the reward model's scores (the selection criterion).
    gold: float [prompts, pool], the gold score of the same candidates.
  """
  order = np.argsort(proxy, axis=1, kind="stable")
  weights = best_of_n_weights(proxy.shape[1], n)
  return (np.take_along_axis(proxy, order, 1) @ weights,
          np.take_along_axis(gold, order, 1) @ weights)


def paired_bootstrap(difference: np.ndarray, resamples: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
  """95% percentile interval of the mean of per-prompt differences, prompts resampled."""
  rng = np.random.default_rng(seed)
  means = difference[rng.integers(0, len(difference), (resamples, len(difference)))].mean(1)
  return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def prompt_limit(config: ModelConfig, max_new_tokens: int) -> int:
  """The most prompt tokens a model keeps: all of max_len for an encoder, else what leaves
  room for `max_new_tokens` of output."""
  if architecture(config.architecture).has_encoder:
    return config.max_len
  return config.max_len - max_new_tokens


def sample_pool(config: ModelConfig, params: Any, prompts: Sequence[np.ndarray], pool: int, *,
                max_new_tokens: int, seed: int = 0, temperature: float = 1.0,
                batch_size: int = 128) -> list[list[np.ndarray]]:
  """`pool` sampled continuations (token arrays, up to EOS) of each prompt (token arrays).

  Prompts are cut to leave room for the output, keeping their start (as in training), and
  sampled `batch_size // pool` (at least 1) at a time, `pool` rows each.
  """
  limit = prompt_limit(config, max_new_tokens)
  per_batch = max(1, batch_size // pool)
  outputs = []
  for i, start in enumerate(range(0, len(prompts), per_batch)):
    chunk = [p[:limit] for p in prompts[start:start + per_batch]]
    chunk = chunk + [chunk[-1]] * (per_batch - len(chunk))  # one compiled shape
    tokens = np.full((per_batch, max(len(r) for r in chunk)), PAD_ID, np.int32)
    for j, r in enumerate(chunk):
      tokens[j, :len(r)] = r
    new = generate(config, params, tokens, method="sample", temperature=temperature,
                   max_new_tokens=max_new_tokens, num_samples=pool,
                   rng=jax.random.fold_in(jax.random.key(seed), i))
    outputs += list(np.asarray(new))[:min(per_batch, len(prompts) - start) * pool]
  return [outputs[i * pool:(i + 1) * pool] for i in range(len(prompts))]


def sampling_budget(rm: RewardModel, max_new_tokens: int | None) -> int:
  """Tokens sampled per response: `max_new_tokens`, or None for the reward model's response
  budget; a ConfigError if it leaves no room for the EOS there."""
  if max_new_tokens is None:
    return rm.response_budget()
  if max_new_tokens > rm.response_budget():
    raise ConfigError(f"max_new_tokens={max_new_tokens}: no room for the EOS in the reward "
                      f"model's response budget ({rm.response_budget()} tokens)")
  return max_new_tokens


def held_out_prompts(rm: RewardModel, split: str,
                     num_prompts: int = 0) -> tuple[list[str], list[str]]:
  """(prompts, true summaries) of the first `num_prompts` (0: all) records of `split` of the
  reward model's preference data: each function's code and its chosen response."""
  records = list(pipeline.open_source(rm.config.data, split))[:num_prompts or None]
  texts = pipeline.record_texts
  return ([texts(r, ("prompt",))[0] for r in records],
          [texts(r, ("chosen",))[0] for r in records])


def evaluate(policy_workdir: str, reward_workdir: str, split: str = "test",
             num_prompts: int = 0, pool: int = 16, max_new_tokens: int | None = None,
             seed: int = 0,
             temperature: float = 1.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """(the best-of-N JSON of the module docstring, per-prompt candidates with scores);
  `max_new_tokens` None: the reward model's response budget."""
  if num_prompts < 0:
    raise ConfigError(f"num_prompts={num_prompts}: expected 0 (every prompt of the split) or "
                      "a positive number")
  rm = load_reward_model(reward_workdir)
  max_new_tokens = sampling_budget(rm, max_new_tokens)
  config, params, _ = checkpoints.load_params_for_inference(policy_workdir)
  prompts, references = held_out_prompts(rm, split, num_prompts)
  pools = sample_pool(config, params, [rm.tokenizer.encode(p) for p in prompts], pool,
                      max_new_tokens=max_new_tokens, seed=seed, temperature=temperature)
  candidates = [decode_outputs(rm.tokenizer, np.stack(p)) for p in pools]
  flat = [c for cs in candidates for c in cs]
  proxy = rm.score_texts([p for p in prompts for _ in range(pool)], flat,
                        cut_responses=True).reshape(-1, pool)
  gold = np.array([[sacrebleu.sentence_chrf(c, [ref]).score for c in cs]
                   for cs, ref in zip(candidates, references, strict=True)])
  curves = {n: expected_best_of_n(proxy, gold, n) for n in NS if n <= pool}
  gain = curves[8][1] - curves[1][1] if 8 in curves else np.zeros(1)
  low, high = paired_bootstrap(gain)
  duplicates = float(np.mean([1 - len(set(cs)) / len(cs) for cs in candidates]))
  result = {
      "split": split, "prompts": len(prompts), "pool": pool, "temperature": temperature,
      "max_new_tokens": max_new_tokens, "N": list(curves),
      "rm_score": [float(curves[n][0].mean()) for n in curves],
      "gold_chrf": [float(curves[n][1].mean()) for n in curves],
      "oracle_chrf": [float(expected_best_of_n(gold, gold, n)[1].mean()) for n in curves],
      "kl_bound": [math.log(n) - (n - 1) / n for n in curves],
      "chrf_gain_8_vs_1": float(gain.mean()), "chrf_gain_8_vs_1_ci95": [low, high],
      "duplicate_rate": duplicates,
  }
  details = [{"prompt": p, "reference": ref, "candidates": [
      {"text": c, "reward": float(s), "chrf": float(g), "tokens": t.tolist()}
      for c, s, g, t in zip(cs, ps, gs, ts, strict=True)]}
      for p, ref, cs, ps, gs, ts in zip(prompts, references, candidates, proxy, gold, pools,
                                        strict=True)]
  return result, details


def read_pool(out: str) -> tuple[list[str], np.ndarray, list[list[str]], np.ndarray]:
  """(prompts, tokens int [prompts, pool, R], texts, reward-model scores float [prompts,
  pool]) of the candidates `write` stored in `out`: the pool, for reuse (compare_policies)."""
  path = os.path.join(out, CANDIDATES_FILE)
  with open(path) as f:
    details = [json.loads(line) for line in f]
  if details and "tokens" not in details[0]["candidates"][0]:
    raise ValueError(f"{path} holds no candidate tokens (written by an older best_of_n): "
                     f"rerun best_of_n into {out}")
  return ([d["prompt"] for d in details],
          np.array([[c["tokens"] for c in d["candidates"]] for d in details], np.int32),
          [[c["text"] for c in d["candidates"]] for d in details],
          np.array([[c["reward"] for c in d["candidates"]] for d in details], np.float32))


def plot(result: dict[str, Any], path: str) -> str:
  """Reward-model score and gold chrF of best-of-N against N (log scale), saved to `path`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
  axes[0].plot(result["N"], result["rm_score"], "o-")
  axes[0].set(title="reward-model score of best-of-N", xlabel="N", xscale="log")
  axes[1].plot(result["N"], result["gold_chrf"], "o-", label="RM-selected")
  axes[1].plot(result["N"], result["oracle_chrf"], "--", label="oracle (chrF-selected)")
  axes[1].set(title="gold: chrF vs the true summary", xlabel="N", xscale="log")
  axes[1].legend()
  for ax in axes:
    ax.set_xticks(result["N"], [str(n) for n in result["N"]])
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write(result: dict[str, Any], details: list[dict[str, Any]], out: str) -> str:
  """Writes best_of_n.json, best_of_n_candidates.jsonl and best_of_n.png into `out`."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "best_of_n.json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(out, CANDIDATES_FILE), "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in details)
  return plot(result, os.path.join(out, "best_of_n.png"))


def define_sampling_flags(out_holds: str) -> None:
  """The flags of a command that samples held-out prompts and scores the samples with a
  reward model (this one and `compare_policies`): --reward_workdir, --split, --num_prompts,
  --max_new_tokens, --seed and --out (`out_holds`: what goes there)."""
  flags.DEFINE_string("reward_workdir", None, "The reward model.", required=True)
  flags.DEFINE_string("split", "test", "Split whose prompts are used.")
  flags.DEFINE_integer("num_prompts", 0, "Prompts evaluated (0 = all).")
  flags.DEFINE_integer("max_new_tokens", None,
                       "Tokens sampled per response (default: the reward model's response "
                       "budget).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_string("out", None, f"Where {out_holds} go.", required=True)


def define_flags() -> None:
  """The command's flags (defined only when run as a command)."""
  flags.DEFINE_string("policy_workdir", None, "The fine-tuned policy.", required=True)
  flags.DEFINE_integer("pool", 16, "Samples drawn once per prompt.")
  flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
  define_sampling_flags("the JSON and plot")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.pool < 1:
    raise app.UsageError(f"--pool must be >= 1, got {f.pool}")
  try:
    cli.check_output_dir(f.out, "--out")
    result, details = evaluate(f.policy_workdir, f.reward_workdir, f.split, f.num_prompts,
                               f.pool, f.max_new_tokens, f.seed, f.temperature)
  except (ConfigError, FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  write(result, details, f.out)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
