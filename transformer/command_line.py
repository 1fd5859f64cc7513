"""One-line usage errors for the absl commands (generate, evaluate, average, export).

absl's default on a bad flag or `app.UsageError` is the module docstring and every flag's help
(~50 lines); these commands print `error: <what is wrong>` on stderr and exit with status 2.

    if __name__ == "__main__":
      app.run(main, flags_parser=command_line.parse_flags)      # bad flags: one line
    ...
    raise command_line.fail(f"--workdir={path}: no checkpoint")  # in main: one line
"""

import sys
from typing import NoReturn

from absl import flags


def fail(message: str) -> NoReturn:
  """Prints `error: <message>` (its first line) on stderr and exits with status 2."""
  lines = [line.strip() for line in str(message).splitlines() if line.strip()]
  print(f"error: {lines[0] if lines else message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing for `app.run(..., flags_parser=parse_flags)`: an unknown flag, a bad value
  or a missing required flag is one line (`fail`); leftover positional arguments are one too."""
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  if len(remaining) > 1:
    fail(f"unexpected arguments: {remaining[1:]} (flags are --name=value)")
  return remaining
