"""Checkpoint averaging: the mean of the chosen checkpoints, saved params-only, loaded by
generate and evaluate."""

import json
import os

import jax
import numpy as np
import pytest

from transformer.generate import load_for_generation
from transformer.training import averaging, checkpoints
from transformer.training.evaluation import evaluate_run


def test_the_average_of_the_last_two_checkpoints_is_their_mean(tiny_run):
  params, steps = averaging.average_checkpoints(tiny_run, last=2)
  assert steps == [2, 4]
  two, four = (checkpoints.restore_raw_params(tiny_run, s)[0] for s in (2, 4))
  jax.tree.map(lambda mean, a, b: np.testing.assert_allclose(
      mean, (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-7), params, two, four)
  assert not np.array_equal(two["token_embedding"]["embedding"],
                            four["token_embedding"]["embedding"])  # training moved them
  same, _ = averaging.average_checkpoints(tiny_run, steps=[4, 2])
  jax.tree.map(np.testing.assert_array_equal, same, params)


def test_a_saved_average_loads_in_generate_and_evaluate(tiny_run):
  params, steps = averaging.average_checkpoints(tiny_run, last=2)
  path = averaging.save_average(tiny_run, params, steps)
  assert path == os.path.join(tiny_run, "averaged", "step4-avg2")
  assert not os.path.exists(os.path.join(tiny_run, "checkpoints", "averaged"))  # never resumed
  with open(os.path.join(path, "averaged.json")) as f:
    assert json.load(f)["steps"] == [2, 4]

  _, loaded, _ = load_for_generation(tiny_run, averaged=path)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  _, on_the_fly, _ = load_for_generation(tiny_run, average_last=2)
  jax.tree.map(np.testing.assert_array_equal, on_the_fly, params)

  quiet = lambda line: None  # noqa: E731
  saved = evaluate_run(tiny_run, "validation", averaged=path, decode=False, print_fn=quiet)
  fly = evaluate_run(tiny_run, "validation", average_last=2, decode=False, print_fn=quiet)
  latest = evaluate_run(tiny_run, "validation", decode=False, print_fn=quiet)
  assert saved["steps"] == fly["steps"] == [2, 4] and saved["metrics"] == fly["metrics"]
  assert saved["metrics"]["loss"] != latest["metrics"]["loss"]
  assert os.path.exists(os.path.join(tiny_run, "eval", "validation-step4-avg2.json"))


def test_average_params_accumulates_in_float32_and_keeps_dtypes():
  a = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([1.0], dtype="bfloat16")}
  b = {"w": np.array([3.0, 5.0], np.float32), "b": np.array([2.0], dtype="bfloat16")}
  mean = averaging.average_params(iter([a, b]))
  np.testing.assert_array_equal(mean["w"], [2.0, 3.5])
  assert mean["b"].dtype == a["b"].dtype and float(mean["b"][0]) == 1.5


def test_bad_choices_name_the_steps_there_are(tiny_run):
  with pytest.raises(ValueError, match=r"cannot average the last 3 checkpoints: .* holds 2 "
                                       r"\(steps: \[2, 4\]"):
    averaging.select_steps(tiny_run, last=3)
  with pytest.raises(ValueError, match=r"no checkpoint at step\(s\) \[3\] .* \(steps: \[2, 4\]\)"):
    averaging.select_steps(tiny_run, steps=[3, 4])
  with pytest.raises(ValueError, match="choose the params one way"):
    averaging.load_params(tiny_run, step=2, average_last=2)
