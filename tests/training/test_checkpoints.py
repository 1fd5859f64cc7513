"""Checkpoints of one layout: what is kept (latest N plus the best), and a save/restore that gives
back every leaf of the state, the optimizer's moments included, the rng and the data position."""

import dataclasses
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer.models.scan_conversion import stack_layers
from transformer.training import checkpoints
from transformer.training.config import default_config, model_config
from transformer.training.optim import make_optimizer
from transformer.training.state import create_train_state


def small_state(tx: optax.GradientTransformation, steps: int = 0):
  """A two-leaf params pytree with its optimizer state after `steps` updates of distinct
  gradients."""
  params = {"dense": {"kernel": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
                      "bias": jnp.ones(3)}}
  state = create_train_state(params, tx)
  for i in range(steps):
    grads = jax.tree.map(lambda x, i=i: jnp.sin(x + i) + 0.1 * i, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state)
  return state


def data_iterator():
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def saved_steps(workdir: str) -> list[int]:
  return sorted(int(name) for name in os.listdir(os.path.join(workdir, checkpoints.CHECKPOINT_DIR))
                if name.isdigit())


# Eval loss per saved step (None: a checkpoint step without an eval).
LOSSES = {1: 3.0, 2: 1.0, 3: None, 4: 9.0, 5: 4.0, 6: 5.0}


@pytest.mark.parametrize("best_metric, best_mode, kept", [
    ("loss", "min", [2, 5, 6]),  # the latest 2, plus step 2 (lowest loss)
    ("loss", "max", [4, 5, 6]),  # the latest 2, plus step 4 (highest)
    ("", "min", [5, 6]),  # no best metric: the latest 2 only
])
def test_keeps_the_latest_n_plus_the_best(tmp_path, best_metric, best_mode, kept):
  config = default_config()
  config.update(keep_checkpoints=2, best_metric=best_metric, best_mode=best_mode,
                async_checkpoints=False)
  tx = optax.sgd(0.1)
  state, rng, data = small_state(tx), jax.random.PRNGKey(0), data_iterator()
  manager = checkpoints.make_manager(str(tmp_path), config)
  for step, loss in LOSSES.items():
    state = state.replace(step=jnp.int32(step))
    checkpoints.save(manager, state, rng, data, config, None if loss is None else {"loss": loss})
  manager.wait_until_finished()
  manager.close()
  assert saved_steps(str(tmp_path)) == kept


def test_save_and_restore_give_back_every_leaf_of_the_state(tmp_path):
  config = default_config()
  config.async_checkpoints = False
  tx, _ = make_optimizer(config.optimizer, d_model=64, num_train_steps=10)  # Adam: count, mu, nu
  state, rng, data = small_state(tx, steps=3), jax.random.PRNGKey(7), data_iterator()
  for _ in range(5):
    next(data)
  manager = checkpoints.make_manager(str(tmp_path), config)
  checkpoints.save(manager, state, rng, data, config, {"loss": 1.0})
  manager.wait_until_finished()
  expected_next = next(data)

  template, other_data = small_state(tx), data_iterator()  # step 0: zero moments, count 0
  restored, restored_rng = checkpoints.restore(manager, 3, template, jax.random.PRNGKey(0),
                                               other_data)
  manager.close()
  saved_leaves = jax.tree_util.tree_leaves_with_path(state.opt_state)
  restored_leaves = jax.tree_util.tree_leaves_with_path(restored.opt_state)
  assert [path for path, _ in restored_leaves] == [path for path, _ in saved_leaves]
  assert len(saved_leaves) >= 5  # count, mu and nu of both params
  for (path, saved), (_, loaded), (_, fresh) in zip(
      saved_leaves, restored_leaves, jax.tree_util.tree_leaves_with_path(template.opt_state)):
    name = jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(saved), err_msg=name)
    assert np.asarray(loaded).dtype == np.asarray(saved).dtype, name
    assert not np.array_equal(np.asarray(fresh), np.asarray(saved)), (
        f"{name}: the template says nothing")
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  assert int(restored.step) == 3
  np.testing.assert_array_equal(restored_rng, rng)
  assert next(other_data) == expected_next  # the data position came back too


@pytest.mark.parametrize("saved_scan, run_scan", [(False, True), (True, False), (True, True)])
def test_params_of_another_layer_layout_are_converted(tmp_path, saved_scan, run_scan):
  """init_from's params come in the run's scan_layers layout, whatever layout saved them."""
  config = default_config()
  config.model.update(num_encoder_layers=2, num_decoder_layers=3, scan_layers=saved_scan)
  checkpoints.write_config(str(tmp_path), config)
  cfg = model_config(config)
  layer = lambda i: {"ffn": {"wi": {"kernel": jnp.full((2, 3), float(i))}}}  # noqa: E731
  unrolled = {"encoder": {"layer_0": layer(0), "layer_1": layer(1)},
              "decoder": {f"layer_{i}": layer(i) for i in range(3)} | {"final": jnp.ones(2)},
              "token_embedding": {"embedding": jnp.zeros((4, 2))}}
  saved = stack_layers(unrolled, cfg) if saved_scan else unrolled
  lines = []
  run_cfg = dataclasses.replace(cfg, scan_layers=run_scan)
  got = checkpoints.in_layer_layout(saved, str(tmp_path), run_cfg, lines.append)
  expected = stack_layers(unrolled, cfg) if run_scan else unrolled
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  assert len(lines) == (saved_scan != run_scan)
  if run_scan:
    np.testing.assert_array_equal(got["decoder"]["layers"]["ffn"]["wi"]["kernel"][:, 0, 0],
                                  [0, 1, 2])
  assert checkpoints.in_layer_layout(saved, str(tmp_path / "none"), run_cfg) is saved
