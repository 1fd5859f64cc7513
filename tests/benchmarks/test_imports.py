"""Every benchmark runs on an image with only jax, flax, optax, orbax, numpy and absl besides the
project's own code: `benchmarks/*.py` reaches its --helpshort with the rest of the project's
dependencies (the data and I/O stack) made unimportable, except the benchmarks in `EXEMPT`."""

import glob
import os

import pytest

from tests.test_imports import ROOT, run_python

# Import names of the project's dependencies (setup.py) beyond jax, flax, optax, orbax, numpy and
# absl, and TensorFlow, which none of them needs.
BLOCKED = ("tensorflow", "tensorflow_datasets", "grain", "array_record", "sentencepiece",
           "ml_collections", "sacrebleu", "tensorboardX", "matplotlib")
EXEMPT = {  # benchmark -> why it may import BLOCKED modules
    "input_pipeline": "it times the data pipeline itself: the TFDS builder, SentencePiece, grain",
}
BENCHMARKS = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "*.py")))

HELP_WITHOUT = """
import importlib.abc, runpy, sys
blocked = {blocked!r}

class Unimportable(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] in blocked:
      raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
    return None

sys.meta_path.insert(0, Unimportable())
sys.argv = [{path!r}, "--helpshort"]
try:
  runpy.run_path({path!r}, run_name="__main__")
except SystemExit:  # absl exits after printing the help
  pass
print(sorted(m for m in sys.modules if m.partition(".")[0] in blocked))
"""


def help_without(path: str, blocked: tuple[str, ...]) -> str:
  """The --helpshort output of the benchmark at `path` run with `blocked` unimportable; fails
  the test if the benchmark does not get there or loads a blocked module anyway."""
  result = run_python(HELP_WITHOUT.format(path=path, blocked=blocked))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"{path}:" in result.stdout, result.stdout[-3000:]  # absl's heading of its own flags
  assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-3000:]
  return result.stdout


@pytest.mark.parametrize("path", BENCHMARKS, ids=os.path.basename)
def test_benchmark_loads_without_the_data_stack(path):
  name = os.path.basename(path)[:-len(".py")]
  help_without(path, () if name in EXEMPT else BLOCKED)


def test_the_exemptions_name_benchmarks():
  assert "decode" in [os.path.basename(p)[:-len(".py")] for p in BENCHMARKS]
  assert not set(EXEMPT) - {os.path.basename(p)[:-len(".py")] for p in BENCHMARKS}


def test_a_benchmark_that_reaches_the_data_stack_fails(tmp_path):
  path = tmp_path / "bench.py"  # imports the tokenizer (sentencepiece) through a library module
  path.write_text("from absl import app, flags\n"
                  "from transformer.data import pipeline\n"
                  "flags.DEFINE_integer('steps', 1, 'Steps.')\n"
                  "app.run(lambda argv: None)\n")
  with pytest.raises(AssertionError, match="blocked by the test"):
    help_without(str(path), BLOCKED)
  assert "--steps" in help_without(str(path), ())
