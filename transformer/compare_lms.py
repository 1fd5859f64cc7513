r"""Compares the language-model families on one token budget: one table, one plot.

  python -m transformer.compare_lms --config=experiments/compare_lms.py --workdir=runs/compare_lms

Flags:
  --config=experiments/compare_lms.py[:large]   the comparison (run, models, ngram_orders);
  --config.<field>=<value>                      overrides a field, e.g.
                                                --config.run.num_train_steps=400;
  --workdir=DIR                                 the runs, the n-gram records, comparison.md and
                                                comparison.png (a rerun resumes).

The LSTM, gated CNN and Transformer train through the ordinary trainer on the same batches,
the Kneser-Ney n-grams count exactly those tokens, and every model is scored on the whole
validation split (`transformer/training/comparison.py`). Bad flags and configs are one line
on stderr, exit status 2, before anything trains (`transformer.cli`).
"""

from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from transformer import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Comparison file (experiments/compare_lms.py[:large]); override a field "
    "with --config.<field>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the comparison (resumed if present).")


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags and loads the config; a bad flag, experiment file or field is one line on
  stderr, exit status 2."""
  try:
    remaining = flags.FLAGS(argv)
    if _CONFIG.value is None:
      raise flags.Error("--config is required (e.g. --config=experiments/compare_lms.py)")
    _CONFIG.value.keys()  # a config file that failed to load raises here
    return remaining
  except Exception as e:  # (loading the experiment runs its code: any error)
    cli.fail(cli.config_flag_error(e, argv))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required (e.g. --workdir=runs/compare_lms)")
  cli.check_output_dir(_WORKDIR.value, "--workdir")
  from transformer.training import comparison  # after flag parsing: --help stays fast
  comparison.compare(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main, flags_parser=parse_flags)
