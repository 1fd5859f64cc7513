"""Export: one folder (params-only Orbax checkpoint, export.json, spm.model) that generate loads
without the training workdir, in a process that imports no grain, TFDS or training code."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from transformer import decoding, inference
from transformer.generate import load_for_generation
from transformer.training.export import export_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["def add(a, b):\n    return a + b", "class Box:\n    pass", "print('hi')"]
# Run in a fresh process: these imports fail as if the packages were not installed, then the
# generate command runs on the export and the script lists any forbidden module that got loaded.
SCRIPT = r"""
import runpy, sys
BLOCKED = ("grain", "tensorflow_datasets", "tensorflow", "ml_collections", "sacrebleu",
           "tensorboardX", "matplotlib")
for name in BLOCKED:  # `import name` raises ModuleNotFoundError, find_spec(name) is None
  sys.modules[name] = None
sys.argv = ["generate", *sys.argv[1:]]
try:
  runpy.run_module("transformer.generate", run_name="__main__")
except SystemExit as e:
  assert not e.code, e.code
loaded = sorted(m for m, module in sys.modules.items() if module is not None and (
    m.split(".")[0] in BLOCKED or m.startswith("transformer.training")))
print("LOADED", loaded, file=sys.stderr)
"""


def test_an_export_generates_the_workdir_text_without_training_code(tiny_run, tmp_path):
  folder = str(tmp_path / "export")
  info = export_run(tiny_run, folder)
  assert sorted(os.listdir(folder)) == ["export.json", "params", "spm.model"]
  assert info["format"] == inference.FORMAT and info["steps"] == [4]
  assert info["model_config"]["architecture"] == "encoder_decoder"

  config, params, tokenizer = load_for_generation(tiny_run)
  expected = decoding.generate_texts(config, params, tokenizer, PROMPTS, method="beam",
                                     beam_size=2, max_new_tokens=6)
  exported_config, exported_params, _ = inference.load_export(folder)
  assert exported_config == config
  jax.tree.map(np.testing.assert_array_equal, exported_params, params)

  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
  result = subprocess.run(
      [sys.executable, "-c", SCRIPT, f"--workdir={folder}", f"--prompts_file={prompts}",
       "--method=beam", "--beam_size=2", "--max_new_tokens=6"],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
      env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "LOADED []" in result.stderr, result.stderr[-3000:]
  from transformer.generate import one_line
  assert result.stdout.splitlines() == [one_line(text) for text in expected]


def test_an_average_exports_with_its_steps(tiny_run, tmp_path):
  info = export_run(tiny_run, str(tmp_path / "avg"), average_last=2)
  assert info["steps"] == [2, 4]
  _, params, _ = inference.load_export(str(tmp_path / "avg"))
  from transformer.training import averaging
  jax.tree.map(np.testing.assert_array_equal, params,
               averaging.average_checkpoints(tiny_run, last=2)[0])
