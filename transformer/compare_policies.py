r"""Compares tuned policies with the fine-tuned model on held-out prompts: catches reward hacking.

  python -m transformer.compare_policies --reference_workdir=runs/rlhf/finetune \
      --reward_workdir=runs/rlhf/reward --policy_workdirs=rloo=runs/policy,dpo=runs/dpo \
      --split=test --out=runs/rlhf/compare

The prompts are best_of_n's: each function's code from the split's preference data, its true
summary the chosen response. Every system answers each prompt by sampling as best_of_n samples
(`best_of_n.sample_pool`, temperature 1, one seed):
- `reference`: the fine-tuned model (--reference_workdir), all 8 samples of its pool below
  (with --reference_pool, a best_of_n --out of the same model and prompts: the first 8 of
  each prompt's stored candidates, not sampled anew; the RLHF pipeline passes its bon/);
- `best_of_8`: those 8 samples, the reward model's favourite kept (an actual pick, not
  best_of_n's exact expectation);
- each `name=workdir` of --policy_workdirs (e.g. an RLOO/GRPO `policy` run and a `dpo` run),
  --samples (4) samples per prompt.

A system's per-prompt figure is the mean over its samples of that prompt, so the reference's
expected chrF is estimated from 8 samples, not one, and the paired intervals below are not
widened by the reference's own sampling noise.

Reported per system: the mean reward-model score (bias applied) and its std over responses;
the KL to the reference in nats per response, the Monte-Carlo mean over the system's samples
of Σ_t (log π − log π_ref) of the sampled tokens (`sequence_logprobs`; 0 for the reference by
definition), except for best_of_8, whose samples come from no single model: it reports the
analytic bound log n − (n − 1)/n of best-of-n (not an exact KL); the gold chrF (sacreBLEU,
sentence level, against the true summary) and, for every system but the reference, the paired
bootstrap 95% interval over prompts of chrF(system) − chrF(reference); the mean response
length in tokens (EOS excluded); the EOS rate (share of responses that end within the budget);
the distinct-bigram rate (over one response per prompt, averaged over the sample indices) and
the copy share (`decoding/response_stats.py` defines both); and a verdict: "reward hacking"
when the RM score rises over the reference's while the gold chrF falls (the interval's upper
bound < 0). For each policy the criteria of issue 12 are checked:
score gain >= 0.5 reference reward stds, KL <= 10, EOS rate >= 0.95, chrF interval lower bound
>= −0.5. Writes compare_policies.json, .md (the table, also printed), _samples.jsonl and .png
(reward against KL, one labelled point per system) to --out.
"""

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu
from absl import app, flags

from transformer import best_of_n, cli
from transformer.decoding import response_stats
from transformer.decoding.prompts import decode_outputs
from transformer.models.config import ModelConfig
from transformer.models.logprobs import sequence_logprobs
from transformer.models.registry import build_model
from transformer.special_ids import PAD_ID
from transformer.training import checkpoints
from transformer.training.config import ConfigError
from transformer.training.rewards import load_reward_model

REFERENCE, BEST_OF = "reference", "best_of_8"
# Issue 12's criteria for a policy: (result key, comparison, threshold).
CRITERIA = (("score_gain_in_reference_std", ">=", 0.5), ("kl", "<=", 10.0),
            ("eos_rate", ">=", 0.95), ("chrf_diff_ci95_low", ">=", -0.5))


def parse_policies(items: Sequence[str]) -> dict[str, str]:
  """{name: workdir} of --policy_workdirs items 'name=workdir' (a ValueError naming the flag
  for a malformed, duplicate or reserved name)."""
  policies = {}
  for item in items:
    name, _, workdir = item.partition("=")
    if not name or not workdir:
      raise ValueError(f"--policy_workdirs: {item!r} is not name=workdir (e.g. rloo=runs/policy)")
    if name in policies or name in (REFERENCE, BEST_OF):
      raise ValueError(f"--policy_workdirs: name {name!r} is used twice or reserved "
                       f"({REFERENCE!r}, {BEST_OF!r})")
    policies[name] = workdir
  if not policies:
    raise ValueError("--policy_workdirs: expected at least one name=workdir")
  return policies


def check_policy_run(workdir: str, name: str) -> None:
  """ConfigError `<name>=<workdir> ...` unless `workdir` is a training run of a language
  model (any stage but 'reward')."""
  config = checkpoints.read_config(workdir) if os.path.isdir(workdir) else None
  if config is None:
    raise ConfigError(f"{name}={workdir!r} is not a training workdir (no "
                      f"{checkpoints.CONFIG_FILE}); expected a finetune, policy or dpo run")
  if config.stage == "reward":
    raise ConfigError(f"{name}={workdir!r} is a reward run; expected a finetune, policy or "
                      "dpo run")


