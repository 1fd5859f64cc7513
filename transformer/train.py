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
  --print_config                             print the resolved config (fields that differ from
                                             the schema's defaults marked *) and exit; every
                                             field with its meaning: docs/config.md;
  --distributed                              join the other processes first
                                             (jax.distributed.initialize; also if
                                             JAX_COORDINATOR_ADDRESS is set): coordinator,
                                             process count and id from JAX_COORDINATOR_ADDRESS,
                                             JAX_NUM_PROCESSES, JAX_PROCESS_ID, else the platform's.

Bad inputs (unknown field, wrong type or range, an experiment file that fails to load, a
missing file or split, a path that is a file or read-only, an incompatible or busy workdir)
are printed as one line and exit with status 2, before anything compiles (`transformer.cli`).
SIGTERM or Ctrl-C save a checkpoint at the step reached and exit 0 (Ctrl-C: 130); a
non-finite loss stops the run with one line and status 1. In a multi-process run, a process
that fails ends the others within seconds, with its message.
"""

import os
import traceback

from absl import flags
from ml_collections import config_flags

from transformer import cli

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Experiment file (experiments/*.py[:arg]); override "
                                          "a field with --config.<field>=<value>; every field: "
                                          "docs/config.md; the resolved config: --print_config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Directory of the run (checkpoints, metrics, plots).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Build, print params, compile the step, and exit.")
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print the resolved config (* = differs from the schema's default) and "
    "exit; every field and its meaning: docs/config.md.")
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
    if _WORKDIR.value is None and not (_DRY_RUN.value or _PRINT_CONFIG.value):
      raise flags.Error("--workdir is required (e.g. --workdir=runs/quickstart)")
    return remaining
  except Exception as e:  # (loading the experiment runs its code: any error)
    if "-v" in argv or any(arg.startswith(("--verbosity", "-v=")) for arg in argv):
      traceback.print_exc()
    cli.fail(cli.config_flag_error(e, argv))


def fail(message: str) -> None:
  """Prints `error: <message>` on stderr and exits with status 2."""
  cli.fail(message)


def main(argv: list[str]) -> None:
  del argv
  distributed = _DISTRIBUTED.value or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
  if not distributed or _PRINT_CONFIG.value:
    from transformer.training.config import format_config, validate
    validate(_CONFIG.value)  # before the heavy imports: a config error comes in a second
    if _PRINT_CONFIG.value:
      print(format_config(_CONFIG.value))
      return
  from transformer.training import loop, parallel  # after flag parsing: --help stays fast
  if distributed:
    parallel.initialize_distributed()
  with parallel.failures_end_every_process():
    if _DRY_RUN.value:
      loop.dry_run(_CONFIG.value)
    else:
      loop.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main, flags_parser=parse_flags)
