r"""Trains a model: `python -m transformer.train --config=experiments/<file>.py[:arg] --workdir=DIR`.

Flags:
  --config=experiments/quickstart.py[:arg]   the experiment (its get_config(arg));
  --config.<field>=<value>                   overrides any config field, e.g. --config.num_train_steps=10;
  --workdir=DIR                              where checkpoints, metrics and plots go (resumed if present);
  --dry_run                                  print the parameter overview, compile the step, report memory, exit;
  --distributed                              call jax.distributed.initialize() first (also if
                                             JAX_COORDINATOR_ADDRESS is set).

Config errors (unknown field, wrong type, missing file, unknown stage, incompatible workdir)
are printed as one line and exit with status 2, before anything compiles.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file (experiments/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (checkpoints, metrics, plots).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Build, print params, compile the step, and exit.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first.")


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag or config becomes one line on stderr and exit status 2."""
  try:
    remaining = flags.FLAGS(argv)
    if _CONFIG.value is None:
      raise flags.Error("--config is required (e.g. --config=experiments/quickstart.py)")
    if _WORKDIR.value is None and not _DRY_RUN.value:
      raise flags.Error("--workdir is required (e.g. --workdir=runs/quickstart)")
    return remaining
  except (flags.Error, IOError, KeyError, AttributeError, TypeError, ValueError) as e:
    fail(e)


def fail(error: BaseException) -> None:
  """Prints `error: <first meaningful line>` and exits with status 2."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  message = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else repr(error))
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str]) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:  # library INFO logs (Orbax, XLA) off unless asked for
    logging.set_verbosity(logging.WARNING)
  from transformer.training import loop  # after flag parsing: --help stays fast
  from transformer.training.config import ConfigError
  if _DISTRIBUTED.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    import jax
    jax.distributed.initialize()
  try:
    if _DRY_RUN.value:
      loop.dry_run(_CONFIG.value)
    else:
      loop.run(_CONFIG.value, _WORKDIR.value)
  except ConfigError as e:
    fail(e)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
