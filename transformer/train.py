r"""Trains a model: `python -m transformer.train --config=experiments/<file>.py[:arg]
--workdir=DIR`.

Flags:
  --config=experiments/quickstart.py[:arg]   the experiment (its get_config(arg));
  --config.<field>=<value>                   overrides any config field, e.g.
                                             --config.num_train_steps=10;
  --workdir=DIR                              where checkpoints, metrics and plots go (resumed if
                                             present);
  --dry_run                                  print the parameter overview, compile the step,
                                             report memory, exit;
  --distributed                              join the other processes first
                                             (jax.distributed.initialize; also if
                                             JAX_COORDINATOR_ADDRESS is set): coordinator,
                                             process count and id from JAX_COORDINATOR_ADDRESS,
                                             JAX_NUM_PROCESSES, JAX_PROCESS_ID, else the platform's.

Config errors (unknown field, wrong type, missing file, unknown stage, incompatible workdir)
are printed as one line and exit with status 2, before anything compiles.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Experiment file (experiments/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory of the run (checkpoints, metrics, plots).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Build, print params, compile the step, and exit.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Join the other processes first "
                                  "(jax.distributed.initialize; see the module docstring).")


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags and loads the config; a bad flag or config is one line on stderr, exit
  status 2."""
  try:
    remaining = flags.FLAGS(argv)
    if _CONFIG.value is None:
      raise flags.Error("--config is required (e.g. --config=experiments/quickstart.py)")
    _CONFIG.value.keys()  # a config file that failed to load raises here
    if _WORKDIR.value is None and not _DRY_RUN.value:
      raise flags.Error("--workdir is required (e.g. --workdir=runs/quickstart)")
    return remaining
  except (OSError, flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    fail(one_line(e, argv))


def one_line(error: BaseException, argv: list[str]) -> str:
  """The gist of a flag or config error in one line, naming the field, flag or file."""
  if error.args and isinstance(error.args[0], KeyError):  # config_flags wraps it in AttributeError
    error = error.args[0]
  text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  if isinstance(error, KeyError):  # config_flags: an override of a field the config does not have
    key = lines[0].strip("'\"") if lines else "?"
    flag = next((arg.split("=")[0] for arg in argv if arg.startswith("--config.")
                 and arg.split("=")[0].endswith("." + key)), key)
    return f"unknown config field in {flag}" + (f" ({' '.join(lines[1:])})" if len(lines) > 1
                                                else "")
  return lines[-1] if lines else repr(error)


def fail(message: str) -> None:
  """Prints `error: <message>` on stderr and exits with status 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str]) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:  # library INFO logs (Orbax, XLA) off unless asked for
    logging.set_verbosity(logging.WARNING)
  from transformer.training import loop  # after flag parsing: --help stays fast
  from transformer.training.config import ConfigError
  if _DISTRIBUTED.value or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    from transformer.training.parallel import initialize_distributed
    initialize_distributed()
  try:
    if _DRY_RUN.value:
      loop.dry_run(_CONFIG.value)
    else:
      loop.run(_CONFIG.value, _WORKDIR.value)
  except ConfigError as e:
    fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
