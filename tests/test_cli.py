"""The shared command-line rule (`transformer.cli`): which errors are one line and which status."""

import os

import pytest
from absl import app, flags

from transformer import cli
from transformer.training.config import ConfigError


@pytest.mark.parametrize("error, expected", [
    (ConfigError("config.x must be >= 1"), ("config.x must be >= 1", 2)),
    (FileNotFoundError(2, "No such file or directory", "a.txt"),
     ("[Errno 2] No such file or directory: 'a.txt'", 2)),
    (app.UsageError("--order must be >= 1"), ("--order must be >= 1", 2)),
    (flags.IllegalFlagValueError("bad\nflag"), ("bad flag", 2)),
    (FloatingPointError("loss is nan at step 3"), ("loss is nan at step 3", 1)),
    (KeyboardInterrupt(), ("interrupted", 130)),
    (ZeroDivisionError("a bug"), None),
    (TypeError("a bug"), None),
])
def test_describe_sorts_bad_inputs_from_bugs(error, expected):
  assert cli.describe(error) == expected


def test_output_dir_problem(tmp_path):
  (tmp_path / "file").write_text("x")
  assert cli.output_dir_problem(str(tmp_path)) is None
  assert cli.output_dir_problem(str(tmp_path / "new" / "deeper")) is None
  assert cli.output_dir_problem(str(tmp_path / "file")) == "is a file, not a directory"
  assert cli.output_dir_problem(str(tmp_path / "file" / "run")).startswith("cannot be created:")
  assert cli.output_dir_problem("/proc/run") == "cannot be created (/proc is not writable)"
  assert not os.path.exists(tmp_path / "new")  # nothing is created
  with pytest.raises(ValueError, match=r"^--workdir='/proc/run' cannot be created"):
    cli.check_output_dir("/proc/run", "--workdir")
