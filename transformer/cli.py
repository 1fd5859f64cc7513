"""The rule every entry point follows: a bad input is one line on stderr and exit status 2.

    if __name__ == "__main__":
      cli.run(main)                  # instead of absl's app.run(main)

`run` parses the flags (a flag error is one line), then calls `main` and turns what it raises
into one line `error: <message>` on stderr, without a traceback:

  bad input (INPUT_ERRORS: a config, flag, path or data error)    exit status 2
    (`ConfigError`, the ValueError of an invalid run config, is defined here so that modules
    which raise it need not import the config schema)
  a run that stopped itself (STOP_ERRORS: a non-finite loss)      exit status 1
  Ctrl-C outside the training loop (which saves and exits 130)    exit status 130

Anything else is a bug and keeps its traceback. Library INFO logs are off unless
`--verbosity` (`-v`) is given on the command line, which also prints the traceback before
the line in every case. The path checks here
(`check_output_dir`) are shared by the entry points and the training loop.
"""

import errno
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging

INPUT_ERRORS = (ValueError, OSError, flags.Error, app.UsageError)
STOP_ERRORS = (FloatingPointError,)
INPUT_ERROR_STATUS, STOP_STATUS, INTERRUPTED_STATUS = 2, 1, 130


class ConfigError(ValueError):
  """An invalid run config; the message is one line naming the offending field."""


def fail(message: str, status: int = INPUT_ERROR_STATUS) -> NoReturn:
  """Prints `error: <message>` on stderr and exits with `status`."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(status)


def one_line(text: str) -> str:
  """`text` on one line: its non-empty lines joined by spaces."""
  return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe(error: BaseException) -> tuple[str, int] | None:
  """(one-line message, exit status) for an error that is not a bug, else None."""
  if isinstance(error, KeyboardInterrupt):
    return "interrupted", INTERRUPTED_STATUS
  if isinstance(error, STOP_ERRORS):
    return one_line(error) or type(error).__name__, STOP_STATUS
  if isinstance(error, INPUT_ERRORS):
    return one_line(error) or type(error).__name__, INPUT_ERROR_STATUS
  return None


def verbose() -> bool:
  """Whether --verbosity (-v) was given on the command line: tracebacks are wanted."""
  return "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present > 0


def guarded(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """`main` with its errors reported by the rule of the module docstring."""
  def guarded_main(argv: list[str]) -> None:
    if not verbose():  # library INFO logs (Orbax, XLA, the data pipeline) off unless asked for
      logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except BaseException as error:  # (SystemExit passes through below)
      if isinstance(error, SystemExit):
        raise
      described = describe(error)
      if described is None:
        raise
      if verbose():
        traceback.print_exc()
      fail(*described)
  return guarded_main


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing with a bad or missing flag as one line (exit 2) instead of the usage."""
  try:
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    fail(one_line(e))


def run(main: Callable[[list[str]], None],
        flags_parser: Callable[[list[str]], list[str]] = parse_flags) -> None:
  """absl's app.run(main) under the rule of the module docstring."""
  app.run(guarded(main), flags_parser=flags_parser)


# ------------------------------------------------------------------------------ --config

def config_flag_error(error: BaseException, argv: list[str]) -> str:
  """One line for an error of loading `--config=<experiment file>[:arg]` or of its
  `--config.<field>=<value>` overrides: the experiment file's line, or the field or flag."""
  return _experiment_error(error, argv) or _config_error_line(error, argv)


def _config_path(argv: list[str]) -> str | None:
  """The experiment file of --config on the command line (without its ':arg')."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":", 1)[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":", 1)[0]
  return None


def _experiment_error(error: BaseException, argv: list[str]) -> str | None:
  """'<file>:<line>: <Type>: <message>' if `error` was raised by the experiment file's code
  (importing it or its get_config), naming the file's deepest line involved; else None."""
  path = _config_path(argv)
  if not path:
    return None
  target = os.path.abspath(path)
  chain, seen = [], error
  while seen is not None and seen not in chain:  # the wrappers of config_flags and absl
    chain.append(seen)
    seen = seen.__cause__ or seen.__context__
  for e in reversed(chain):  # the original error first
    if isinstance(e, SyntaxError) and e.filename and os.path.abspath(e.filename) == target:
      return f"{path}:{e.lineno}: {type(e).__name__}: {e.msg}"
    lines = [frame.lineno for frame in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(frame.filename) == target]
    if lines:
      return f"{path}:{lines[-1]}: {type(e).__name__}: {one_line(e)}"
    if isinstance(e, AttributeError) and "get_config" in str(e):
      return f"{path} has no get_config(arg) function"
  return None


def _config_error_line(error: BaseException, argv: list[str]) -> str:
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



# ------------------------------------------------------------------------------ paths

def output_dir_problem(path: str) -> str | None:
  """Why `path` cannot be (created as) a writable directory, or None if it can.

  Nothing is created: an existing directory must accept a new file, a missing one needs its
  nearest existing ancestor to be a writable directory. Writability is tried, not guessed
  from permission bits (which root ignores).
  """
  if not path:
    return "is empty"
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    return "is a file, not a directory"
  ancestor = path
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    return f"cannot be created: {ancestor} is a file, not a directory"
  try:
    with tempfile.TemporaryFile(dir=ancestor):
      pass
  except OSError as e:
    where = "" if ancestor == path else f" ({ancestor} is not writable)"
    reason = os.strerror(e.errno) if e.errno else str(e)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
      reason = "not writable"
    return f"is {reason}{where}" if ancestor == path else f"cannot be created{where}"
  return None


def check_output_dir(path: str, name: str) -> None:
  """ValueError `<name>=<path> <problem>` unless `path` can be a writable directory."""
  problem = output_dir_problem(path)
  if problem:
    raise ValueError(f"{name}={path!r} {problem}")
