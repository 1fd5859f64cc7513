"""Damaged checkpoints: the latest step damaged four ways (a file truncated, a file deleted,
bytes overwritten in place, an empty step folder) is reported in one line, set aside (not
deleted) and the previous step is used, by the trainer's resume and by `generate`."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from transformer.training import checkpoints, integrity, loop
from transformer.training.lock import LOCK_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def largest_file(directory: str) -> str:
  files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
  return max(files, key=os.path.getsize)


def truncate(step_dir):
  path = largest_file(os.path.join(step_dir, "params"))
  os.truncate(path, os.path.getsize(path) // 2)


def delete(step_dir):
  os.remove(largest_file(os.path.join(step_dir, "train")))


def overwrite(step_dir):
  path = largest_file(os.path.join(step_dir, "params"))
  with open(path, "r+b") as f:  # same size, other bytes
    f.seek(os.path.getsize(path) // 3)
    f.write(np.random.default_rng(0).bytes(64))


def empty(step_dir):
  shutil.rmtree(step_dir)
  os.makedirs(step_dir)


# damage -> (what the report says, the set-aside folder's suffix)
DAMAGES = {
    truncate: ("bytes, ", "truncated"),
    delete: ("is missing", "missing-file"),
    overwrite: ("does not match its checksum", "checksum-mismatch"),
    empty: ("the folder is empty", "empty"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir, tokenizer_dir):
  """A 4-step run with checkpoints 2 and 4, and its config."""
  from tests.training.conftest import cached_tokenizer, tiny_experiment
  config = tiny_experiment(data_dir, "lm")
  config.num_samples = 0
  workdir = str(tmp_path_factory.mktemp("trained"))
  shutil.copyfile(cached_tokenizer(config, tokenizer_dir), checkpoints.tokenizer_path(workdir))
  loop.run(config, workdir, print_fn=lambda line: None)
  assert integrity.steps(checkpoints.checkpoint_dir(workdir)) == [4, 2]
  return workdir, config


def damaged_copy(trained_workdir, tmp_path, damage, name):
  workdir = str(tmp_path / name)
  shutil.copytree(trained_workdir, workdir)
  damage(os.path.join(checkpoints.checkpoint_dir(workdir), "4"))
  return workdir


def test_verify_names_each_damage(trained, tmp_path):
  workdir, _ = trained
  assert integrity.verify(os.path.join(checkpoints.checkpoint_dir(workdir), "4")) is None
  for damage, (words, slug) in DAMAGES.items():
    copy = damaged_copy(workdir, tmp_path, damage, damage.__name__)
    problem = integrity.verify(os.path.join(checkpoints.checkpoint_dir(copy), "4"))
    assert problem is not None and problem.slug == slug and words in problem.text, damage


def test_the_resume_sets_a_damaged_latest_step_aside_and_trains_on(trained, tmp_path, monkeypatch):
  workdir, config = trained
  config = ml_collections.ConfigDict(config.to_dict())
  config.num_train_steps = 6
  parts = loop.assemble(config)  # one compile for the four runs
  monkeypatch.setattr(loop, "assemble", lambda c: dataclasses.replace(parts, config=c))
  for damage, (words, slug) in DAMAGES.items():
    copy = damaged_copy(workdir, tmp_path, damage, damage.__name__)
    lines = []
    loop.run(config, copy, print_fn=lines.append)
    reports = [line for line in lines if line.startswith("checkpoint 4 is damaged")]
    aside = os.path.join(copy, integrity.SET_ASIDE_DIR, f"4-{slug}")
    assert len(reports) == 1 and words in reports[0] and reports[0].endswith(f"moved to {aside}")
    assert "resuming from the workdir's checkpoint at step 2" in "\n".join(lines), damage
    assert "step 6/6" in "\n".join(lines)
    assert os.path.isdir(aside) and (slug == "empty" or os.listdir(aside))  # kept, not deleted
    assert integrity.steps(checkpoints.checkpoint_dir(copy))[:2] == [6, 4]  # 4 trained again


def test_generate_sets_a_damaged_latest_step_aside_and_uses_the_previous(trained, tmp_path):
  workdir, _ = trained
  cases, copies = [], []
  for damage in DAMAGES:
    copy = damaged_copy(workdir, tmp_path, damage, damage.__name__)
    copies.append(copy)
    cases.append({"module": "transformer.generate", "cwd": ROOT,
                  "args": [f"--workdir={copy}", "--prompt=import os", "--max_new_tokens=3"]})
  results = run_entry_points(cases, tmp_path)
  for (words, slug), copy, result in zip(DAMAGES.values(), copies, results):
    assert result["status"] == 0, result["stderr"]
    stderr = result["stderr"].splitlines()
    aside = os.path.join(copy, integrity.SET_ASIDE_DIR, f"4-{slug}")
    assert len(stderr) == 1 and stderr[0].startswith("warning: checkpoint 4 is damaged ("), stderr
    assert words in stderr[0] and stderr[0].endswith(f"moved to {aside}"), stderr
    assert len(result["stdout"].splitlines()) == 1  # the generation, from step 2
    assert os.path.isdir(aside) and integrity.steps(checkpoints.checkpoint_dir(copy)) == [2]


def test_a_busy_workdir_keeps_its_damaged_step_in_place(trained, tmp_path):
  workdir, _ = trained
  copy = damaged_copy(workdir, tmp_path, overwrite, "busy")
  with open(os.path.join(copy, LOCK_FILE), "w") as f:  # another live process owns the run
    json.dump({"host": os.uname().nodename, "pid": os.getppid(), "started": "now"}, f)
  lines = []
  _, step = checkpoints.restore_raw_params(copy, print_fn=lines.append)
  assert step == 2 and lines == [
      "checkpoint 4 is damaged (" + integrity.verify(
          os.path.join(checkpoints.checkpoint_dir(copy), "4")).text
      + "): left in place (the workdir is in use by another run)"]
  assert integrity.steps(checkpoints.checkpoint_dir(copy)) == [4, 2]


def test_a_step_without_checksums_is_used_unverified(trained, tmp_path):
  workdir, _ = trained
  copy = str(tmp_path / "legacy")
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(checkpoints.checkpoint_dir(copy), "4", integrity.CHECKSUM_FILE))
  lines = []
  _, step = checkpoints.restore_raw_params(copy, print_fn=lines.append)
  assert step == 4 and lines == [f"warning: checkpoint 4 has no {integrity.CHECKSUM_FILE} "
                                 "(saved before checksums existed): using it unverified"]


def run_entry_points(cases, tmp_path):
  """tests/entry_point_driver.py on `cases`: their results."""
  cases_path, results_path = tmp_path / "cases.json", tmp_path / "results.json"
  cases_path.write_text(json.dumps(cases))
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, os.path.join(ROOT, "tests", "entry_point_driver.py"),
                  str(cases_path), str(results_path)], env=env, check=True, timeout=600)
  return json.loads(results_path.read_text())
