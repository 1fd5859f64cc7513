"""Learning-rate schedules (the paper's, warmup + cosine, constant) and the optax optimizer.

The paper (§5.3): Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 and
  lrate = d_model^-0.5 · min(step_num^-0.5, step_num · warmup_steps^-1.5),
where step_num counts from 1 at the first update (optax counts from 0, hence the + 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
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


def frozen_names(opt: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The top-level param names of `opt.frozen_params` ('a,b' -> ('a', 'b'))."""
  return tuple(name.strip() for name in opt.frozen_params.split(",") if name.strip())


def freeze(tx: optax.GradientTransformation,
           names: tuple[str, ...]) -> optax.GradientTransformation:
  """`tx` on every param except those under the top-level `names`, whose updates are 0: they
  get no optimizer state and their gradients do not count in `tx`'s clipping norm.

  Raises ValueError (at `init`, naming the field) for a name that is not a top-level param.
  """
  def labels(params):
    unknown = [name for name in names if name not in params]
    if unknown:
      raise ValueError(f"config.optimizer.frozen_params: {', '.join(map(repr, unknown))} "
                       f"is not a top-level param of the model; expected some of "
                       f"{sorted(params)}")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if path[0].key in names else "train", params)
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def make_optimizer(opt: ml_collections.ConfigDict, d_model: int,
                   num_train_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam, AdamW or plain SGD on `make_schedule`, after optional global-norm gradient clipping,
  with the params of `opt.frozen_params` held fixed (`freeze`).

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
  if frozen_names(opt):
    tx = freeze(tx, frozen_names(opt))
  return tx, schedule
