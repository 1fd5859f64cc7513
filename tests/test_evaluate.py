"""The evaluate command: a run's own metrics on any split, written under DIR/eval/, nothing else
touched."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from transformer.training.evaluation import evaluate_run, output_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def file_hashes(workdir: str) -> dict[str, str]:
  """SHA-256 of every file of the run, except those under eval/ (evaluate's own output)."""
  hashes = {}
  for directory, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(directory, name)
      relative = os.path.relpath(path, workdir)
      if relative.split(os.sep)[0] != "eval":
        with open(path, "rb") as f:
          hashes[relative] = hashlib.sha256(f.read()).hexdigest()
  return hashes


def evaluate_command(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "transformer.evaluate", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_test_split_loss_and_beam_bleu_without_changing_the_run(tiny_run):
  before = file_hashes(tiny_run)
  result = evaluate_command(f"--workdir={tiny_run}", "--split=test", "--beam_size=4", "--alpha=0.6")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout)
  assert report["split"] == "test" and report["step"] == 4 and report["steps"] == [4]
  assert {"loss", "nll", "accuracy", "perplexity"} <= set(report["metrics"])
  assert report["metrics"]["loss"] > 0 and report["metrics"]["tokens"] > 0
  assert report["decoding"] == {"method": "beam", "beam_size": 4, "alpha": 0.6,
                                "max_new_tokens": 4}  # the run's max_decode_length
  assert 0 <= report["bleu"] <= 100 and 0 <= report["chrf"] <= 100 and report["examples"] > 0
  assert report["bleu_signature"].startswith("nrefs:1") and "nc:6" in report["chrf_signature"]
  with open(os.path.join(tiny_run, "eval", "test-step4.json")) as f:
    assert json.load(f) == report
  assert file_hashes(tiny_run) == before  # config.json, checkpoints, metrics: all unchanged


def test_the_split_changes_the_metrics_and_the_file(tiny_run):
  quiet = lambda line: None  # noqa: E731
  test = evaluate_run(tiny_run, "test", decode=False, print_fn=quiet)
  validation = evaluate_run(tiny_run, "validation", decode=False, print_fn=quiet)
  assert test["metrics"]["tokens"] != validation["metrics"]["tokens"]
  assert "bleu" not in test and "decoding" not in test
  assert os.path.exists(output_path(tiny_run, "validation", [4]))
  # on the trainer's eval batches (eval_steps=1) the metrics are the trainer's last eval
  first = evaluate_run(tiny_run, "validation", max_batches=1, decode=False, print_fn=quiet,
                       output=os.path.join(tiny_run, "eval", "first-batch.json"))
  with open(os.path.join(tiny_run, "metrics.jsonl")) as f:
    last_eval = [json.loads(line) for line in f if '"eval"' in line][-1]
  for name in ("loss", "nll", "accuracy", "tokens"):
    assert first["metrics"][name] == pytest.approx(last_eval[name], rel=1e-5), name


def test_usage_errors_are_one_line(tmp_path):
  result = evaluate_command(f"--workdir={tmp_path}")
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip() == (f"error: --workdir={tmp_path}: no config.json in {tmp_path}: "
                                   "not a training workdir")
