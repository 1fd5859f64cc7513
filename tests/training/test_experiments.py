"""A one-step smoke test of every experiment file, with tiny overrides (catalog data mocked)."""

import contextlib
import glob
import importlib.util
import os

import pytest
import tensorflow_datasets as tfds

from transformer.training.loop import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = sorted(
    (os.path.basename(path), arg)
    for path in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
    for arg in ({"wmt14_ende.py": ("base", "big"), "baselines.py": ("lstm", "gated_cnn", "transformer")}
                .get(os.path.basename(path), (None,))))
# Shrunk, :big differs from :base only in dropout, and baselines.py:transformer is pretrain_lm.py's
# model: run them with the slow tests.
SLOW = {("wmt14_ende.py", "big"), ("baselines.py", "transformer")}
EXPERIMENTS = [pytest.param(*e, marks=pytest.mark.slow) if e in SLOW else e for e in EXPERIMENTS]


def load_config(name: str, arg: str | None):
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(ROOT, "experiments", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert module.__doc__ and "Command" in module.__doc__ and "Runtime" in module.__doc__
  assert "Expected result" in module.__doc__
  return module.get_config(arg) if arg else module.get_config()


def shrink(config, data_dir: str) -> None:
  """Tiny model, tiny data, one step; the experiment's stage, task and architecture stay."""
  from tests.training.conftest import PACKAGES
  encoder = config.model.architecture == "encoder_decoder"
  config.model.update(d_model=16, num_heads=2, d_ff=32, num_encoder_layers=int(encoder), num_decoder_layers=1,
                      max_len=128)
  config.data.update(seq_len=128 if config.data.task == "seq2seq" else 32,
                     targets_len=64 if config.data.task == "seq2seq" else 0,
                     vocab_size=400 if config.data.source == "stdlib" else 300,  # mock text has few pieces
                     spm_input_sentence_size=20_000, data_dir=data_dir, spm_character_coverage=0.9995,
                     num_sentinels=8 if config.data.task == "span_corruption" else 0)
  if config.data.source == "stdlib":
    config.data.stdlib_packages = PACKAGES
  config.update(global_batch_size=2, grad_accum_steps=1, num_train_steps=1, eval_steps=1, num_samples=1,
                max_decode_length=4, peak_flops_per_device=1e11, async_checkpoints=False)


@pytest.mark.parametrize("name, arg", EXPERIMENTS)
def test_experiment_runs_one_step(name, arg, data_dir, tmp_path):
  config = load_config(name, arg)
  shrink(config, data_dir)
  mock = (tfds.testing.mock_data(num_examples=16) if config.data.source == "tfds"
          else contextlib.nullcontext())
  with mock:
    lines = []
    result = run(config, str(tmp_path / "run"), print_fn=lines.append)
  assert "step 1/1" in "\n".join(lines) and result["loss"] > 0