def response_kl(policy: tuple[ModelConfig, Any], reference: tuple[ModelConfig, Any],
                prompts: Sequence[np.ndarray], responses: np.ndarray,
                batch_size: int = 64) -> np.ndarray:
  """float [n]: Σ_t (log π − log π_ref) of each sampled response under the two models.

  Args:
    policy, reference: (eval ModelConfig, params) of π and π_ref.
    prompts: n token arrays, cut as the sampler cut them (`prompt_limit`).
    responses: int [n, R], the sampler's tokens (EOS included where sampled, then PAD).
  """
  width = max(len(p) for p in prompts)
  totals = []
  for config, params in (policy, reference):
    model = build_model(config)
    logprobs = jax.jit(lambda p, x, y, model=model: sequence_logprobs(model, p, x, y)[1])
    total = []
    for start in range(0, len(prompts), batch_size):
      rows = list(range(start, min(start + batch_size, len(prompts))))
      rows += [rows[-1]] * (batch_size - len(rows))  # one compiled shape
      tokens = np.full((batch_size, width), PAD_ID, np.int32)
      for j, i in enumerate(rows):
        tokens[j, :len(prompts[i])] = prompts[i]
      out = logprobs(params, jnp.asarray(tokens), jnp.asarray(responses[rows]))
      total.append(np.asarray(out)[:min(batch_size, len(prompts) - start)])
    totals.append(np.concatenate(total))
  return totals[0] - totals[1]


def verdict(score_gain: float, chrf_ci95: Sequence[float] | None) -> str:
  """The reward-hacking verdict of a system whose RM score is `score_gain` above the
  reference's and whose chrF − reference chrF has the 95% interval `chrf_ci95` (None: the
  reference itself)."""
  if chrf_ci95 is None:
    return "the reference"
  low, high = chrf_ci95
  if score_gain > 0 and high < 0:
    return "reward hacking: RM score up, gold chrF below the reference"
  if low > 0:
    return "no reward hacking: gold chrF above the reference"
  if high < 0:
    return "no reward hacking (RM score not up), but gold chrF below the reference"
  return "no reward hacking: gold chrF within the reference's"


def criteria(system: dict[str, Any]) -> dict[str, dict[str, Any]]:
  """{criterion: {'value', 'threshold', 'passed'}} of issue 12 for one policy's figures."""
  values = {**system, "chrf_diff_ci95_low": system["chrf_diff_ci95"][0]}
  return {key: {"value": values[key], "threshold": f"{op} {threshold}",
                "passed": bool(values[key] >= threshold if op == ">=" else
                               values[key] <= threshold)}
          for key, op, threshold in CRITERIA}


def stored_pool(out: str, prompts: list[str], best_of: int,
                max_new_tokens: int) -> tuple[np.ndarray, list[list[str]], np.ndarray]:
  """The first `best_of` candidates per prompt of best_of_n's pool in `out` (`read_pool`):
  (tokens [prompts, best_of, R], texts, scores [prompts, best_of]); a ValueError unless it
  holds these prompts, in order, with at least `best_of` candidates each, sampled with
  `max_new_tokens` (R) as the policies are."""
  stored, tokens, texts, scores = best_of_n.read_pool(out)
  if stored and tokens.shape[2] != max_new_tokens:
    raise ValueError(f"reference_pool={out!r} was sampled with {tokens.shape[2]} new tokens, "
                     f"not the {max_new_tokens} compared")
  if stored != prompts:
    raise ValueError(f"reference_pool={out!r} holds {len(stored)} other prompts than the "
                     f"{len(prompts)} compared (another split or --num_prompts)")
  if tokens.shape[1] < best_of:
    raise ValueError(f"reference_pool={out!r} has {tokens.shape[1]} candidates per prompt, "
                     f"fewer than best_of={best_of}")
  return tokens[:, :best_of], [t[:best_of] for t in texts], scores[:, :best_of]


