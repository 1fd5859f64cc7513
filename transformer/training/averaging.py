"""Checkpoint averaging, as in the paper (§6.1: the last 5 checkpoints of base, 20 of big).

    params, steps = average_checkpoints(workdir, last=5)       # or steps=[80000, 90000, 100000]
    path = save_average(workdir, params, steps)                # DIR/averaged/step<last>-avg<K>/

The average is the elementwise mean of the params of the chosen checkpoints (accumulated in
float32, cast back to the params' dtype). It is saved as a params-only Orbax checkpoint with a
small JSON naming its steps, outside `checkpoints/` so that the trainer never resumes from it:

  DIR/averaged/step<last>-avg<K>/
    params/          the averaged params (`inference.read_params` reads them)
    averaged.json    {"steps": [...], "workdir": DIR}

`generate`, `evaluate` and `export` take it with `--averaged=PATH`, or average on the fly with
`--average_last=K` (`load_params` below serves all three).
"""

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np

from transformer import inference
from transformer.models.config import ModelConfig
from transformer.training import checkpoints
from transformer.training.config import model_config

AVERAGED_DIR = "averaged"
INFO_FILE = "averaged.json"


def select_steps(workdir: str, *, last: int = 0, steps: Sequence[int] = ()) -> list[int]:
  """The checkpoint steps to average: the latest `last` ones, or exactly `steps` (ascending).

  Raises:
    ValueError: neither or both given, `last` < 1, more asked for than the run kept, or a step
      that has no checkpoint (the message lists the steps there are).
  """
  saved = checkpoints.checkpoint_steps(workdir)
  where = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  if bool(last) == bool(steps):
    raise ValueError("give either the number of latest checkpoints to average or their steps")
  if steps:
    missing = sorted(set(steps) - set(saved))
    if missing:
      raise ValueError(f"no checkpoint at step(s) {missing} in {where} (steps: {saved})")
    return sorted(set(steps))
  if last < 1:
    raise ValueError(f"the number of checkpoints to average must be >= 1, got {last}")
  if last > len(saved):
    raise ValueError(f"cannot average the last {last} checkpoints: {where} holds {len(saved)} "
                     f"(steps: {saved}; keep_checkpoints sets how many a run keeps)")
  return saved[-last:]


def average_params(trees: Iterable[Any]) -> Any:
  """The elementwise mean of params pytrees of one structure: float32 sums, cast back to the
  params' dtypes. `trees` may be a generator: one tree is in memory at a time besides the sum."""
  total, dtypes, count = None, None, 0
  for tree in trees:
    as_float = jax.tree.map(lambda x: np.asarray(x, np.float32), tree)
    total = as_float if total is None else jax.tree.map(np.add, total, as_float)
    dtypes = dtypes or jax.tree.map(lambda x: np.asarray(x).dtype, tree)
    count += 1
  if not count:
    raise ValueError("nothing to average")
  return jax.tree.map(lambda t, dtype: (t / count).astype(dtype), total, dtypes)


def average_checkpoints(workdir: str, *, last: int = 0, steps: Sequence[int] = ()
                        ) -> tuple[Any, list[int]]:
  """(mean params of the chosen checkpoints, their steps); see `select_steps` for the choice."""
  chosen = select_steps(workdir, last=last, steps=steps)
  return average_params(checkpoints.restore_raw_params(workdir, s)[0] for s in chosen), chosen


def average_path(workdir: str, steps: Sequence[int]) -> str:
  """Where the average of `steps` is saved: DIR/averaged/step<last>-avg<K>."""
  return os.path.join(workdir, AVERAGED_DIR, f"step{max(steps)}-avg{len(steps)}")


def save_average(workdir: str, params: Any, steps: Sequence[int]) -> str:
  """Saves averaged params with their steps (`average_path`); returns the folder."""
  path = average_path(workdir, steps)
  inference.write_params(os.path.join(path, inference.PARAMS_DIR), params)
  with open(os.path.join(path, INFO_FILE), "w") as f:
    json.dump({"steps": [int(s) for s in steps], "workdir": os.path.abspath(workdir)}, f)
  return path


def load_average(path: str) -> tuple[Any, list[int]]:
  """(params, steps) of an average saved by `save_average`."""
  info_file = os.path.join(path, INFO_FILE)
  if not os.path.isfile(info_file):
    raise FileNotFoundError(f"no {INFO_FILE} in {path}: not an average saved by "
                            f"python -m transformer.average")
  with open(info_file) as f:
    steps = json.load(f)["steps"]
  return inference.read_params(os.path.join(path, inference.PARAMS_DIR)), steps


def load_params(workdir: str, *, step: int | None = None, average_last: int = 0,
                averaged: str | None = None,
                print_fn: Callable[[str], None] = print) -> tuple[Any, list[int]]:
  """(params, the steps they come from) for generate, evaluate and export: the checkpoint at
  `step` (default: the latest), the mean of the latest `average_last` checkpoints, or an
  average saved at `averaged`; at most one of the three. A damaged latest checkpoint is set
  aside with one line to `print_fn` (`checkpoints.restore_raw_params`)."""
  if sum(x is not None and x != 0 for x in (step, average_last, averaged)) > 1:
    raise ValueError("choose the params one way: --step, --average_last or --averaged")
  if average_last:
    return average_checkpoints(workdir, last=average_last)
  if averaged:
    return load_average(averaged)
  params, step = checkpoints.restore_raw_params(workdir, step, print_fn=print_fn)
  return params, [step]


def load_for_inference(workdir: str, *, step: int | None = None, average_last: int = 0,
                       averaged: str | None = None, print_fn: Callable[[str], None] = print
                       ) -> tuple[ModelConfig, Any, str, list[int]]:
  """(eval ModelConfig, params, path of spm.model, steps of the params) of the training run in
  `workdir`; the params as `load_params` chooses them."""
  config = checkpoints.read_config(workdir)
  if config is None:
    raise FileNotFoundError(f"no {checkpoints.CONFIG_FILE} in {workdir}: not a training workdir")
  params, steps = load_params(workdir, step=step, average_last=average_last, averaged=averaged,
                              print_fn=print_fn)
  return model_config(config).eval(), params, checkpoints.tokenizer_path(workdir), steps
