"""The command line: one-line config errors before anything compiles, and the dry run."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "transformer.train", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess) -> str:
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--config=experiments/no_such_file.py"],
     "No such file or directory: 'experiments/no_such_file.py'"),
    (["--config=experiments/quickstart.py", "--config.optimizer.lerning_rate=1"],
     "unknown config field in --config.optimizer.lerning_rate (Did you mean \"learning_rate\""),
    (["--config=experiments/quickstart.py", "--config.num_train_steps=ten"],
     "--config.num_train_steps=ten"),
    (["--config=experiments/quickstart.py", "--config.stage=distill"],
     "config.stage must be one of"),
    (["--config=experiments/quickstart.py", "--config.model.num_heads=3"],
     "config.model.d_model (128) must be divisible"),
    (["--config=experiments/quickstart.py", "--config.data.seq_len=256", "--dry_run"],
     "config.data.seq_len = 256: the encoder inputs the run decodes must fit the model: "
     "raise config.model.max_len (128) to at least 256"),
    (["--config=experiments/wmt14_ende.py:huge"],
     "takes one of ('base', 'big'), optionally with ',tiny', got 'huge'"),
])
def test_config_errors_are_one_line(args, message, tmp_path):
  workdir = tmp_path / "run"
  assert message in error_line(train(*args, f"--workdir={workdir}"))
  assert not workdir.exists()  # nothing written, nothing compiled


def test_incompatible_workdir_is_one_line(tmp_path):
  import importlib.util

  from ml_collections import config_flags  # noqa: F401  (loads experiment files like the CLI)

  from transformer.training.checkpoints import write_config
  spec = importlib.util.spec_from_file_location(
      "quickstart", os.path.join(ROOT, "experiments", "quickstart.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  earlier = module.get_config()
  earlier.model.d_model = 256
  write_config(str(tmp_path), earlier)
  line = error_line(train("--config=experiments/quickstart.py", f"--workdir={tmp_path}"))
  assert (f"workdir {tmp_path} holds a run with an incompatible model config "
          "(d_model: 256 in the workdir, 128 now)") in line


@pytest.mark.slow
def test_dry_run_wmt14_base_prints_its_63_082_496_params():
  result = train("--config=experiments/wmt14_ende.py:base", "--dry_run",
                 "--config.global_batch_size=8")
  assert result.returncode == 0, result.stderr
  line = next(line for line in result.stdout.splitlines() if line.startswith("params: "))
  # the paper's "65M" (tests/models/test_config.py: the formula)
  assert line == "params: 63,082,496 (63.08M)"
  assert "memory per device" in result.stdout


def test_print_config_prints_the_resolved_config_and_exits():
  result = train("--config=experiments/quickstart.py", "--print_config",
                 "--config.num_train_steps=7")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == "config (* = differs from the default of transformer/training/config.py):"
  assert "  num_train_steps = 7*" in lines and "  seed = 0" in lines
  assert "  data.name = 'stdlib_corpus/summarize'*" in lines
