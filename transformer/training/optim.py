"""Learning-rate schedules (the paper's, warmup + cosine, constant) and the optax optimizer.

The paper (§5.3): Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 and
  lrate = d_model^-0.5 · min(step_num^-0.5, step_num · warmup_steps^-1.5),
where step_num counts from 1 at the first update (optax counts from 0, hence the + 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp
import optax

if TYPE_CHECKING:  # annotations only: the optimizer runs without ml_collections installed
  import ml_collections


def paper_schedule(d_model: int, warmup_steps: int, scale: float = 1.0) -> optax.Schedule:
  """The paper's inverse-square-root schedule with linear warmup, times `scale`."""
  def schedule(count: jnp.ndarray) -> jnp.ndarray:
    step = jnp.asarray(count, jnp.float32) + 1.0
    return scale * d_model ** -0.5 * jnp.minimum(step ** -0.5, step * warmup_steps ** -1.5)
  return schedule


def make_schedule(opt: ml_collections.ConfigDict, d_model: int,
                  num_train_steps: int) -> optax.Schedule:
  """The schedule named by `opt.schedule` ('paper' | 'cosine' | 'constant')."""
  if opt.schedule == "paper":
    return paper_schedule(d_model, opt.warmup_steps, opt.learning_rate)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.learning_rate, warmup_steps=opt.warmup_steps,
        decay_steps=max(num_train_steps, opt.warmup_steps + 1),
        end_value=opt.learning_rate * opt.end_learning_rate_fraction)
  if opt.warmup_steps:
    return optax.linear_schedule(0.0, opt.learning_rate, opt.warmup_steps)
  return optax.constant_schedule(opt.learning_rate)


def make_optimizer(opt: ml_collections.ConfigDict, d_model: int,
                   num_train_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam, AdamW or plain SGD on `make_schedule`, after optional global-norm gradient clipping.

  SGD (update = -rate · gradient) keeps the gradient's scale in the update, which Adam
  normalises away: the parallelism tests use it to compare gradients across layouts.
  """
  schedule = make_schedule(opt, d_model, num_train_steps)
  if opt.name == "adamw":
    tx = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
  elif opt.name == "sgd":
    tx = optax.sgd(schedule)
  else:
    tx = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
  if opt.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx, schedule
