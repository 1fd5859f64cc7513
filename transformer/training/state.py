"""The train state (step, params, optimizer state, frozen params) and its creation.

The state holds arrays only, so it is a plain pytree to jit, shard and checkpoint; the
model, optimizer and loss live in the step function built around it (`stages.py`).
`frozen` holds the params of frozen models the loss reads besides the trained ones (DPO's
reference: a copy of the policy's starting params); they are placed and sharded like the
params, passed to the loss, never differentiated or updated, and saved as their own
checkpoint item (not trainable state: no optimizer state).
Params are created with logical-axis metadata (for the parallelism layer) and stored
unboxed here: `boxed_state_shapes` gives the metadata back without allocating.
"""

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer.models.registry import dummy_batch

Params = Any


@flax.struct.dataclass
class TrainState:
  """step: int32 []; params: the model's pytree; opt_state: the optimizer's pytree; frozen:
  {name: params} of the frozen models the loss reads ({} for most stages)."""
  step: jnp.ndarray
  params: Params
  opt_state: optax.OptState
  frozen: dict[str, Params]


def boxed_params(model: nn.Module, rng: jax.Array) -> Params:
  """Freshly initialised params, still wrapped in their logical-partitioning boxes."""
  return model.init(rng, *model.batch_args(dummy_batch()))["params"]


def boxed_state_shapes(model: nn.Module, tx: optax.GradientTransformation,
                       frozen: Callable[[Params], dict[str, Params]] = lambda params: {}
                       ) -> TrainState:
  """The TrainState's ShapeDtypeStructs, params, optimizer moments and frozen params still in
  their logical boxes.

  The parallelism layer reads the logical axis names of every leaf from it (unboxed leaves,
  e.g. the step and Adam's count, have none and are replicated). Nothing is allocated.
  frozen: the stage's frozen params from its starting params (`stages.Stage.frozen`).
  """
  return jax.eval_shape(lambda: create_train_state(boxed_params(model, jax.random.PRNGKey(0)),
                                                   tx, frozen))


def init_params(model: nn.Module, rng: jax.Array) -> Params:
  """Freshly initialised, unboxed params."""
  return nn.meta.unbox(boxed_params(model, rng))


def create_train_state(params: Params, tx: optax.GradientTransformation,
                       frozen: Callable[[Params], dict[str, Params]] = lambda params: {}
                       ) -> TrainState:
  """Step 0 with the optimizer's initial state for `params`, and frozen(params) as the frozen
  params (which must share no buffer with `params`: the train step donates both)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    frozen=frozen(params))


def param_overview(params: Params) -> str:
  """One line per param (path, shape, count), ending with `params: <total>`."""
  rows = [(jax.tree_util.keystr(path, simple=True, separator="/"), tuple(leaf.shape),
           int(np.prod(leaf.shape))) for path, leaf in jax.tree_util.tree_leaves_with_path(params)]
  width = max(len(r[0]) for r in rows)
  total = sum(r[2] for r in rows)
  lines = [f"{name:<{width}}  {str(shape):<16} {count:>12,}" for name, shape, count in rows]
  return "\n".join(lines + [f"params: {total:,} ({total / 1e6:.2f}M)"])
