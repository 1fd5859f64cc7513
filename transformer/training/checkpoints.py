"""Orbax checkpoints of a run, the files beside them, and restoring params for later stages.

Workdir layout:

  config.json              the run config (written at start; compared on resume)
  spm.model                the SentencePiece model the run trains with
  checkpoints/<step>/      one Orbax checkpoint per saved step, with items
      params/              the model params
      train/               {'step', 'opt_state', 'rng'}
      frozen/              the frozen params the loss reads (DPO's reference), if the stage
                           has any: saved apart from the trainable state, never updated
      data/                the grain iterator state (process_<i>-of-<n>.json)
      config/              the run config again (JSON), so a checkpoint stands alone
      metrics/             the eval metrics of that step, when it had an eval

      checksums.json       size and sha256 of every file above (`integrity.py`)
  checkpoints_set_aside/   damaged steps moved out of the way: <step>-<reason>/ (never deleted)

Saves are atomic: Orbax writes into a temporary directory and renames it to
`checkpoints/<step>` only once complete, so a run that dies mid-save leaves the last good
checkpoint untouched (and an unfinished temporary directory is never read as a step). The
checksums are written into that temporary directory just before the rename. Every save goes
through Orbax's async checkpointer; a synchronous save (`async_checkpoints=False`) waits for
it. The latest `keep_checkpoints` steps are kept, plus the best by `best_metric`; the loop
never saves a non-finite state, so the kept ones are finite.

Every loader (the resume, `init_from`, `generate`) takes the latest step that passes
`integrity.verify`: a damaged later step is reported in one line and set aside (left in
place, if another live run holds the workdir's lock), and a restored state with non-finite
values is set aside the same way; then the previous step is tried.
"""

import json
import math
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from grain import python as grain
from jax.experimental import multihost_utils

from transformer.models.config import ModelConfig
from transformer.models.scan_conversion import convert_layout
from transformer.training import integrity, lock
from transformer.training.config import ConfigError, model_config
from transformer.training.state import TrainState
from transformer.training.step import is_finite

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "spm.model"
CHECKPOINT_DIR = "checkpoints"
# Model fields that do not change the params (shapes or dtypes): they may differ on resume.
_FREE_MODEL_FIELDS = ("dropout_rate", "attention_dropout_rate", "dtype", "remat")
_LAYOUTS = {False: "unrolled", True: "scanned"}
# Orbax's temporary folder of a step being saved: <step><suffix>, renamed to <step> on commit.
_TMP_SUFFIX = ".orbax-checkpoint-tmp"
PrintFn = Callable[[str], None]


class CheckpointError(ValueError):
  """A checkpoint that cannot be used (one line naming the step and why)."""


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
  differences = model_differences(saved, config)
  if differences:
    raise ConfigError(f"workdir {workdir} holds a run with an incompatible model config "
                      f"({'; '.join(differences)}): use a new --workdir, or init_from to start "
                      "from it")


