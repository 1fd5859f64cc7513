"""The dpo stage end to end: from a fine-tuned run, whose params become the policy and its
frozen reference; the reference survives a resume unchanged and is never trained; the
evaluation reads it back; an init_from that is not the fine-tuned model is one line."""

import jax
import numpy as np
import pytest

from tests.training.conftest import load_experiment
from transformer.training import checkpoints, evaluation, writer
from transformer.training.config import ConfigError, validate
from transformer.training.loop import run


def dpo_config(data_dir: str, init_from: str, steps: int = 2):
  config = load_experiment("dpo", "tiny")
  config.data.data_dir = data_dir
  config.init_from = init_from
  config.update(num_train_steps=steps, eval_every_steps=2, checkpoint_every_steps=2)
  return config


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, data_dir):
  """(fine-tuned workdir, dpo workdir, log of its first 2 steps, log of the resume to 4)."""
  root = tmp_path_factory.mktemp("dpo")
  sft = load_experiment("finetune_lm", "tiny")
  sft.data.data_dir = data_dir
  run(sft, str(root / "sft"), print_fn=lambda line: None)
  first, resumed = [], []
  run(dpo_config(data_dir, str(root / "sft")), str(root / "dpo"), print_fn=first.append)
  run(dpo_config(data_dir, str(root / "sft"), steps=4), str(root / "dpo"),
      print_fn=resumed.append)
  return str(root / "sft"), str(root / "dpo"), "\n".join(first), "\n".join(resumed)


def leaves(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_policy_and_reference_start_as_the_fine_tuned_params(dpo_run):
  sft, dpo, log, _ = dpo_run
  total = len(leaves(checkpoints.restore_raw_params(sft, print_fn=lambda line: None)[0]))
  assert f"initialising from init_from={sft}" in log
  assert f"restored {total} params, initialised fresh 0" in log
  assert "frozen reference: a copy of these starting params" in log
  first_eval = next(r for r in writer.read_jsonl(dpo) if r["split"] == "eval" and r["step"] == 0)
  np.testing.assert_allclose(first_eval["loss"], np.log(2.0), rtol=1e-6)  # policy = reference
  assert first_eval["margin"] == 0.0 and first_eval["accuracy"] == 0.0  # ties count as wrong


def test_reference_is_frozen_through_training_and_a_resume(dpo_run):
  sft, dpo, _, resumed = dpo_run
  assert "resuming from the workdir's checkpoint at step 2" in resumed
  fine_tuned = leaves(checkpoints.restore_raw_params(sft, print_fn=lambda line: None)[0])
  for step in (2, 4):
    frozen, _ = checkpoints.restore_raw_params(dpo, step, item="frozen", print_fn=lambda line: None)
    assert set(frozen) == {"reference"}
    assert all(np.array_equal(a, b) for a, b in zip(leaves(frozen["reference"]), fine_tuned))
  policy, _ = checkpoints.restore_raw_params(dpo, 4, print_fn=lambda line: None)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(policy), fine_tuned))  # trained
  steps = [r["step"] for r in writer.read_jsonl(dpo) if r["split"] == "train"]
  assert steps == [1, 2, 3, 4]


def test_evaluation_reads_the_reference_back(dpo_run):
  _, dpo, _, _ = dpo_run
  report = evaluation.evaluate_run(dpo, "validation", max_batches=1, print_fn=lambda line: None)
  last = [r for r in writer.read_jsonl(dpo) if r["split"] == "eval"][-1]
  assert report["stage"] == "dpo" and report["step"] == 4
  np.testing.assert_allclose(report["metrics"]["loss"], last["loss"], rtol=1e-5)
  np.testing.assert_allclose(report["metrics"]["margin"], last["margin"], rtol=1e-4, atol=1e-7)


def test_init_from_must_be_the_fine_tuned_model(dpo_run, data_dir, tmp_path):
  sft, dpo, _, _ = dpo_run
  with pytest.raises(ConfigError, match=r"config.init_from='.*' is a 'dpo' run: stage 'dpo' "
                                        r"starts from \(and keeps as its frozen reference\) a "
                                        r"'finetune' run"):
    run(dpo_config(data_dir, dpo), str(tmp_path / "from_dpo"))
  other = dpo_config(data_dir, sft)
  other.model.d_model = 16
  with pytest.raises(ConfigError, match=r"holds another model than config.model \(d_model: 32 in "
                                        r"the workdir, 16 now\)"):
    run(other, str(tmp_path / "other_model"))
  assert not (tmp_path / "from_dpo").exists() and not (tmp_path / "other_model").exists()


@pytest.mark.parametrize("field, value, message", [
    ("beta", 0.0, "config.dpo.beta must be > 0, got 0.0"),
    ("label_smoothing", 0.5, r"config.dpo.label_smoothing must be in \[0, 0.5\)"),
])
def test_bad_dpo_fields_name_the_field(field, value, message):
  config = load_experiment("dpo", "tiny")
  config.dpo[field] = value
  with pytest.raises(ConfigError, match=message):
    validate(config)
