"""The training loop: `run(config, workdir)` for every stage, and `dry_run(config)`.

Both start from `assembly.assemble(config)`, which validates the config and builds the
model, optimizer, layout and steps; the resume order is `Assembly.restore_or_initialize`'s.
"""

import itertools
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from transformer.data import pipeline
from transformer.decoding.evaluation import evaluate_seq2seq
from transformer.models.config import ModelConfig
from transformer.training import checkpoints, flops, parallel, samples, writer
from transformer.training.assembly import Assembly, PrintFn, assemble
from transformer.training.config import ConfigError
from transformer.training.state import param_overview


def print_flush(line: str) -> None:
  """print, flushed at once (progress stays visible when stdout is a file or pipe)."""
  print(line, flush=True)


def every(step: int, interval: int, last_step: int) -> bool:
  """True every `interval` steps and at the last step: when to log, evaluate and save."""
  return step % interval == 0 or step == last_step


def run(config: ml_collections.ConfigDict, workdir: str, *,
        print_fn: PrintFn = print_flush) -> dict[str, float]:
  """Trains (or resumes) the run `config` in `workdir`; returns the final eval metrics."""
  # ------------------------------------------------------------------ config, workdir, parts
  parts = assemble(config)
  checkpoints.check_compatible(workdir, config)
  if config.init_from and not os.path.exists(os.path.join(config.init_from,
                                                          checkpoints.CONFIG_FILE)):
    raise ConfigError(f"config.init_from={config.init_from!r} is not a training workdir "
                      "(no config.json)")
  cfg, stage, last_step = parts.model_config, parts.stage, config.num_train_steps
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
  eval_data = lambda: make_data(config, config.eval_split, tokenizer, train=False)  # noqa: E731

  # ------------------------------------------------------------------ state
  manager = checkpoints.make_manager(workdir, config)
  state, rng = parts.restore_or_initialize(manager, train_data, print_fn)
  print_fn(f"stage {config.stage}, {describe(cfg)}, "
           f"{sum(x.size for x in jax.tree.leaves(state.params)):,} params; "
           f"{parallel.describe(parts.layout)}")

  def evaluate(params: Any) -> dict[str, float]:
    results = stage.summarize(evaluate_sums(parts, params, eval_data(), config.eval_steps))
    if config.bleu_eval_batches:
      scores = evaluate_seq2seq(cfg.eval(), params, tokenizer,
                                itertools.islice(eval_data(), config.bleu_eval_batches),
                                method="greedy", max_new_tokens=config.max_decode_length)
      print_fn(f"sacreBLEU {scores['bleu']:.2f} on {scores['examples']} examples "
               f"({scores['bleu_signature']})")
      results.update(bleu=scores["bleu"], exact_match=scores["exact_match"])
    return results

  def log_eval(step: int, results: dict[str, float]) -> None:
    print_fn(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    if metric_writer:
      metric_writer.write(step, "eval", results)

  # ------------------------------------------------------------------ train
  metric_writer = writer.MetricWriter(workdir) if is_main else None
  peak = flops.peak_flops_per_device(config.peak_flops_per_device)
  step_flops = parts.flops_per_step()
  first_step = step = int(state.step)
  pending, tokens, timer, paused, eval_metrics = [], 0, None, 0.0, {}
  if step == 0:  # the untrained (or init_from) baseline
    eval_metrics = evaluate(state.params)
    log_eval(0, eval_metrics)
  while step < last_step:
    batch = next(train_data)
    tokens += count_tokens(parts, batch)
    state, sums = parts.train_step(state, parts.put_batch(batch), jax.random.fold_in(rng, step))
    pending.append(sums)
    step += 1
    if timer is None:  # the first step compiled: throughput counts from here on
      jax.block_until_ready(state.step)
      timer, timer_step, tokens = time.perf_counter(), step, 0
    if every(step, config.log_every_steps, last_step):
      totals = sum_metrics(pending)
      train_metrics = {**stage.summarize(totals), "grad_norm": totals["grad_norm"]}
      if not np.isfinite(train_metrics["loss"]):
        raise FloatingPointError(f"train loss is {train_metrics['loss']} at step {step}")
      elapsed = max(time.perf_counter() - timer - paused, 1e-9)
      rate = (step - timer_step) / elapsed
      train_metrics.update(learning_rate=float(parts.schedule(step - 1)),
                           tokens_per_second=tokens / elapsed,  # this process's
                           steps_per_second=rate,
                           mfu=flops.mfu(step_flops, rate, peak, jax.device_count()))
      print_fn(writer.progress_line(step, last_step, train_metrics["loss"],
                                    train_metrics["learning_rate"],
                                    train_metrics["tokens_per_second"], train_metrics["mfu"],
                                    (last_step - step) / rate if rate else 0.0))
      if metric_writer:
        metric_writer.write(step, "train", train_metrics)
      pending = []
    pause_start = time.perf_counter()
    evaluated = every(step, config.eval_every_steps, last_step)
    if evaluated:
      eval_metrics = evaluate(state.params)
      log_eval(step, eval_metrics)
    if every(step, config.checkpoint_every_steps, last_step):
      checkpoints.save(manager, state, rng, train_data, config, eval_metrics if evaluated else None)
    paused += time.perf_counter() - pause_start

  # ------------------------------------------------------------------ finish
  manager.wait_until_finished()
  manager.close()
  if first_step >= last_step:
    print_fn(f"already at step {first_step} of {last_step}: nothing to train")
    eval_metrics = evaluate(state.params)
    print_fn("eval: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
  show_samples = config.num_samples and config.stage != "reward"
  # every process joins the gather
  params = parallel.to_host(state.params) if show_samples else None
  if metric_writer:
    metric_writer.close()
    print_fn(f"curves: {writer.plot_curves(workdir)}")
    if show_samples:
      samples.print_samples(cfg, params, next(eval_data()), tokenizer, config.num_samples,
                            config.max_decode_length, print_fn=print_fn)
  return eval_metrics


# ------------------------------------------------------------------------------ helpers

def make_data(config: ml_collections.ConfigDict, split: str, tokenizer: Any, *,
              train: bool) -> Iterator[Mapping[str, np.ndarray]]:
  """This host's share of the global batches of `split` (infinite and shuffled if `train`)."""
  return pipeline.make_dataset(config.data, split, global_batch_size=config.global_batch_size,
                               seed=config.seed, train=train, process_index=jax.process_index(),
                               process_count=jax.process_count(), tokenizer=tokenizer)


def evaluate_sums(parts: Assembly, params: Any, data: Iterator[Mapping[str, np.ndarray]],
                  max_batches: int) -> dict[str, float]:
  """Summed eval metrics over the first `max_batches` batches of `data` (all if 0)."""
  pending = []
  for i, batch in enumerate(data):
    if max_batches and i >= max_batches:
      break
    pending.append(parts.eval_step(params, parts.put_batch(batch)))
  if not pending:
    raise ValueError("the eval split gave no batches (are all its examples longer than the "
                     "config's lengths?)")
  return sum_metrics(pending)


def sum_metrics(pending: list[Mapping[str, jax.Array]]) -> dict[str, float]:
  """Host-side sums of per-step metric sums (grad_norm, not a sum, is averaged)."""
  host = jax.device_get(pending)
  totals = {name: float(np.sum([m[name] for m in host])) for name in host[0]}
  if "grad_norm" in totals:
    totals["grad_norm"] /= len(host)
  return totals


def count_tokens(parts: Assembly, batch: Mapping[str, np.ndarray]) -> int:
  """Non-padding tokens of every sequence of a batch (segmentation, else weights, else ids)."""
  total = 0
  for name in parts.task.id_features(parts.config.data):
    mask = batch.get(f"{name}_segmentation", batch.get(f"{name}_weights", batch[name]))
    total += int(np.count_nonzero(mask))
  return total


# ------------------------------------------------------------------------------ dry run

def dry_run(config: ml_collections.ConfigDict, *,
            print_fn: PrintFn = print_flush) -> dict[str, Any]:
  """Builds the model, prints its parameter overview, compiles the train step ahead of time.

  Nothing is allocated beyond what compilation needs and no data is read.

  Returns:
    {'params': total parameter count, 'memory': compiled memory analysis (or None),
     'flops_per_step': analytic train FLOPs of the global batch}.
  """
  parts = assemble(config)
  abstract_state = parts.abstract_state()
  print_fn(param_overview(abstract_state.params))
  print_fn(parallel.describe(parts.layout))
  start = time.perf_counter()
  compiled = parts.lower_train_step().compile()
  memory = compiled.memory_analysis()
  step_flops = parts.flops_per_step()
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
