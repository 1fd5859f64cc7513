r"""Evaluates a trained run on any split; the report goes to DIR/eval/ as JSON and to stdout.

  python -m transformer.evaluate --workdir=runs/quickstart --split=test
  python -m transformer.evaluate --workdir=runs/quickstart --split=test --average_last=2
  python -m transformer.evaluate --workdir=runs/quickstart --split=validation --method=greedy

The run's own metrics, with its own assembly (`assemble` of its saved config.json, read and
changed in memory only: the split, the data dir if --data_dir, and a data-parallel layout over
this machine's devices), its own eval step and its tokenizer:
- every stage: the stage's eval metrics over the whole split (or --max_batches): pretrain and
  finetune loss (the smoothed objective), nll, token accuracy and perplexity = exp(nll); the
  reward stage loss and pairwise accuracy (chosen scored above rejected);
- seq2seq: the split's inputs decoded (beam search with beam 4 and the paper's length penalty
  α = 0.6 by default; --method=greedy or sample) and scored against the references: corpus
  sacreBLEU and chrF (sacreBLEU's defaults, signatures reported) and exact match.
The params are the latest checkpoint's, --step's, the mean of the last --average_last
checkpoints (averaged on the fly), or a saved average (--averaged=DIR/averaged/step<N>-avg<K>).

The report (split, checkpoint step(s), decoding settings, metrics, three samples) is written to
DIR/eval/<split>-step<N>[-avg<K>].json (or --output) and printed as JSON on stdout; progress
lines go to stderr. Nothing else in DIR changes. Usage errors are one line (exit status 2).
"""

import itertools
import json
import os
import sys
import time
from typing import Any

from absl import app, flags, logging

from transformer import command_line, decoding

EVAL_DIR = "eval"

_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir to evaluate.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "The data split: train, validation or test.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
_AVERAGE_LAST = flags.DEFINE_integer(
    "average_last", 0, "Evaluate the mean of the last K checkpoints (0: no averaging).")
_AVERAGED = flags.DEFINE_string(
    "averaged", None, "A saved average (DIR/averaged/step<N>-avg<K>) to evaluate.")
_MAX_BATCHES = flags.DEFINE_integer(
    "max_batches", 0, "Batches of the split to score and decode (0: the whole split).")
_DECODE = flags.DEFINE_bool("decode", True, "Seq2seq: decode the split for BLEU, chrF and exact "
                            "match (--nodecode: loss metrics only).")
_METHOD = flags.DEFINE_enum("method", "beam", list(decoding.METHODS), "Decoding method.")
_BEAM_SIZE = flags.DEFINE_integer("beam_size", 4, "Beam size (--method=beam; the paper: 4).")
_ALPHA = flags.DEFINE_float("alpha", 0.6, "Length penalty exponent (--method=beam; paper: 0.6).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature (--method=sample).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (--method=sample).")
_MAX_NEW_TOKENS = flags.DEFINE_integer(
    "max_new_tokens", None, "Longest output in tokens (default: the run's max_decode_length).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data dir, if the run's data moved (default: the run's data.data_dir).")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Where to write the JSON (default: DIR/eval/<split>-step<N>[-avg<K>].json).")


def run_config(workdir: str, split: str, data_dir: str | None = None) -> Any:
  """The run's saved config for evaluating `split`: config.json over the schema's defaults
  (fields added since the run keep their defaults), the split and data dir set, and a
  data-parallel layout over this machine's devices; nothing is written."""
  from transformer.training import checkpoints
  from transformer.training.config import default_config

  saved = checkpoints.read_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"no {checkpoints.CONFIG_FILE} in {workdir}: not a training workdir")
  config = default_config()
  with config.unlocked():
    config.update(saved.to_dict())
  config.eval_split = split
  config.parallelism.update(mode="jit", data=-1, fsdp=1, tensor=1)
  if data_dir is not None:
    config.data.data_dir = data_dir
  return config


def output_path(workdir: str, split: str, steps: list[int]) -> str:
  """DIR/eval/<split>-step<last>[-avg<K>].json."""
  average = f"-avg{len(steps)}" if len(steps) > 1 else ""
  return os.path.join(workdir, EVAL_DIR, f"{split}-step{max(steps)}{average}.json")