def model_differences(saved: ml_collections.ConfigDict,
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

class CheckpointManager(ocp.CheckpointManager):
  """Orbax's manager, writing `checksums.json` into each step just before Orbax commits it
  (its post-finalization callback, on the primary process, after every process has written)."""

  def __init__(self, directory: str, options: ocp.CheckpointManagerOptions):
    self._checksum_step: int | None = None
    options.async_options = ocp.AsyncOptions(post_finalization_callback=self._write_checksums)
    super().__init__(directory, options=options)

  def save(self, step: int, *args: Any, **kwargs: Any) -> bool:
    self.wait_until_finished()  # the previous save's callback has run: it may read the step
    self._checksum_step = step
    return super().save(step, *args, **kwargs)

  def _write_checksums(self) -> None:
    step, directory = self._checksum_step, str(self.directory)
    if step is None or jax.process_index() != 0:
      return
    temporary = os.path.join(directory, f"{step}{_TMP_SUFFIX}")
    integrity.write_checksums(temporary if os.path.isdir(temporary)
                              else os.path.join(directory, str(step)))


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def make_manager(workdir: str, config: ml_collections.ConfigDict | None = None,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """The CheckpointManager of `workdir/checkpoints`; keep/best settings from `config`."""
  directory = checkpoint_dir(workdir)
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
      enable_async_checkpointing=True, create=True)
  return CheckpointManager(directory, options)


def save(manager: ocp.CheckpointManager, state: TrainState, rng: jax.Array, data_iterator: Any,
         config: ml_collections.ConfigDict, metrics: dict[str, float] | None = None) -> None:
  """Saves the state, rng, data position and config at `state.step`; waits for the write
  unless `config.async_checkpoints`. Non-finite eval metrics are not recorded (best-of
  retention ranks finite ones only). The caller has checked the state is finite."""
  step = int(state.step)
  if metrics is not None and not all(math.isfinite(v) for v in metrics.values()):
    metrics = None
  frozen = {"frozen": ocp.args.StandardSave(state.frozen)} if state.frozen else {}
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state, "rng": rng}),
      data=grain.PyGrainCheckpointSave(data_iterator),
      config=ocp.args.JsonSave(config.to_dict()), **frozen),
      metrics=metrics, force=True)
  if not config.async_checkpoints:
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, state: TrainState, rng: jax.Array,
            data_iterator: Any) -> tuple[TrainState, jax.Array]:
  """Restores (state, rng) shaped like the given ones and moves `data_iterator` to the saved
  position."""
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
  frozen = {"frozen": ocp.args.StandardRestore(abstract(state.frozen))} if state.frozen else {}
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract(state.params)),
      train=ocp.args.StandardRestore(abstract(
          {"step": state.step, "opt_state": state.opt_state, "rng": rng})),
      data=grain.PyGrainCheckpointRestore(data_iterator), **frozen))
  train = restored["train"]
  return TrainState(step=train["step"], params=restored["params"], opt_state=train["opt_state"],
                    frozen=restored["frozen"] if state.frozen else {}), train["rng"]


def checkpoint_steps(workdir: str) -> list[int]:
  """The finished checkpoint steps of `workdir`, ascending (none: []); not verified."""
  return sorted(integrity.steps(checkpoint_dir(workdir)))


# ----------------------------------------------------------------------------- verified loading

def latest_verified_step(directory: str, print_fn: PrintFn, *, may_move: bool = True) -> int | None:
  """The latest intact step of the checkpoints `directory` (`integrity.latest_good_step`).

  Process 0 verifies (and sets aside) and tells the others, so all agree on the step."""
  step = -1
  if jax.process_index() == 0:
    found = integrity.latest_good_step(directory, print_fn, may_move=may_move)
    step = -1 if found is None else found
  if jax.process_count() > 1:
    step = int(multihost_utils.broadcast_one_to_all(np.int32(step)))
  return None if step < 0 else step


def _set_aside_nonfinite(directory: str, step: int, what: str, print_fn: PrintFn,
                         may_move: bool) -> None:
  """A restored step with non-finite values: set aside (process 0), every process waits."""
  problem = integrity.Problem("non-finite", f"non-finite values in its {what}")
  if jax.process_index() == 0:
    where = integrity.set_aside(directory, step, problem) if may_move else None
    print_fn(integrity.report(step, problem, where))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")


def _may_move(workdir: str) -> bool:
  """Damaged steps may be moved unless another live run holds the workdir's lock."""
  return lock.live_owner(workdir) is None


def _restore_failed(directory: str, step: int, error: Exception) -> CheckpointError:
  return CheckpointError(f"checkpoint {step} in {directory} passed verification but could not be "
                         f"restored into this run ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:300]})")


def restore_latest(manager: ocp.CheckpointManager, state: TrainState, rng: jax.Array,
                   data_iterator: Any, print_fn: PrintFn
                   ) -> tuple[int, TrainState, jax.Array] | None:
  """(step, state, rng) of the workdir's latest intact, finite checkpoint (damaged later ones
  are set aside, one line each), or None if there is none."""
  directory = str(manager.directory)
  while True:
    step = latest_verified_step(directory, print_fn)
    manager.reload()
    if step is None:
      return None
    try:
      restored, restored_rng = restore(manager, step, state, rng, data_iterator)
    except Exception as e:  # (verified files: a mismatch with this run, not damage)
      raise _restore_failed(directory, step, e) from e
    if bool(jax.device_get(is_finite(restored))):
      return step, restored, restored_rng
    _set_aside_nonfinite(directory, step, "state", print_fn, may_move=True)