def system_figures(tokens: np.ndarray, texts: list[list[str]], scores: np.ndarray,
                   kl: np.ndarray | float, chrf: np.ndarray, prompts: list[str],
                   reference: dict[str, Any] | None) -> dict[str, Any]:
  """The reported figures of one system (`reference`: the reference's, None for itself).

  Args:
    tokens: int [n, m, R], m sampled responses to each of n prompts; texts: their n lists
      of m decoded outputs.
    scores, chrf: float [n, m] reward-model score and gold chrF per response.
    kl: float [n, m] per-response KL estimates, or one bound (best-of-n).
    prompts: the n prompts.
  """
  flat = tokens.reshape(-1, tokens.shape[-1])
  outputs = [t for ts in texts for t in ts]
  figures = {
      "rm_score": float(scores.mean()), "rm_score_std": float(scores.std()),
      "samples_per_prompt": int(scores.shape[1]),
      "kl": float(np.mean(kl)), "kl_estimate": "bound log n - (n-1)/n" if np.isscalar(kl)
      else "monte carlo: mean of sum_t (log pi - log pi_ref) over the samples",
      "chrf": float(chrf.mean()), "chrf_diff": None, "chrf_diff_ci95": None,
      "length": float(response_stats.token_lengths(flat).mean()),
      "eos_rate": float(response_stats.ended(flat).mean()),
      # per sample index (one response per prompt), so that systems of different sample
      # counts compare: the samples of one prompt share bigrams with each other
      "distinct_bigrams": float(np.mean([response_stats.distinct_bigram_rate(
          [ts[j] for ts in texts]) for j in range(scores.shape[1])])),
      "copy_share": response_stats.copy_share(
          outputs, [p for p, ts in zip(prompts, texts, strict=True) for _ in ts]),
  }
  per_prompt = chrf.mean(axis=1)
  if reference is not None:
    difference = per_prompt - reference["per_prompt_chrf"]
    low, high = best_of_n.paired_bootstrap(difference)
    figures.update(chrf_diff=float(difference.mean()), chrf_diff_ci95=[low, high],
                   score_gain_in_reference_std=(figures["rm_score"] - reference["rm_score"])
                   / max(reference["rm_score_std"], 1e-8))
  gain = 0.0 if reference is None else figures["rm_score"] - reference["rm_score"]
  figures["verdict"] = verdict(gain, figures["chrf_diff_ci95"])
  figures["per_prompt_chrf"] = per_prompt
  return figures


def evaluate(reference_workdir: str, reward_workdir: str, policies: dict[str, str],
             split: str = "test", num_prompts: int = 0, max_new_tokens: int | None = None,
             seed: int = 0, best_of: int = 8, samples: int = 4, batch_size: int = 128,
             reference_pool: str = "") -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """(the comparison JSON of the module docstring, per-prompt outputs of every system);
  `samples`: responses per prompt of each policy; `reference_pool`: a best_of_n output
  directory of the same reference, reward model and prompts, whose pool's first `best_of`
  candidates per prompt are the reference's samples (instead of sampling them anew)."""
  if num_prompts < 0:
    raise ConfigError(f"num_prompts={num_prompts}: expected 0 (every prompt of the split) or "
                      "a positive number")
  if samples < 1:
    raise ConfigError(f"samples={samples}: expected at least 1 response per prompt")
  check_policy_run(reference_workdir, "--reference_workdir")
  for name, workdir in policies.items():
    check_policy_run(workdir, f"--policy_workdirs {name}")
  rm = load_reward_model(reward_workdir)
  for name, workdir in [("--reference_workdir", reference_workdir), *policies.items()]:
    rm.check_tokenizer(workdir, name)
  max_new_tokens = best_of_n.sampling_budget(rm, max_new_tokens)
  prompts, summaries = best_of_n.held_out_prompts(rm, split, num_prompts)
  encoded = [rm.tokenizer.encode(p) for p in prompts]
  reference = checkpoints.load_params_for_inference(reference_workdir)[:2]

  def draw(model, pool):  # tokens int [prompts, pool, R], texts, scores float [prompts, pool]
    tokens = np.array(best_of_n.sample_pool(*model, encoded, pool, max_new_tokens=max_new_tokens,
                                            seed=seed, batch_size=batch_size))
    texts = [decode_outputs(rm.tokenizer, t) for t in tokens]
    scores = rm.score_texts([p for p in prompts for _ in range(pool)],
                            [t for ts in texts for t in ts], cut_responses=True)
    return tokens, texts, scores.reshape(len(prompts), pool)

  def gold(texts):  # float [prompts, m]
    return np.array([[sacrebleu.sentence_chrf(t, [s]).score for t in ts]
                     for ts, s in zip(texts, summaries, strict=True)])

  def kl(policy, tokens):  # float [prompts, m]
    n, m, width = tokens.shape
    cut = [p[:best_of_n.prompt_limit(policy[0], max_new_tokens)] for p in encoded]
    return response_kl(policy, reference, [p for p in cut for _ in range(m)],
                       tokens.reshape(n * m, width)).reshape(n, m)

  if reference_pool:
    tokens, texts, scores = stored_pool(reference_pool, prompts, best_of, max_new_tokens)
  else:
    tokens, texts, scores = draw(reference, best_of)
  pick = np.argmax(scores, axis=1)
  rows = np.arange(len(prompts))
  systems = {REFERENCE: (tokens, texts, scores, np.zeros(scores.shape)),
             BEST_OF: (tokens[rows, pick][:, None], [[t[i]] for t, i in zip(texts, pick,
                                                                           strict=True)],
                       scores[rows, pick][:, None], math.log(best_of) - (best_of - 1) / best_of)}
  for name, workdir in policies.items():
    policy = checkpoints.load_params_for_inference(workdir)[:2]
    tokens, texts, scores = draw(policy, samples)
    systems[name] = (tokens, texts, scores, kl(policy, tokens))
  figures, chrfs = {}, {}
  for name, (tokens, texts, scores, divergence) in systems.items():
    chrfs[name] = gold(texts)
    figures[name] = system_figures(tokens, texts, scores, divergence, chrfs[name], prompts,
                                   figures.get(REFERENCE))
  details = [{"prompt": p, "reference": s, "outputs": {
      name: {"texts": systems[name][1][i], "rewards": systems[name][2][i].tolist(),
             "chrf": chrfs[name][i].tolist()} for name in systems}}
      for i, (p, s) in enumerate(zip(prompts, summaries, strict=True))]
  for f in figures.values():
    del f["per_prompt_chrf"]
  result = {
      "split": split, "prompts": len(prompts), "temperature": 1.0, "seed": seed,
      "max_new_tokens": max_new_tokens, "best_of": best_of, "samples": samples,
      "workdirs": {REFERENCE: reference_workdir, "reward": reward_workdir, **policies},
      "systems": figures,
      "criteria": {name: criteria(figures[name]) for name in policies},
  }
  return result, details


