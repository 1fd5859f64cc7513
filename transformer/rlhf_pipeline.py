r"""The RLHF pipeline in one command: pretrain, fine-tune, reward model, DPO and RLOO, evaluations.

  python -m transformer.rlhf_pipeline --workdir=runs/rlhf
  python -m transformer.rlhf_pipeline --workdir=runs/rlhf_lm --architecture=decoder_only

Each training stage is an ordinary experiment file run by the ordinary loop in its own
subfolder of --workdir, initialised from the stage before, one architecture throughout
(--architecture: encoder_decoder, the default, or decoder_only):

  pretrain/          experiments/pretrain_span.py (encoder-decoder, span corruption) or
                     experiments/pretrain_lm.py (decoder-only, causal LM), on the stdlib source
  finetune/          experiments/finetune_lm.py:<architecture>  code -> summary, init_from
                     pretrain/
  finetune_scratch/  the same from scratch (same tokenizer and budget: what pretraining bought)
  reward/            experiments/reward.py:<architecture>  reward model, init_from finetune/
  dpo/               experiments/dpo.py:<architecture>  offline DPO on the preference pairs,
                     init_from finetune/ (its frozen copy the reference)
  policy/            experiments/policy.py:<architecture>  online RLOO against reward/,
                     init_from finetune/ (its frozen copy the reference)
  eval_reward.json   held-out pairwise accuracy against the likelihood baseline
  bon/               best-of-N (16 samples per test prompt): JSON and plot
  compare/           fine-tuned vs best-of-8 vs RLOO vs DPO on the test prompts
                     (transformer.compare_policies; the fine-tuned model's 8 samples per
                     prompt are the first 8 of bon/'s pool): table, JSON, reward-against-KL
                     plot

It resumes wherever it stopped: a stage whose workdir holds the checkpoint of its last step
(and, for the reward model, its bias) is skipped without building anything, and so are
evaluations whose JSON exists. It ends with a summary table (stage, steps, wall time, key
metrics) printed and written, with the plots, to <workdir>/report.md. `--tiny` runs the
experiments' tiny variants (a smoke test in seconds).
"""

import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from absl import app, flags

from transformer import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHITECTURES = ("encoder_decoder", "decoder_only")
PRETRAIN = {"encoder_decoder": "pretrain_span", "decoder_only": "pretrain_lm"}
STAGE_NAMES = ("pretrain", "finetune", "finetune_scratch", "reward", "dpo", "policy")


def stages(architecture: str) -> tuple[tuple[str, str, str | None, str | None], ...]:
  """(name, experiment[:variant], init_from, tokenizer from) of each training stage, in
  order."""
  return (("pretrain", PRETRAIN[architecture], None, None),
          ("finetune", f"finetune_lm:{architecture}", "pretrain", None),
          ("finetune_scratch", f"finetune_lm:{architecture}", None, "pretrain"),
          ("reward", f"reward:{architecture}", "finetune", None),
          ("dpo", f"dpo:{architecture}", "finetune", None),
          ("policy", f"policy:{architecture}", "finetune", None))


TIMES_FILE = "pipeline_times.json"
PIPELINE_FILE = "pipeline.json"  # the architecture and size a workdir's stages were run with


def load_experiment(experiment: str, tiny: bool) -> Any:
  """`get_config(arg)` of experiments/<name>.py for 'name[:variant]' (with ',tiny' if
  `tiny`), loaded by path as --config does."""
  name, _, variant = experiment.partition(":")
  arg = ",".join(word for word in (variant, "tiny" if tiny else "") if word) or None
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def stage_done(workdir: str, config: Any) -> bool:
  """Whether `workdir` holds the checkpoint of the run's last step (and a reward's bias)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return False
  steps = [int(s) for s in os.listdir(directory) if s.isdigit()]
  if config.num_train_steps not in steps:
    return False
  if config.stage == "reward":
    path = os.path.join(workdir, "reward_bias.json")
    if not os.path.exists(path):
      return False
    with open(path) as f:
      return json.load(f)["step"] == config.num_train_steps
  return True


def _times(workdir: str) -> dict[str, float]:
  path = os.path.join(workdir, TIMES_FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _record_time(workdir: str, name: str, seconds: float) -> None:
  times = _times(workdir)
  times[name] = times.get(name, 0.0) + seconds
  with open(os.path.join(workdir, TIMES_FILE), "w") as f:
    json.dump(times, f, indent=1)


def last_eval(workdir: str) -> dict[str, float]:
  """The last eval record of a run's metrics.jsonl."""
  from transformer.training import writer  # pylint: disable=g-import-not-at-top
  rows = [r for r in writer.read_jsonl(workdir) if r.get("split") == "eval"]
  return rows[-1] if rows else {}