def evaluate_run(workdir: str, split: str = "test", *, step: int | None = None,
                 average_last: int = 0, averaged: str | None = None, max_batches: int = 0,
                 decode: bool = True, method: str = "beam", beam_size: int = 4,
                 alpha: float = 0.6, temperature: float = 1.0, seed: int = 0,
                 max_new_tokens: int | None = None, data_dir: str | None = None,
                 output: str | None = None, print_fn=print) -> dict[str, Any]:
  """Evaluates the run in `workdir` on `split` (see the module docstring); writes the report to
  `output` (default `output_path`) and returns it."""
  import jax

  from transformer.data import pipeline
  from transformer.decoding.evaluation import evaluate_seq2seq
  from transformer.training import averaging, checkpoints
  from transformer.training.assembly import assemble
  from transformer.training.loop import evaluate_sums, make_data

  config = run_config(workdir, split, data_dir)
  parts = assemble(config)
  tokenizer_file = checkpoints.tokenizer_path(workdir)
  if not os.path.exists(tokenizer_file):
    raise FileNotFoundError(f"no {os.path.basename(tokenizer_file)} in {workdir}")
  tokenizer = pipeline.load_tokenizer_for(config.data, tokenizer_file)
  params, steps = averaging.load_params(workdir, step=step, average_last=average_last,
                                        averaged=averaged)
  params = jax.device_put(params, parts.layout.state_sharding.params)
  batches = f"{max_batches} batches" if max_batches else "all batches"
  start = time.perf_counter()
  print_fn(f"scoring {split} ({batches}) with the params of step(s) {steps} ...")
  sums = evaluate_sums(parts, params, make_data(config, split, tokenizer, train=False),
                       max_batches)
  report: dict[str, Any] = {
      "workdir": os.path.abspath(workdir), "split": split, "step": max(steps), "steps": steps,
      "params": ("averaged " + averaged) if averaged else (
          f"mean of the last {len(steps)} checkpoints" if average_last else "checkpoint"),
      "stage": config.stage, "metrics": parts.stage.summarize(sums)}
  print_fn(f"scored in {time.perf_counter() - start:.1f}s: " + ", ".join(
      f"{k} {v:.4f}" for k, v in report["metrics"].items()))
  if decode and config.data.task == "seq2seq":
    settings = {"method": method,
                "max_new_tokens": max_new_tokens or config.max_decode_length}
    if method == "beam":
      settings.update(beam_size=beam_size, alpha=alpha)
    if method == "sample":
      settings.update(temperature=temperature, seed=seed)
    start = time.perf_counter()
    print_fn(f"decoding {split} ({batches}; {settings}) ...")
    data = make_data(config, split, tokenizer, train=False)
    scores = evaluate_seq2seq(
        parts.model_config.eval(), params, tokenizer,
        itertools.islice(data, max_batches) if max_batches else data,
        rng=jax.random.key(seed) if method == "sample" else None, **settings)
    print_fn(f"decoded {scores['examples']} examples in {time.perf_counter() - start:.1f}s: "
             f"sacreBLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}, "
             f"exact match {scores['exact_match']:.4f}")
    report["decoding"] = settings
    report.update({k: scores[k] for k in ("bleu", "bleu_signature", "chrf", "chrf_signature",
                                          "exact_match", "examples")})
    report["samples"] = [dict(zip(("input", "output", "reference"), s)) for s in scores["samples"]]
  path = output or output_path(workdir, split, steps)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(report, f, indent=2)
  os.replace(path + ".tmp", path)
  print_fn(f"wrote {path}")
  return report


def main(argv: list[str]) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:  # library INFO logs off unless asked for
    logging.set_verbosity(logging.WARNING)
  from transformer.training.config import ConfigError

  to_stderr = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
  try:
    report = evaluate_run(
        _WORKDIR.value, _SPLIT.value, step=_STEP.value, average_last=_AVERAGE_LAST.value,
        averaged=_AVERAGED.value, max_batches=_MAX_BATCHES.value, decode=_DECODE.value,
        method=_METHOD.value, beam_size=_BEAM_SIZE.value, alpha=_ALPHA.value,
        temperature=_TEMPERATURE.value, seed=_SEED.value, max_new_tokens=_MAX_NEW_TOKENS.value,
        data_dir=_DATA_DIR.value, output=_OUTPUT.value, print_fn=to_stderr)
  except (ConfigError, FileNotFoundError, ValueError) as e:
    command_line.fail(f"--workdir={_WORKDIR.value}: {e}")
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=command_line.parse_flags)