def _number(value: float | None, digits: int = 2) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def table(result: dict[str, Any]) -> str:
  """The markdown table of every system's figures, then each policy's criteria."""
  lines = ["| system | RM score (std) | KL (nats) | chrF | chrF − ref [95% CI] | length | "
           "EOS rate | distinct bigrams | copy share | verdict |",
           "|" + "---|" * 10]
  for name, s in result["systems"].items():
    ci = s["chrf_diff_ci95"]
    diff = "–" if ci is None else f"{s['chrf_diff']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    lines.append(f"| {name} | {s['rm_score']:.2f} ({s['rm_score_std']:.2f}) | {s['kl']:.2f} | "
                 f"{s['chrf']:.2f} | {diff} | {s['length']:.1f} | {s['eos_rate']:.2f} | "
                 f"{s['distinct_bigrams']:.2f} | {s['copy_share']:.2f} | {s['verdict']} |")
  for name, checks in result["criteria"].items():
    lines.append("")
    lines.append(f"{name}: " + "; ".join(
        f"{key} = {_number(c['value'])} ({c['threshold']}): {c['passed']}"
        for key, c in checks.items()))
  return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str) -> str:
  """Mean reward-model score against KL to the reference, one labelled point per system."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for name, s in result["systems"].items():
    ax.plot(s["kl"], s["rm_score"], "o")
    ax.annotate(name, (s["kl"], s["rm_score"]), textcoords="offset points", xytext=(4, 4))
  ax.set(title="reward-model score against KL", xlabel="KL to the reference (nats/response)",
         ylabel="mean reward-model score")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write(result: dict[str, Any], details: list[dict[str, Any]], out: str) -> str:
  """Writes compare_policies.json, .md, _samples.jsonl and .png into `out`; the table."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "compare_policies.json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(out, "compare_policies_samples.jsonl"), "w") as f:
    f.writelines(json.dumps(d) + "\n" for d in details)
  text = table(result)
  with open(os.path.join(out, "compare_policies.md"), "w") as f:
    f.write(text)
  plot(result, os.path.join(out, "compare_policies.png"))
  return text


def define_flags() -> None:
  """The command's flags (defined only when run as a command)."""
  flags.DEFINE_string("reference_workdir", None, "The fine-tuned model (the reference).",
                      required=True)
  flags.DEFINE_list("policy_workdirs", None, "Policies to compare: name=workdir,...",
                    required=True)
  flags.DEFINE_integer("samples", 4, "Responses sampled per prompt from each policy.")
  flags.DEFINE_string("reference_pool", "",
                      "A best_of_n --out directory of the same reference and prompts: its first "
                      "8 candidates per prompt are the reference's samples ('' = sample them).")
  best_of_n.define_sampling_flags("the JSON, table and plot")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  policies = parse_policies(f.policy_workdirs)
  cli.check_output_dir(f.out, "--out")
  result, details = evaluate(f.reference_workdir, f.reward_workdir, policies, f.split,
                             f.num_prompts, f.max_new_tokens, f.seed, samples=f.samples,
                             reference_pool=f.reference_pool)
  print(write(result, details, f.out), end="")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
