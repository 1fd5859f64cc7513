"""The one pure train step shared by every stage, and the eval step.

`train_step(state, batch, rng) -> (state, sums)` splits the global batch into
`grad_accum_steps` microbatches, sums each one's gradient of the summed objective and its
metric sums, optionally psums both over `axis_name` (pmap), divides the gradient by the
stage's denominator, and applies one optimizer update. The result equals the gradient of
the mean loss over the whole batch. Device placement is the caller's (`parallel.py`).
A stage with a rollout (policy) first turns the batch into the one its loss reads (its
samples), and may take several optimizer updates on it (`updates_per_batch`).

Every step also returns `sums[NONFINITE] = 1.0` if its loss sums or gradient norm are not
finite (else 0.0): the loop reads it with the other sums, so no extra host transfer per step.
With `skip_nonfinite`, such a step keeps the old params and optimizer state (the step count
still advances, so the batch is skipped) and its metric sums are zeroed.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from transformer.training.stages import Batch, Frozen, LossFn
from transformer.training.state import TrainState

Sums = dict[str, jnp.ndarray]
Rollout = Callable[[Any, Batch, jax.Array, Frozen], Batch]  # (params, batch, rng, frozen)
NONFINITE = "nonfinite_steps"  # the sums entry: 1.0 on a step with a non-finite loss or gradient


def all_finite(tree: Any) -> jnp.ndarray:
  """bool []: every element of every floating leaf of `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


is_finite = jax.jit(all_finite)  # all_finite compiled (once per tree structure and placement)


def accumulate_gradients(loss_fn: LossFn, params: Any, frozen: Frozen, batch: Batch,
                         rng: jax.Array, grad_accum_steps: int) -> tuple[Any, Sums]:
  """Summed gradients and metric sums over `grad_accum_steps` equal microbatches.

  Args:
    loss_fn: (params, batch, rng, frozen) -> (summed objective, sums).
    params: the model's pytree (differentiated).
    frozen: the frozen params the loss reads (`TrainState.frozen`; not differentiated).
    batch: arrays [global_batch, ...]; global_batch divisible by grad_accum_steps.
    rng: dropout key; microbatch i uses fold_in(rng, i).
    grad_accum_steps: number of microbatches.

  Returns:
    (gradient of the summed objective, metric sums), both summed over microbatches.
  """
  micro = jax.tree.map(
      lambda x: x.reshape(grad_accum_steps, x.shape[0] // grad_accum_steps, *x.shape[1:]), batch)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  first = jax.tree.map(lambda x: x[0], micro)
  sums_shape = jax.eval_shape(loss_fn, params, first, rng, frozen)[1]
  zeros = (jax.tree.map(jnp.zeros_like, params),
           jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape))

  def add_microbatch(carry, xs):
    index, microbatch = xs
    (_, sums), grads = grad_fn(params, microbatch, jax.random.fold_in(rng, index), frozen)
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  (grads, sums), _ = jax.lax.scan(add_microbatch, zeros, (jnp.arange(grad_accum_steps), micro))
  return grads, sums


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, denominator: str, *,
                    grad_accum_steps: int = 1, axis_name: str | None = None,
                    skip_nonfinite: bool = False, rollout: Rollout | None = None,
                    updates_per_batch: int = 1
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Sums]]:
  """Builds the pure train step.

  Args:
    loss_fn: the stage's loss (training variant of the model, dropout on).
    tx: the optimizer.
    denominator: key of the sums the gradient is divided by ('tokens' or 'pairs').
    grad_accum_steps: microbatches per step.
    axis_name: if set (under pmap), gradients and sums are psummed over this axis.
    skip_nonfinite: a step with a non-finite loss or gradient leaves params and optimizer
      state as they were (see the module docstring).
    rollout: if set, (params, batch, rng, frozen) -> the batch the loss reads, computed
      first without gradient (the policy stage's samples; `rollout_rng` keys it).
    updates_per_batch: optimizer updates on that batch (update u > 0 folds u into the rng).

  Returns:
    train_step(state, batch, rng) -> (new state, sums incl. 'grad_norm' and NONFINITE); the
    sums and gradient norm are the first update's, NONFINITE covers every update.
  """
  def update(params: Any, opt_state: Any, frozen: Frozen, batch: Batch, rng: jax.Array):
    grads, sums = accumulate_gradients(loss_fn, params, frozen, batch, rng, grad_accum_steps)
    if axis_name is not None:
      grads, sums = jax.lax.psum((grads, sums), axis_name)
    grads = jax.tree.map(lambda g: g / jnp.maximum(sums[denominator], 1.0), grads)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(grad_norm) & all_finite(sums)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    if skip_nonfinite:
      keep_old = lambda new, old: jnp.where(finite, new, old)
      new_params = jax.tree.map(keep_old, new_params, params)
      new_opt_state = jax.tree.map(keep_old, new_opt_state, opt_state)
      sums = jax.tree.map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), sums)
      grad_norm = jnp.where(finite, grad_norm, 0.0)
    return new_params, new_opt_state, sums, grad_norm, finite

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Sums]:
    if rollout is not None:
      batch = rollout(state.params, batch, rollout_rng(rng, axis_name), state.frozen)
    params, opt_state, outcomes = state.params, state.opt_state, []
    for u in range(updates_per_batch):
      params, opt_state, *outcome = update(params, opt_state, state.frozen, batch,
                                           jax.random.fold_in(rng, u) if u else rng)
      outcomes.append(outcome)
    sums, grad_norm, _ = outcomes[0]
    finite = jnp.all(jnp.stack([outcome[2] for outcome in outcomes]))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, {**sums, "grad_norm": grad_norm,
                       NONFINITE: jnp.logical_not(finite).astype(jnp.float32)}
  return train_step


def rollout_rng(rng: jax.Array, axis_name: str | None) -> jax.Array:
  """The rollout's key: the step's, with the device index folded in under pmap (each device
  draws its own samples; under jit the draws are those of one device)."""
  return rng if axis_name is None else jax.random.fold_in(rng, jax.lax.axis_index(axis_name))


def make_eval_step(loss_fn: LossFn, *, axis_name: str | None = None,
                   rollout: Rollout | None = None) -> Callable[[Any, Batch, Frozen], Sums]:
  """eval_step(params, batch, frozen) -> metric sums, for the eval variant of the model (no
  dropout); frozen: `TrainState.frozen`; rollout: as `make_train_step`'s, with key 0."""
  def eval_step(params: Any, batch: Batch, frozen: Frozen) -> Sums:
    rng = jax.random.PRNGKey(0)
    if rollout is not None:
      batch = rollout(params, batch, rollout_rng(rng, axis_name), frozen)
    sums = loss_fn(params, batch, rng, frozen)[1]
    return jax.lax.psum(sums, axis_name) if axis_name is not None else sums
  return eval_step
