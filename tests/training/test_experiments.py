"""Every experiment file: its docstring says how to run it, and its tiny variant trains."""

import contextlib
import glob
import math
import os

import pytest
import tensorflow_datasets as tfds

from tests.training.conftest import ROOT, load_experiment
from transformer.training.loop import run

VARIANTS = {"wmt14_ende": ("base", "big"), "baselines": ("lstm", "gated_cnn", "transformer"),
            "finetune_lm": ("encoder_decoder", "decoder_only"),
            "reward": ("encoder_decoder", "decoder_only"),
            "dpo": ("encoder_decoder", "decoder_only"),
            "policy": ("encoder_decoder", "decoder_only")}
NAMES = sorted(os.path.basename(path)[:-3]
               for path in glob.glob(os.path.join(ROOT, "experiments", "*.py")))
# Not a run config: transformer.compare_lms runs it (its tiny variant: test_comparison.py).
COMPARISONS = ("compare_lms",)
# Start from a fine-tuned run and score with a reward run (tests/training/conftest.py's
# reward_runs of the variant's architecture).
NEEDS_REWARD_RUN = ("policy",)
EXPERIMENTS = sorted((name, ",".join(filter(None, (variant, "tiny"))))
                     for name in NAMES if name not in COMPARISONS
                     for variant in VARIANTS.get(name, (None,)))
HEADINGS = ("Command", "Runtime", "Expected result", "Tiny variant")
# Tiny, :big differs from :base only in dropout, baselines.py:transformer is pretrain_lm.py's
# model, and policy.py's decoder-only stage also trains in tests/training/test_policy.py: run
# them with the slow tests.
SLOW = {("wmt14_ende", "big,tiny"), ("baselines", "transformer,tiny"),
        ("policy", "decoder_only,tiny")}
EXPERIMENTS = [pytest.param(*e, marks=pytest.mark.slow) if e in SLOW else e for e in EXPERIMENTS]


@pytest.mark.parametrize("name", NAMES)
def test_docstring_says_how_to_run_it(name):
  with open(os.path.join(ROOT, "experiments", f"{name}.py")) as f:
    doc = f.read()
  for heading in HEADINGS:
    assert heading in doc, (name, heading)


@pytest.mark.parametrize("name, arg", EXPERIMENTS)
def test_tiny_variant_trains(name, arg, data_dir, tmp_path, request):
  config = load_experiment(name, arg)
  config.data.data_dir = data_dir
  if name in NEEDS_REWARD_RUN:
    sft, rm, _ = request.getfixturevalue("reward_runs")(arg.split(",")[0])
    config.init_from, config.policy.reward_workdir = sft, rm
  mock = (tfds.testing.mock_data(num_examples=16) if config.data.source == "tfds"
          else contextlib.nullcontext())
  with mock:
    lines = []
    result = run(config, str(tmp_path / "run"), print_fn=lines.append)
  assert "step 4/4" in "\n".join(lines)
  if name in NEEDS_REWARD_RUN:  # -A log π with advantages of mean 0 per prompt: either sign
    assert math.isfinite(result["loss"]) and math.isfinite(result["score"])
  else:
    assert result["loss"] > 0
