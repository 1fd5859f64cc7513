"""Device placement of steps, batches and state: the one place the parallelism layer replaces.

For now: a single-program `jax.jit` on the default devices; batches are host numpy arrays
put on device whole. The step functions themselves stay pure (see `step.py`).
"""

from typing import Any, Callable, Mapping

import jax
import numpy as np


def compile_train_step(train_step: Callable) -> Callable:
  """jit(train_step) donating the old state's buffers."""
  return jax.jit(train_step, donate_argnums=(0,))


def compile_eval_step(eval_step: Callable) -> Callable:
  """jit(eval_step)."""
  return jax.jit(eval_step)


def put_batch(batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """A host batch (global arrays) on device."""
  return {name: jax.device_put(np.asarray(value)) for name, value in batch.items()}


def put_state(state: Any) -> Any:
  """The train state on device."""
  return jax.device_put(state)
