"""The assembly of a run: everything it needs, built once from its config and devices.

    parts = assemble(config)                 # validates the config first
    state, rng = parts.init()                # step 0, created directly into the layout
    state, sums = parts.train_step(state, parts.put_batch(rows), rng)

`assemble` is the only place that puts together config -> model -> optimizer and schedule ->
layout -> train and eval steps; the training loop, the dry run, the parallelism tests and the
benchmarks all start from it. Resume order (the log says which happened), in
`restore_or_initialize`:
  1. the workdir's own latest checkpoint (state, rng, data position): training continues;
  2. else `config.init_from`: params from an earlier stage's latest checkpoint (converted to
     this run's `model.scan_layers` layout if saved with the other), matched by path and
     shape; the rest (e.g. a new head) initialised fresh, both listed in the log;
  3. else scratch.
A stage with frozen params (`Stage.frozen`: dpo's reference) makes them from the params it
starts with in cases 2 and 3 (a copy: the fine-tuned run's params, frozen), with the trained
params of the reward run it reads (`Stage.reward_field`: the policy stage's), and restores
them from the checkpoint's own item in case 1, so a resumed run keeps its first reference.
"""

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from transformer.data.tasks import Task, get_task
from transformer.models.config import ModelConfig
from transformer.training import checkpoints, flops, parallel, rewards
from transformer.training.config import model_config, validate
from transformer.training.optim import make_optimizer
from transformer.training.policy import REWARD
from transformer.training.stages import Batch, Stage, get_stage
from transformer.training.state import (
  TrainState,
  boxed_state_shapes,
  create_train_state,
  init_params,
)
from transformer.training.step import Sums, make_eval_step, make_train_step

PrintFn = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Assembly:
  """A run's parts (built by `assemble`).

  Attributes:
    config: the validated run config.
    model_config: its ModelConfig (training variant).
    stage, task: the training stage and the data task.
    options: the stage's loss options from the config (`Stage.options`, and the reward
      model's of `Stage.reward_field`), read once.
    model, eval_model: the module with dropout on (train) and off (eval).
    tx, schedule: the optimizer and its learning-rate schedule (step -> rate).
    layout: where state, batches and steps live (`parallel.Layout`).
    train_step: (state, global batch, rng) -> (state, sums), jit- or pmap-compiled for the
      layout (compiled on first call), donating the old state.
    eval_step: (params, global batch, frozen) -> sums, compiled for the layout.
    init_state: init rng -> the state at step 0, computed into the layout (compiled once).
  """

  config: ml_collections.ConfigDict
  model_config: ModelConfig
  stage: Stage
  task: Task
  options: Mapping[str, Any]
  model: nn.Module
  eval_model: nn.Module
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  layout: parallel.Layout
  pure_train_step: Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Sums]]
  train_step: Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Sums]]
  eval_step: Callable[[Any, Batch, Any], Sums]
  init_state: Callable[[jax.Array], TrainState]

  def init(self) -> tuple[TrainState, jax.Array]:
    """(state at step 0, dropout rng) in the layout, both from `config.seed`."""
    init_rng, rng = (parallel.replicate(self.layout, key) for key in
                     np.asarray(jax.random.split(jax.random.PRNGKey(self.config.seed))))
    return self.init_state(init_rng), rng

  def abstract_state(self) -> TrainState:
    """The state's ShapeDtypeStructs (nothing allocated)."""
    return jax.eval_shape(lambda: create_train_state(
        init_params(self.model, jax.random.PRNGKey(0)), self.tx, self.frozen))

  def frozen(self, params: Any) -> dict[str, Any]:
    """The stage's frozen params made from starting params (`Stage.frozen`)."""
    return self.stage.frozen(params, self.options)

  def batch_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes of one global batch of the data task (no data read)."""
    spec = {}
    for name, length in self.task.lengths(self.config.data).items():
      shape = (self.config.global_batch_size, length)
      weights = name.endswith("_weights")
      spec[name] = jax.ShapeDtypeStruct(shape, jnp.float32 if weights else jnp.int32)
      if self.task.packable and not weights:
        spec[f"{name}_segmentation"] = spec[f"{name}_position"] = jax.ShapeDtypeStruct(
            shape, jnp.int32)
    return spec

  def flops_per_step(self) -> float:
    """Analytic matmul FLOPs of one train step on the global batch (`flops.py`)."""
    return flops.train_flops_per_step(
        self.model_config, self.task, {k: v.shape for k, v in self.batch_spec().items()},
        logits=self.stage.logits, passes=self.stage.forward_passes)

  def lower_train_step(self) -> Any:
    """The train step lowered for the abstract state and batch (the dry run compiles it)."""
    return parallel.lower_train_step(self.layout, self.pure_train_step, self.abstract_state(),
                                     self.batch_spec())

  def put_batch(self, rows: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a global batch, placed on its devices for the steps."""
    return parallel.put_batch(self.layout, rows)

  def restore_or_initialize(self, manager: Any, data_iterator: Any,
                            print_fn: PrintFn) -> tuple[TrainState, jax.Array]:
    """The run's starting (state, rng) by the resume order of the module docstring.

    Args:
      manager: the workdir's checkpoint manager (`checkpoints.make_manager`).
      data_iterator: the train data iterator; moved to the saved position on a resume.
      print_fn: where the one line saying which case applied goes (and one line per damaged
        checkpoint set aside on the way: `checkpoints.restore_latest`).
    """
    state, rng = self.init()
    resumed = checkpoints.restore_latest(manager, state, rng, data_iterator, print_fn)
    if resumed is not None:
      step, state, rng = resumed
      print_fn(f"resuming from the workdir's checkpoint at step {step} "
               f"({os.path.join(str(manager.directory), str(step))})")
    elif self.config.init_from:
      loaded, step = checkpoints.restore_raw_params(
          self.config.init_from, print_fn=print_fn, sharding_for=self._param_sharding(state))
      loaded = checkpoints.in_layer_layout(loaded, self.config.init_from, self.model_config,
                                           print_fn)
      params, restored, fresh = checkpoints.merge_params(state.params, loaded)
      print_fn(f"initialising from init_from={self.config.init_from} (step {step}): restored "
               f"{len(restored)} params, initialised fresh {len(fresh)}"
               + "".join(f"\n  fresh: {name}" for name in fresh))
      state = create_train_state(params, self.tx, self.frozen)
    else:
      print_fn("starting from scratch (no checkpoint in the workdir, no init_from)")
    if state.frozen and resumed is None:
      loaded = {REWARD: rewards.load_reward_model(rewards.config_field(
          self.config, self.stage.reward_field)).params} if self.stage.reward_field else {}
      copies = [name for name in state.frozen if name not in loaded]
      if copies:
        print_fn(f"frozen {', '.join(copies)}: a copy of these starting params")
      if loaded:
        print_fn(f"frozen {', '.join(loaded)}: the trained params of another run")
      state = state.replace(frozen={**state.frozen, **loaded})
    return parallel.put_state(self.layout, state), rng

  def _param_sharding(self, state: TrainState) -> Callable[[str, tuple[int, ...]], Any]:
    """sharding_for(path, shape) of an init_from param: this run's sharding of the param of
    that path and shape, else replicated (a param this run does not keep)."""
    shardings = {jax.tree_util.keystr(path, simple=True, separator="/"): (tuple(x.shape), s)
                 for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(state.params),
                                         jax.tree.leaves(self.layout.state_sharding.params))}

    def sharding_for(path: str, shape: tuple[int, ...]) -> Any:
      mine = shardings.get(path)
      return mine[1] if mine and mine[0] == shape else self.layout.replicated
    return sharding_for


