"""The training loop: `run(config, workdir)` for every stage, and `dry_run(config)`.

Resume order (the log says which happened):
  1. the workdir's own latest checkpoint (state, rng, data position): training continues;
  2. else `config.init_from`: params from an earlier stage's latest checkpoint, matched by
     path and shape; the rest (e.g. a new head) initialised fresh, both listed in the log;
  3. else scratch.
"""

import itertools
import os
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from transformer.data import pipeline
from transformer.decoding.evaluation import evaluate_seq2seq
from transformer.models.config import ModelConfig
from transformer.models.transformer import build_model
from transformer.training import checkpoints, flops, metrics, parallel, samples
from transformer.training.config import ConfigError, model_config, validate
from transformer.training.optim import make_optimizer
from transformer.training.stages import get_stage
from transformer.training.state import (TrainState, boxed_state_shapes, create_train_state,
                                        init_params, param_overview)
from transformer.training.step import make_eval_step, make_train_step

PrintFn = Callable[[str], None]


def print_flush(line: str) -> None:
  """print, flushed at once (progress stays visible when stdout is a file or pipe)."""
  print(line, flush=True)


def run(config: ml_collections.ConfigDict, workdir: str, *, print_fn: PrintFn = print_flush,
        decode_fn: samples.DecodeFn = samples.greedy) -> dict[str, float]:
  """Trains (or resumes) the run `config` in `workdir`; returns the final eval metrics."""
  # ------------------------------------------------------------------ config and workdir
  validate(config)
  checkpoints.check_compatible(workdir, config)
  if config.init_from and not os.path.exists(os.path.join(config.init_from, checkpoints.CONFIG_FILE)):
    raise ConfigError(f"config.init_from={config.init_from!r} is not a training workdir (no config.json)")
  cfg, stage = model_config(config), get_stage(config.stage)
  parallel.mesh_shape(config, jax.device_count(), jax.process_count())
  is_main = jax.process_index() == 0

  # ------------------------------------------------------------------ tokenizer and data
  os.makedirs(workdir, exist_ok=True)

  def load_tokenizer():  # process 0 copies or trains it, the others then load it
    checkpoints.inherit_tokenizer(workdir, config.init_from)
    return pipeline.load_tokenizer_for(config.data, checkpoints.tokenizer_path(workdir))
  tokenizer = parallel.main_process_first(load_tokenizer, "tokenizer")
  if is_main:
    checkpoints.write_config(workdir, config)
  train_data = make_data(config, "train", tokenizer, train=True)

  # ------------------------------------------------------------------ model, optimizer, state
  model, eval_model = build_model(cfg.train()), build_model(cfg.eval())
  tx, schedule = make_optimizer(config.optimizer, cfg.d_model, config.num_train_steps)
  layout = parallel.make_layout(config, boxed_state_shapes(model, cfg, tx))
  init_rng, rng = (parallel.replicate(layout, key)
                   for key in np.asarray(jax.random.split(jax.random.PRNGKey(config.seed))))
  state = parallel.init_state(layout, lambda key: create_train_state(init_params(model, cfg, key), tx),
                              init_rng)
  print_fn(f"stage {config.stage}, {describe(cfg)}, "
           f"{sum(x.size for x in jax.tree.leaves(state.params)):,} params; {parallel.describe(layout)}")
  manager = checkpoints.make_manager(workdir, config)
  state, rng = restore_or_initialize(manager, config, state, rng, train_data, tx, print_fn)
  state = parallel.put_state(layout, state)

  # ------------------------------------------------------------------ steps
  train_step = parallel.compile_train_step(layout, make_train_step(
      stage.make_loss(model, cfg, config.label_smoothing), tx, stage.denominator,
      grad_accum_steps=config.grad_accum_steps, axis_name=layout.axis_name))
  eval_step = parallel.compile_eval_step(layout, make_eval_step(
      stage.make_loss(eval_model, cfg, config.label_smoothing), axis_name=layout.axis_name))

  def evaluate(params: Any) -> dict[str, float]:
    eval_data = lambda: make_data(config, config.eval_split, tokenizer, train=False)
    results = stage.summarize(evaluate_sums(eval_step, layout, params, eval_data(), config.eval_steps))
    if config.bleu_eval_batches:
      scores = evaluate_seq2seq(cfg.eval(), params, tokenizer,
                                itertools.islice(eval_data(), config.bleu_eval_batches),
                                method="greedy", max_new_tokens=config.max_decode_length)
      print_fn(f"sacreBLEU {scores['bleu']:.2f} on {scores['examples']} examples "
               f"({scores['bleu_signature']})")
      results.update(bleu=scores["bleu"], exact_match=scores["exact_match"])
    return results

  # ------------------------------------------------------------------ train
  writer = metrics.MetricWriter(workdir) if is_main else None
  peak = flops.peak_flops(config.peak_flops_per_device) * jax.local_device_count()  # this process's
  first_step = step = int(state.step)
  pending, tokens, timer, paused, eval_metrics = [], 0, None, 0.0, {}
  if step == 0:  # the untrained (or init_from) baseline
    eval_metrics = evaluate(state.params)
    print_fn("eval at step 0: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
    if writer:
      writer.write(0, "eval", eval_metrics)
  while step < config.num_train_steps:
    batch = next(train_data)
    tokens += count_tokens(batch)
    state, sums = train_step(state, parallel.put_batch(layout, batch), jax.random.fold_in(rng, step))
    pending.append(sums)
    step += 1
    if timer is None:  # the first step compiled: throughput counts from here on
      jax.block_until_ready(state.step)
      timer, timer_step, tokens = time.perf_counter(), step, 0
      step_flops = flops.train_flops_per_step(cfg, {k: v.shape for k, v in batch.items()})
    if step % config.log_every_steps == 0 or step == config.num_train_steps:
      train_metrics = stage.summarize(sum_metrics(pending))
      if not np.isfinite(train_metrics["loss"]):
        raise FloatingPointError(f"train loss is {train_metrics['loss']} at step {step}")
      elapsed = max(time.perf_counter() - timer - paused, 1e-9)
      rate = (step - timer_step) / elapsed
      train_metrics.update(learning_rate=float(schedule(step - 1)), tokens_per_second=tokens / elapsed,
                           mfu=step_flops * rate / peak)
      print_fn(metrics.progress_line(step, config.num_train_steps, train_metrics["loss"],
                                     train_metrics["learning_rate"], train_metrics["tokens_per_second"],
                                     train_metrics["mfu"],
                                     (config.num_train_steps - step) / rate if rate else 0.0))
      if writer:
        writer.write(step, "train", train_metrics)
      pending = []
    pause_start = time.perf_counter()
    if step % config.eval_every_steps == 0 or step == config.num_train_steps:
      eval_metrics = evaluate(state.params)
      print_fn(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
      if writer:
        writer.write(step, "eval", eval_metrics)
    if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
      checkpoints.save(manager, state, rng, train_data, config,
                       eval_metrics if step % config.eval_every_steps == 0 or
                       step == config.num_train_steps else None)
    paused += time.perf_counter() - pause_start

  # ------------------------------------------------------------------ finish
  manager.wait_until_finished()
  manager.close()
  if first_step >= config.num_train_steps:
    print_fn(f"already at step {first_step} of {config.num_train_steps}: nothing to train")
    eval_metrics = evaluate(state.params)
    print_fn("eval: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
  show_samples = config.num_samples and config.stage != "reward"
  params = parallel.to_host(state.params) if show_samples else None  # every process joins the gather
  if writer:
    writer.close()
    print_fn(f"curves: {metrics.plot_curves(workdir)}")
    if show_samples:
      sample_batch = next(make_data(config, config.eval_split, tokenizer, train=False))
      samples.print_samples(cfg, params, sample_batch, tokenizer,
                            config.num_samples, config.max_decode_length, decode_fn, print_fn)
  return eval_metrics


# ------------------------------------------------------------------------------ helpers

def make_data(config: ml_collections.ConfigDict, split: str, tokenizer: Any, *,
              train: bool) -> Iterator[Mapping[str, np.ndarray]]:
  """This host's share of the global batches of `split` (infinite and shuffled if `train`)."""
  return pipeline.make_dataset(config.data, split, global_batch_size=config.global_batch_size,
                               seed=config.seed, train=train, process_index=jax.process_index(),
                               process_count=jax.process_count(), tokenizer=tokenizer)


def restore_or_initialize(manager, config: ml_collections.ConfigDict, state: TrainState,
                          rng: jax.Array, train_data: Any, tx, print_fn: PrintFn
                          ) -> tuple[TrainState, jax.Array]:
  """Applies the resume order (workdir checkpoint > init_from > scratch) and logs which happened."""
  latest = manager.latest_step()
  if latest is not None:
    print_fn(f"resuming from the workdir's checkpoint at step {latest} "
             f"({os.path.join(str(manager.directory), str(latest))})")
    return checkpoints.restore(manager, latest, state, rng, train_data)
  if config.init_from:
    loaded, step = checkpoints.restore_raw_params(config.init_from)
    params, restored, fresh = checkpoints.merge_params(state.params, loaded)
    print_fn(f"initialising from init_from={config.init_from} (step {step}): restored "
             f"{len(restored)} params, initialised fresh {len(fresh)}"
             + "".join(f"\n  fresh: {name}" for name in fresh))
    return create_train_state(params, tx), rng
  print_fn("starting from scratch (no checkpoint in the workdir, no init_from)")
  return state, rng


def evaluate_sums(eval_step: Callable, layout: parallel.Layout, params: Any,
                  data: Iterator[Mapping[str, np.ndarray]], max_batches: int) -> dict[str, float]:
  """Summed eval metrics over the first `max_batches` batches of `data` (all if 0)."""
  pending = []
  for i, batch in enumerate(data):
    if max_batches and i >= max_batches:
      break
    pending.append(eval_step(params, parallel.put_batch(layout, batch)))
  if not pending:
    raise ValueError("the eval split gave no batches (are all its examples longer than the config's lengths?)")
  return sum_metrics(pending)


def sum_metrics(pending: list[Mapping[str, jax.Array]]) -> dict[str, float]:
  """Host-side sums of per-step metric sums (grad_norm, not a sum, is averaged)."""
  host = jax.device_get(pending)
  totals = {name: float(np.sum([m[name] for m in host])) for name in host[0]}
  if "grad_norm" in totals:
    totals["grad_norm"] /= len(host)
  return totals


def count_tokens(batch: Mapping[str, np.ndarray]) -> int:
  """Non-padding tokens of every sequence in a batch (inputs and targets, or chosen and rejected)."""
  total = 0
  for name in ("inputs", "targets", "chosen", "rejected"):
    if name in batch:
      mask = batch.get(f"{name}_segmentation", batch.get(f"{name}_weights", batch[name]))
      total += int(np.count_nonzero(mask))
  return total


# ------------------------------------------------------------------------------ dry run

def batch_spec(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of one global batch of the config's data task (no data read)."""
  spec = {}
  for name, length in pipeline.task_lengths(config.data).items():
    shape = (config.global_batch_size, length)
    spec[name] = jax.ShapeDtypeStruct(shape, jnp.float32 if name.endswith("_weights") else jnp.int32)
    if config.data.task != "preference" and not name.endswith("_weights"):
      spec[f"{name}_segmentation"] = spec[f"{name}_position"] = jax.ShapeDtypeStruct(shape, jnp.int32)
  return spec


def dry_run(config: ml_collections.ConfigDict, *, print_fn: PrintFn = print_flush) -> dict[str, Any]:
  """Builds the model, prints its parameter overview, compiles the train step ahead of time.

  Nothing is allocated beyond what compilation needs and no data is read.

  Returns:
    {'params': total parameter count, 'memory': compiled memory analysis (or None),
     'flops_per_step': analytic train FLOPs}.
  """
  validate(config)
  cfg, stage = model_config(config), get_stage(config.stage)
  model = build_model(cfg.train())
  tx, _ = make_optimizer(config.optimizer, cfg.d_model, config.num_train_steps)
  layout = parallel.make_layout(config, boxed_state_shapes(model, cfg, tx))
  abstract_state = jax.eval_shape(
      lambda: create_train_state(init_params(model, cfg, jax.random.PRNGKey(0)), tx))
  print_fn(param_overview(abstract_state.params))
  print_fn(parallel.describe(layout))
  train_step = make_train_step(stage.make_loss(model, cfg, config.label_smoothing), tx, stage.denominator,
                               grad_accum_steps=config.grad_accum_steps, axis_name=layout.axis_name)
  spec = batch_spec(config)
  start = time.perf_counter()
  compiled = parallel.lower_train_step(layout, train_step, abstract_state, spec).compile()
  memory = compiled.memory_analysis()
  step_flops = flops.train_flops_per_step(cfg, {k: v.shape for k, v in spec.items()})
  print_fn(f"compiled the train step in {time.perf_counter() - start:.1f}s; "
           f"{step_flops / 1e12:.2f} TFLOP per step")
  if memory is not None:
    print_fn(f"memory per device: arguments {memory.argument_size_in_bytes / 2**20:,.1f} MiB, "
             f"outputs {memory.output_size_in_bytes / 2**20:,.1f} MiB, "
             f"temporaries {memory.temp_size_in_bytes / 2**20:,.1f} MiB")
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_state.params))
  return {"params": total, "memory": memory, "flops_per_step": step_flops}


def describe(cfg: ModelConfig) -> str:
  """A one-line summary of the model config."""
  return (f"{cfg.architecture}: d_model {cfg.d_model}, heads {cfg.num_heads}, d_ff {cfg.d_ff}, "
          f"layers {cfg.num_encoder_layers}+{cfg.num_decoder_layers}, vocab {cfg.vocab_size}")
