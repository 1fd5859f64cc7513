"""Nothing non-finite is ever saved: a NaN loss (or state) at a chosen step, under every
combination of log / eval / checkpoint intervals and async saves, stops the run naming the
step and the last good checkpoint, which is still there; skip_nonfinite_updates trains
through it.

The NaN comes from the real train step: `make_train_step` is wrapped so that the loss (and so
the gradient) of the chosen steps is multiplied by NaN, as a batch with a NaN weight would.
The runs share one assembly (same model and optimizer), so only the first one compiles.
"""

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.training import assembly, checkpoints, integrity, loop, writer
from transformer.training import step as step_lib

POISONED_STEP = 6  # the step whose update sees a NaN loss (steps count from 1)
NUM_STEPS = 8


def poisoned_make_train_step(steps: tuple[int, ...], target: str):
  """make_train_step whose steps `steps` get a NaN loss (target 'loss') or, with a finite
  loss, NaN params after the update (target 'params')."""
  def make(loss_fn, tx, denominator, **kwargs):
    def train_step(state, batch, rng):
      bad = jnp.isin(state.step + 1, jnp.asarray(steps))
      factor = jnp.where(bad, jnp.nan, 1.0)

      def poisoned_loss(params, batch, rng, frozen):
        objective, sums = loss_fn(params, batch, rng, frozen)
        if target != "loss":
          return objective, sums
        return objective * factor, {**sums, "loss": sums["loss"] * factor}
      new_state, sums = step_lib.make_train_step(poisoned_loss, tx, denominator, **kwargs)(
          state, batch, rng)
      if target == "params":
        new_state = new_state.replace(params=jax.tree.map(lambda p: p * factor, new_state.params))
      return new_state, sums
    return train_step
  return make


@pytest.fixture
def poisoned_runs(monkeypatch, tiny_config, workdir_for):
  """run_poisoned(name, steps=(6,), target='loss', **config fields) -> (workdir, error or None,
  log)."""
  cache = {}

  def run_poisoned(name, steps=(POISONED_STEP,), target="loss", **fields):
    config = tiny_config("lm")
    config.update({"num_train_steps": NUM_STEPS, "num_samples": 0, "keep_checkpoints": 2, **fields})
    key = (steps, target, config.skip_nonfinite_updates)
    if key not in cache:
      monkeypatch.setattr(assembly, "make_train_step", poisoned_make_train_step(steps, target))
      cache[key] = assembly.assemble(config)
    monkeypatch.setattr(loop, "assemble", lambda c: dataclasses.replace(cache[key], config=c))
    workdir, lines = workdir_for(config, name), []
    try:
      loop.run(config, workdir, print_fn=lines.append)
      error = None
    except loop.NonFiniteError as e:
      error = e
    return workdir, error, "\n".join(lines)
  return run_poisoned


def saved_params(workdir):
  """{step: params as numpy} of every checkpoint in the workdir (and each step verified)."""
  directory = checkpoints.checkpoint_dir(workdir)
  out = {}
  for step in integrity.steps(directory):
    assert integrity.verify(os.path.join(directory, str(step))) is None, step
    params, _ = checkpoints.restore_raw_params(workdir, step)
    out[step] = jax.tree.map(np.asarray, params)
  return out


def all_finite(tree):
  return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree))


INTERVALS = (1, 5)


@pytest.mark.parametrize("async_checkpoints", [pytest.param(False, marks=pytest.mark.slow), True])
def test_no_nonfinite_checkpoint_under_any_intervals(poisoned_runs, async_checkpoints):
  for log, evaluate, save in itertools.product(INTERVALS, repeat=3):
    name = f"log{log}_eval{evaluate}_ckpt{save}_async{int(async_checkpoints)}"
    workdir, error, log_text = poisoned_runs(
        name, log_every_steps=log, eval_every_steps=evaluate, checkpoint_every_steps=save,
        async_checkpoints=async_checkpoints)
    assert error is not None, (name, log_text)
    message = str(error)
    assert f"not finite at step {POISONED_STEP} (loss nan)" in message, (name, message)
    assert "the last good checkpoint is step 5" in message, (name, message)
    params = saved_params(workdir)
    assert params and max(params) == 5, (name, sorted(params))  # the last good one is kept
    assert all(all_finite(p) for p in params.values()), name
    assert not os.path.exists(os.path.join(workdir, integrity.SET_ASIDE_DIR)), name
    assert all(r["step"] < POISONED_STEP for r in writer.read_jsonl(workdir)), name


def test_a_nonfinite_state_is_never_saved(poisoned_runs):
  # A finite loss, but the update makes the params NaN: the check before the save stops it.
  workdir, error, _ = poisoned_runs("state", target="params", log_every_steps=5,
                                    eval_every_steps=5, checkpoint_every_steps=3)
  assert "the train state at step 6 has non-finite values: not saved" in str(error)
  assert "the last good checkpoint is step 3" in str(error)
  params = saved_params(workdir)
  assert sorted(params) == [3] and all_finite(params[3])


def test_skip_nonfinite_updates_trains_through_a_nan_batch(poisoned_runs):
  workdir, error, log_text = poisoned_runs(
      "skip", steps=(3, POISONED_STEP), skip_nonfinite_updates=True, log_every_steps=1,
      eval_every_steps=NUM_STEPS, checkpoint_every_steps=1, keep_checkpoints=NUM_STEPS)
  assert error is None, error
  assert f"step {NUM_STEPS}/{NUM_STEPS}" in log_text and "skipped 1 non-finite updates" in log_text
  train = {r["step"]: r for r in writer.read_jsonl(workdir) if r["split"] == "train"}
  assert sorted(train) == list(range(1, NUM_STEPS + 1))
  assert [s for s, r in train.items() if r["skipped_updates"]] == [3, POISONED_STEP]
  assert all(np.isfinite(r["loss"]) for r in train.values())
  params = saved_params(workdir)
  assert sorted(params) == list(range(1, NUM_STEPS + 1)) and all(map(all_finite, params.values()))
  same = lambda a, b: all(np.array_equal(x, y)
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(params[3], params[2]) and same(params[6], params[5])  # the updates were skipped
  assert not same(params[4], params[3]) and not same(params[7], params[6])  # training went on