def _abstract_params(handler: ocp.StandardCheckpointHandler, path: epath.Path,
                     sharding_for: Callable[[str, tuple[int, ...]], jax.sharding.Sharding]) -> Any:
  """ShapeDtypeStructs of the params saved at `path`, each placed by sharding_for(path, shape)."""
  metadata = handler.metadata(path)
  tree = getattr(metadata, "tree", metadata)
  return jax.tree_util.tree_map_with_path(
      lambda key, leaf: jax.ShapeDtypeStruct(
          tuple(leaf.shape), leaf.dtype,
          sharding=sharding_for(jax.tree_util.keystr(key, simple=True, separator="/"),
                                tuple(leaf.shape))), tree)


def _on_first_device(path: str, shape: tuple[int, ...]) -> jax.sharding.Sharding:
  del path, shape
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def restore_raw_params(workdir: str, step: int | None = None, *, print_fn: PrintFn = print,
                       sharding_for: Callable[[str, tuple[int, ...]], jax.sharding.Sharding]
                       = _on_first_device, item: str = "params") -> tuple[Any, int]:
  """(params as saved, step) from `workdir`'s checkpoint at `step` (default: the latest intact
  one with finite params; damaged later ones are set aside with one line each).

  Each param is restored with sharding_for('/'-joined path, shape) (default: this process's
  first device), so a checkpoint of any layout loads into any other, on every process.
  item: 'params', or 'frozen' (the frozen params of a stage that has them).
  """
  directory = checkpoint_dir(workdir)
  handler = ocp.StandardCheckpointHandler()  # the params item alone, without a manager
  try:
    while True:
      if step is not None:
        saved = sorted(integrity.steps(directory))
        if step not in saved:
          raise CheckpointError(f"no checkpoint at step {step} in {directory} (steps: "
                                f"{', '.join(map(str, saved)) or 'none'})")
        problem = integrity.verify(os.path.join(directory, str(step)))
        if problem:
          raise CheckpointError(f"checkpoint {step} in {directory} is damaged ({problem.text})")
        chosen = step
      else:
        chosen = latest_verified_step(directory, print_fn, may_move=_may_move(workdir))
        if chosen is None:
          raise CheckpointError(f"no intact checkpoint in {directory}")
      path = epath.Path(directory) / str(chosen) / item
      try:
        params = handler.restore(path, args=ocp.args.StandardRestore(
            _abstract_params(handler, path, sharding_for)))
      except Exception as e:  # (verified files: report the cause in one line)
        raise _restore_failed(directory, chosen, e) from e
      if bool(jax.device_get(is_finite(params))):
        return params, chosen
      if step is not None:
        raise CheckpointError(f"checkpoint {step} in {directory} holds non-finite params")
      _set_aside_nonfinite(directory, chosen, "params", print_fn, _may_move(workdir))
  finally:
    handler.close()


# ----------------------------------------------------------------------------- later stages

def in_layer_layout(params: Any, workdir: str, cfg: ModelConfig, print_fn: PrintFn = print
                    ) -> Any:
  """Params restored from `workdir` in the layer layout of `cfg` (`cfg.scan_layers`).

  A run saved with the other `scan_layers` setting (by its config.json) has its layer stacks
  stacked or unstacked (`scan_conversion.py`), with one line to print_fn; else unchanged.
  """
  saved = read_config(workdir)
  if saved is None:
    return params
  saved_cfg = model_config(saved)
  if saved_cfg.scan_layers == cfg.scan_layers:
    return params
  print_fn(f"converting the params of {workdir} from {_LAYOUTS[saved_cfg.scan_layers]} to "
           f"{_LAYOUTS[cfg.scan_layers]} layers (config.model.scan_layers={cfg.scan_layers})")
  return convert_layout(params, saved_cfg, saved_cfg.scan_layers, cfg.scan_layers)


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


def load_params_for_inference(workdir: str, step: int | None = None, *,
                              print_fn: PrintFn = print) -> tuple[ModelConfig, Any, str]:
  """(eval ModelConfig, params, path of spm.model) of the run in `workdir` (latest intact step
  by default; see `restore_raw_params`)."""
  config = read_config(workdir)
  if config is None:
    raise FileNotFoundError(f"no {CONFIG_FILE} in {workdir}: not a training workdir")
  params, _ = restore_raw_params(workdir, step, print_fn=print_fn)
  params = jax.tree.map(np.asarray, params)
  return model_config(config).eval(), params, tokenizer_path(workdir)
