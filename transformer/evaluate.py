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

import json
import sys

from absl import flags

from transformer import cli, decoding

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


def main(argv: list[str]) -> None:
  del argv
  from transformer.training.config import ConfigError
  from transformer.training.evaluation import evaluate_run

  to_stderr = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
  try:
    report = evaluate_run(
        _WORKDIR.value, _SPLIT.value, step=_STEP.value, average_last=_AVERAGE_LAST.value,
        averaged=_AVERAGED.value, max_batches=_MAX_BATCHES.value, decode=_DECODE.value,
        method=_METHOD.value, beam_size=_BEAM_SIZE.value, alpha=_ALPHA.value,
        temperature=_TEMPERATURE.value, seed=_SEED.value, max_new_tokens=_MAX_NEW_TOKENS.value,
        data_dir=_DATA_DIR.value, output=_OUTPUT.value, print_fn=to_stderr)
  except (ConfigError, FileNotFoundError, ValueError) as e:
    cli.fail(f"--workdir={_WORKDIR.value}: {e}")
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  cli.run(main)
