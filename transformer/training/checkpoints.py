"""Orbax checkpoints of a run, the files beside them, and restoring params for later stages.

Workdir layout:

  config.json              the run config (written at start; compared on resume)
  spm.model                the SentencePiece model the run trains with
  checkpoints/<step>/      one Orbax checkpoint per saved step, with items
      params/              the model params
      train/               {'step', 'opt_state', 'rng'}
      data/                the grain iterator state (process_<i>-of-<n>.json)
      config/              the run config again (JSON), so a checkpoint stands alone
      metrics/             the eval metrics of that step, when it had an eval

Saves are atomic: Orbax writes into a temporary directory and renames it to
`checkpoints/<step>` only once complete, so a run that dies mid-save leaves the last good
checkpoint untouched (and an unfinished temporary directory is never read as a step).
The latest `keep_checkpoints` steps are kept, plus the best by `best_metric`.
"""

import json
import os
import shutil
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from grain import python as grain

from transformer.models.config import ModelConfig
from transformer.training.config import ConfigError, model_config
from transformer.training.state import TrainState

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "spm.model"
CHECKPOINT_DIR = "checkpoints"
# Model fields that do not change the params (shapes or dtypes): they may differ on resume.
_FREE_MODEL_FIELDS = ("dropout_rate", "attention_dropout_rate", "dtype")


# ----------------------------------------------------------------------------- run files

def read_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config.json saved in `workdir`, or None if there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes config.json into `workdir` (atomically: temp file + rename)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json(indent=2))
  os.replace(path + ".tmp", path)


def check_compatible(workdir: str, config: ml_collections.ConfigDict) -> None:
  """ConfigError (one line) if `workdir` holds a run whose model params would not fit `config`."""
  saved = read_config(workdir)
  if saved is None:
    return
  differences = _model_differences(saved, config)
  if differences:
    raise ConfigError(f"workdir {workdir} holds a run with an incompatible model config "
                      f"({'; '.join(differences)}): use a new --workdir, or init_from to start "
                      "from it")


def _model_differences(saved: ml_collections.ConfigDict,
                       config: ml_collections.ConfigDict) -> list[str]:
  """'field: saved -> now' for each param-relevant model field that differs."""
  old, new = model_config(saved), model_config(config)
  return [f"{name}: {getattr(old, name)!r} in the workdir, {getattr(new, name)!r} now"
          for name in old.__dataclass_fields__
          if name not in _FREE_MODEL_FIELDS and getattr(old, name) != getattr(new, name)]


def tokenizer_path(workdir: str) -> str:
  """Where a run keeps its SentencePiece model."""
  return os.path.join(workdir, TOKENIZER_FILE)


def inherit_tokenizer(workdir: str, init_from: str) -> None:
  """Copies init_from's spm.model into `workdir` unless it already has one (same vocabulary)."""
  source, target = tokenizer_path(init_from), tokenizer_path(workdir)
  if init_from and os.path.exists(source) and not os.path.exists(target):
    os.makedirs(workdir, exist_ok=True)
    shutil.copyfile(source, target)


# ----------------------------------------------------------------------------- manager

def make_manager(workdir: str, config: ml_collections.ConfigDict | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """The CheckpointManager of `workdir/checkpoints`; keep/best/async settings from `config`."""
  directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
  if config is None or read_only:
    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        read_only=True, create=False, save_interval_steps=0))
  policies = [ocp.checkpoint_managers.LatestN(n=config.keep_checkpoints)]
  best_fn = None
  if config.best_metric:
    metric = config.best_metric
    best_fn = lambda metrics: metrics[metric]  # noqa: E731
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=best_fn, reverse=config.best_mode == "min", n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      best_fn=best_fn, best_mode=config.best_mode,
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      enable_async_checkpointing=config.async_checkpoints, create=True)
  return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, state: TrainState, rng: jax.Array, data_iterator: Any,
         config: ml_collections.ConfigDict, metrics: dict[str, float] | None = None) -> None:
  """Saves the state, rng, data position and config at `state.step` (async if configured)."""
  step = int(state.step)
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state, "rng": rng}),
      data=grain.PyGrainCheckpointSave(data_iterator),
      config=ocp.args.JsonSave(config.to_dict())),
      metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, state: TrainState, rng: jax.Array,
            data_iterator: Any) -> tuple[TrainState, jax.Array]:
  """Restores (state, rng) shaped like the given ones and moves `data_iterator` to the saved
  position."""
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract(state.params)),
      train=ocp.args.StandardRestore(abstract(
          {"step": state.step, "opt_state": state.opt_state, "rng": rng})),
      data=grain.PyGrainCheckpointRestore(data_iterator)))
  train = restored["train"]
  return TrainState(step=train["step"], params=restored["params"],
                    opt_state=train["opt_state"]), train["rng"]


def restore_raw_params(workdir: str, step: int | None = None) -> tuple[Any, int]:
  """(params as saved, step) from `workdir`'s checkpoint at `step` (default: the latest)."""
  manager = make_manager(workdir, read_only=True)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}")
  restored = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
  manager.close()
  return restored["params"], step


# ----------------------------------------------------------------------------- later stages

def merge_params(fresh: Any, loaded: Any) -> tuple[Any, list[str], list[str]]:
  """Takes each param from `loaded` where its path and shape match, else keeps the fresh one.

  Returns:
    (params shaped like `fresh`, paths restored, paths initialised fresh (with the reason)).
  """
  flat_loaded = {jax.tree_util.keystr(p, simple=True, separator="/"): v
                 for p, v in jax.tree_util.tree_leaves_with_path(loaded)}
  restored, fresh_names = [], []

  def pick(path, value):
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    other = flat_loaded.get(name)
    if other is None:
      fresh_names.append(f"{name} (not in checkpoint)")
      return value
    if tuple(other.shape) != tuple(value.shape):
      fresh_names.append(f"{name} (shape {tuple(other.shape)} in checkpoint, "
                         f"{tuple(value.shape)} here)")
      return value
    restored.append(name)
    return jax.numpy.asarray(other, value.dtype)

  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  return merged, restored, fresh_names


def load_params_for_inference(workdir: str,
                              step: int | None = None) -> tuple[ModelConfig, Any, str]:
  """(eval ModelConfig, params, path of spm.model) of the run in `workdir` (latest step by
  default)."""
  config = read_config(workdir)
  if config is None:
    raise FileNotFoundError(f"no {CONFIG_FILE} in {workdir}: not a training workdir")
  params, _ = restore_raw_params(workdir, step)
  params = jax.tree.map(np.asarray, params)
  return model_config(config).eval(), params, tokenizer_path(workdir)
