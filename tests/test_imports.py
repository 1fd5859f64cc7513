"""The package's import structure: no cycles, and experiment files load without the I/O stack."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "transformer")


def run_python(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
  """Runs `script` in a fresh CPU-only interpreter at the repository root, this checkout first
  on the path."""
  return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"},
                        timeout=timeout)


def module_name(path: str) -> str:
  relative = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
  return relative[:-len(".__init__")] if relative.endswith(".__init__") else relative


def package_imports() -> dict[str, set[str]]:
  """Module -> the package modules it imports anywhere in its body (functions included)."""
  paths = [os.path.join(d, f) for d, _, files in os.walk(PACKAGE) for f in files
           if f.endswith(".py")]
  modules = {module_name(p): p for p in paths}
  graph = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module:
        targets.add(node.module)
        targets.update(f"{node.module}.{alias.name}" for alias in node.names)
    graph[name] = {t for t in targets if t in modules and t != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A list of modules that import each other in a circle, or None."""
  state: dict[str, str] = {}
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = "open"
    stack.append(node)
    for target in sorted(graph[node]):
      if state.get(target) == "open":
        return stack[stack.index(target):] + [target]
      if target not in state and (cycle := visit(target)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_cycle_finder_finds_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_the_package():
  graph = package_imports()
  assert "transformer.models.registry" in graph and graph["transformer.training.loop"]
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_experiment_files_load_without_grain_or_tensorflow_datasets():
  script = """
import glob, importlib.util, sys
from absl import flags
from ml_collections import config_flags
import experiments.quickstart
from transformer.training.config import validate
for path in sorted(glob.glob('experiments/*.py')):
  spec = importlib.util.spec_from_file_location('experiment', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  validate(config.run if 'run' in config else config)  # compare_lms.py: the run it shares
config = config_flags.DEFINE_config_file('config')
flags.FLAGS(['test', '--config=experiments/wmt14_ende.py:big,tiny'])
validate(config.value)
print(sorted(m for m in sys.modules if m.split('.')[0] in ('grain', 'tensorflow_datasets')))
"""
  result = run_python(script)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