def run_pipeline(workdir: str, *, architecture: str = "encoder_decoder", tiny: bool = False,
                 data_dir: str = "", num_prompts: int = 0,
                 print_fn: Callable[[str], None] = print) -> str:
  """Runs (or resumes) every stage and evaluation; returns the report's path.

  Raises ValueError for an unknown architecture or a workdir holding another one's pipeline.
  """
  if architecture not in ARCHITECTURES:
    raise ValueError(f"--architecture must be one of {ARCHITECTURES}, got {architecture!r}")
  os.makedirs(workdir, exist_ok=True)
  marker = os.path.join(workdir, PIPELINE_FILE)
  if os.path.exists(marker):
    with open(marker) as f:
      held = json.load(f)
    if held != {"architecture": architecture, "tiny": tiny}:
      raise ValueError(f"--workdir={workdir} holds the pipeline of {held}, not of "
                       f"architecture={architecture!r}, tiny={tiny}: use another workdir")
  else:
    with open(marker, "w") as f:
      json.dump({"architecture": architecture, "tiny": tiny}, f)
  configs = {}
  for name, experiment, init_from, tokenizer_from in stages(architecture):
    config = load_experiment(experiment, tiny)
    config.data.data_dir = data_dir or config.data.data_dir
    stage_dir = os.path.join(workdir, name)
    if init_from:
      config.init_from = os.path.join(workdir, init_from)
    if config.stage == "policy":
      config.policy.reward_workdir = os.path.join(workdir, "reward")
    configs[name] = config
    if stage_done(stage_dir, config):
      print_fn(f"[{name}] done ({config.num_train_steps} steps in {stage_dir}): skipped")
      continue
    if tokenizer_from:  # the same tokenizer: validation losses compare per token
      source = os.path.join(workdir, tokenizer_from, "spm.model")
      os.makedirs(stage_dir, exist_ok=True)
      if not os.path.exists(os.path.join(stage_dir, "spm.model")):
        shutil.copyfile(source, os.path.join(stage_dir, "spm.model"))
    file, _, variant = experiment.partition(":")
    print_fn(f"[{name}] experiments/{file}.py{':' + variant if variant else ''} -> {stage_dir}"
             + (f" (init_from {config.init_from})" if init_from else ""))
    from transformer.training.loop import run  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    run(config, stage_dir, print_fn=lambda line, n=name: print_fn(f"[{n}] {line}"))
    _record_time(workdir, name, time.perf_counter() - start)

  eval_path = os.path.join(workdir, "eval_reward.json")
  if not os.path.exists(eval_path):
    from transformer import evaluate_reward  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    result = evaluate_reward.evaluate(os.path.join(workdir, "reward"),
                                      os.path.join(workdir, "finetune"), "test")
    with open(eval_path, "w") as f:
      json.dump(result, f, indent=1)
    _record_time(workdir, "eval_reward", time.perf_counter() - start)
  with open(eval_path) as f:
    evaluation = json.load(f)
  print_fn("[eval_reward] " + json.dumps(evaluation))

  bon_path = os.path.join(workdir, "bon", "best_of_n.json")
  if not os.path.exists(bon_path):
    from transformer import best_of_n  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    result, details = best_of_n.evaluate(
        os.path.join(workdir, "finetune"), os.path.join(workdir, "reward"), "test",
        num_prompts=num_prompts, pool=16, max_new_tokens=8 if tiny else None)
    best_of_n.write(result, details, os.path.join(workdir, "bon"))
    _record_time(workdir, "best_of_n", time.perf_counter() - start)
  with open(bon_path) as f:
    bon = json.load(f)
  print_fn("[best_of_n] " + json.dumps(bon))

  compare_dir = os.path.join(workdir, "compare")
  if not os.path.exists(os.path.join(compare_dir, "compare_policies.json")):
    from transformer import compare_policies  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    result, details = compare_policies.evaluate(
        os.path.join(workdir, "finetune"), os.path.join(workdir, "reward"),
        {"rloo": os.path.join(workdir, "policy"), "dpo": os.path.join(workdir, "dpo")}, "test",
        num_prompts=num_prompts, max_new_tokens=8 if tiny else None,
        reference_pool=os.path.join(workdir, "bon"))  # best_of_n's samples of the reference
    compare_policies.write(result, details, compare_dir)
    _record_time(workdir, "compare_policies", time.perf_counter() - start)
  with open(os.path.join(compare_dir, "compare_policies.md")) as f:
    comparison = f.read()
  print_fn("[compare_policies]\n" + comparison)
  return write_report(workdir, configs, evaluation, bon, comparison, print_fn)