def assemble(config: ml_collections.ConfigDict,
             devices: Sequence[jax.Device] | None = None) -> Assembly:
  """Validates `config` and builds its parts over `devices` (default: every device of every
  process); ConfigError (one line, naming the field) before anything is compiled."""
  validate(config)
  cfg, stage, task = model_config(config), get_stage(config.stage), get_task(config.data.task)
  model = stage.build_model(cfg.train(), config)
  eval_model = stage.build_model(cfg.eval(), config)
  tx, schedule = make_optimizer(config.optimizer, cfg.d_model, config.num_train_steps)
  options = stage.options(config)
  if stage.reward_field:
    options = {**options, **rewards.reward_options(config, stage.reward_field)}
  frozen = lambda params: stage.frozen(params, options)  # noqa: E731
  layout = parallel.make_layout(config, boxed_state_shapes(model, tx, frozen),
                                None if devices is None else list(devices))

  def rollout(module: nn.Module) -> Any:
    return stage.make_rollout and stage.make_rollout(module, config.label_smoothing, **options)
  pure_train_step = make_train_step(
      stage.make_loss(model, config.label_smoothing, **options), tx,
      stage.denominator, grad_accum_steps=config.grad_accum_steps, axis_name=layout.axis_name,
      skip_nonfinite=config.skip_nonfinite_updates, rollout=rollout(model),
      updates_per_batch=config.policy.updates_per_batch if stage.make_rollout else 1)
  eval_step = make_eval_step(stage.make_loss(eval_model, config.label_smoothing, **options),
                             axis_name=layout.axis_name, rollout=rollout(eval_model))
  init_state = parallel.jit_init_state(
      layout, lambda key: create_train_state(init_params(model, key), tx, frozen))
  return Assembly(config, cfg, stage, task, options, model, eval_model, tx, schedule, layout,
                  pure_train_step, parallel.jit_train_step(layout, pure_train_step),
                  parallel.jit_eval_step(layout, eval_step), init_state)