def _fmt(value: Any) -> str:
  return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def write_report(workdir: str, configs: dict[str, Any], evaluation: dict[str, Any],
                 bon: dict[str, Any], comparison: str, print_fn: Callable[[str], None]) -> str:
  """The summary table, printed and written with the plots and the policies' comparison (a
  markdown table) to <workdir>/report.md."""
  times = _times(workdir)
  rows = []
  for name in STAGE_NAMES:
    metrics = last_eval(os.path.join(workdir, name))
    if name == "reward":
      key = (f"val accuracy {_fmt(metrics.get('accuracy'))}, "
             f"test RM accuracy {_fmt(evaluation['rm_accuracy'])} vs likelihood "
             f"{_fmt(evaluation['likelihood_accuracy'])}")
    elif name == "dpo":
      key = (f"val implicit-reward accuracy {_fmt(metrics.get('accuracy'))}, "
             f"margin {_fmt(metrics.get('margin'))}")
    elif name == "policy":
      key = ", ".join(f"val {field} {_fmt(metrics.get(field))}"
                      for field in ("score", "kl", "eos_rate", "response_length"))
    else:
      key = f"val loss {_fmt(metrics.get('loss'))}"
    rows.append((name, str(configs[name].num_train_steps), f"{times.get(name, 0.0):.0f} s", key))
  rows.append(("eval_reward", "-", f"{times.get('eval_reward', 0.0):.0f} s",
               f"train chosen mean {_fmt(evaluation.get('train_chosen_mean'))}, test chosen "
               f"mean {_fmt(evaluation['rm_chosen_mean'])}, rejected "
               f"{_fmt(evaluation['rm_rejected_mean'])}"))
  gains = dict(zip(bon["N"], bon["gold_chrf"], strict=True))
  rows.append(("best_of_n", "-", f"{times.get('best_of_n', 0.0):.0f} s",
               "RM score " + " / ".join(f"{s:.2f}" for s in bon["rm_score"])
               + f" at N={bon['N']}; chrF N=1 {gains[1]:.2f}, N=8 {gains.get(8, 0.0):.2f} "
               f"(gain CI95 {bon['chrf_gain_8_vs_1_ci95'][0]:.2f}.."
               f"{bon['chrf_gain_8_vs_1_ci95'][1]:.2f})"))
  rows.append(("compare_policies", "-", f"{times.get('compare_policies', 0.0):.0f} s",
               "fine-tuned vs best-of-8 vs RLOO vs DPO on the test prompts: see below"))
  total = sum(times.values())
  table = ["| stage | steps | wall time | key metrics |", "|---|---|---|---|"]
  table += [f"| {' | '.join(r)} |" for r in rows]
  table.append(f"| total | | {total:.0f} s | |")
  text = "\n".join(table)
  print_fn(text)
  plots = [f"![{name}]({name}/curves.png)" for name in STAGE_NAMES
           if os.path.exists(os.path.join(workdir, name, "curves.png"))]
  report = os.path.join(workdir, "report.md")
  with open(report, "w") as f:
    f.write("# RLHF pipeline report\n\n" + text + "\n\n## Fine-tuned, best-of-8, RLOO and DPO"
            " on the test prompts\n\n" + comparison
            + "\n![reward against KL](compare/compare_policies.png)\n\n## Best-of-N\n\n"
            "![best-of-N](bon/best_of_n.png)\n\n```json\n" + json.dumps(bon, indent=1)
            + "\n```\n\n## Reward model on the test split\n\n```json\n"
            + json.dumps(evaluation, indent=1) + "\n```\n\n## Training curves\n\n"
            + "\n\n".join(plots) + "\n")
  print_fn(f"report: {report}")
  return report


def define_flags() -> None:
  """The command's flags (defined only when run as a command)."""
  flags.DEFINE_string("workdir", None, "Where every stage's subfolder goes.", required=True)
  flags.DEFINE_enum("architecture", "encoder_decoder", ARCHITECTURES,
                    "The one architecture of every stage.")
  flags.DEFINE_bool("tiny", False, "Run the experiments' tiny variants (a smoke test).")
  flags.DEFINE_string("data_dir", "", "TFDS data dir of the corpus ('' = default).")
  flags.DEFINE_integer("num_prompts", 0, "Test prompts of the best-of-N eval (0 = all).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  start = time.perf_counter()
  run_pipeline(f.workdir, architecture=f.architecture, tiny=f.tiny, data_dir=f.data_dir,
               num_prompts=f.num_prompts, print_fn=lambda line: print(line, flush=True))
  print(f"pipeline finished in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
