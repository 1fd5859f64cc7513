"""The training loop: `run(config, workdir)` for every stage, and `dry_run(config)`.

Both start from `assembly.assemble(config)`, which validates the config and builds the
model, optimizer, layout and steps; the resume order is `Assembly.restore_or_initialize`'s.

`run` guards the run (each guard in its own module, the loop only calls them):
- `preflight`: paths, data splits, init_from and the workdir's saved model config are checked
  before anything is written, trained or compiled (ConfigError, one line);
- `lock.lock_for_run`: one run per workdir (WorkdirInUse names the other run);
- `preemption.StopRequests`: SIGTERM, SIGINT or the time limit stop the run at the top of a
  step with a checkpoint at the step reached (SystemExit 0, SIGINT 130);
- non-finite steps (`step.NONFINITE`, read with the metrics: at each log, eval and save, no
  extra host transfer per step) stop the run with NonFiniteError naming the step and the
  last good checkpoint, or are skipped (`config.skip_nonfinite_updates`, counted as
  `skipped_updates`); the state is checked before every save, so nothing non-finite is saved.
"""

import contextlib
import itertools
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from transformer import cli
from transformer.data import pipeline
from transformer.decoding.evaluation import evaluate_seq2seq
from transformer.models.config import ModelConfig
from transformer.training import (
  checkpoints,
  flops,
  integrity,
  lock,
  parallel,
  preemption,
  rewards,
  samples,
  writer,
)
from transformer.training.assembly import Assembly, PrintFn, assemble
from transformer.training.config import ConfigError, format_config
from transformer.training.stages import get_stage
from transformer.training.state import param_overview
from transformer.training.step import NONFINITE, is_finite


class NonFiniteError(FloatingPointError):
  """A non-finite loss, gradient or state: the run stopped (one line: the step, the last good
  checkpoint)."""


def print_flush(line: str) -> None:
  """print, flushed at once (progress stays visible when stdout is a file or pipe)."""
  print(line, flush=True)


@contextlib.contextmanager
def phase(print_fn: PrintFn, what: str) -> Iterator[None]:
  """Says `what ...` before a quiet phase and `what: done in 12.3s` after it."""
  print_fn(f"{what} ...")
  start = time.perf_counter()
  yield
  print_fn(f"{what}: done in {time.perf_counter() - start:.1f}s")


def every(step: int, interval: int, last_step: int) -> bool:
  """True every `interval` steps and at the last step: when to log, evaluate and save."""
  return step % interval == 0 or step == last_step


def run(config: ml_collections.ConfigDict, workdir: str, *,
        print_fn: PrintFn = print_flush) -> dict[str, float]:
  """Trains (or resumes) the run `config` in `workdir`; returns the final eval metrics.

  Raises ConfigError before anything is written or compiled, WorkdirInUse if another run
  holds the workdir, NonFiniteError on a non-finite step, and SystemExit(0 or 130) after
  saving when stopped by a signal or the time limit (see the module docstring).
  """
  parts = assemble(config)
  preflight(config, workdir)
  print_fn(format_config(config, compact=True))
  saved_steps = sorted(integrity.steps(checkpoints.checkpoint_dir(workdir)))
  finished = saved_steps and saved_steps[-1] >= config.num_train_steps
  if finished and (config.stage != "reward" or rewards.read_bias(workdir)):  # stop, read nothing
    print_fn(f"already at step {saved_steps[-1]} of {config.num_train_steps} "
             f"({os.path.join(checkpoints.checkpoint_dir(workdir), str(saved_steps[-1]))}): "
             f"nothing to train; evaluate it with python -m transformer.evaluate "
             f"--workdir={workdir}")
    return last_eval_metrics(workdir)
  with lock.lock_for_run(workdir, print_fn) as held, preemption.StopRequests(
      config.time_limit_seconds, config.stop_check_every_steps,
      on_abort=[held.release] if held else []) as stop:
    return _Training(parts, workdir, print_fn).run(stop)


def preflight(config: ml_collections.ConfigDict, workdir: str) -> None:
  """ConfigError (one line) for whatever can be known before a tokenizer trains or anything is
  written or compiled: the workdir and data paths, the data splits and their files, init_from,
  and a workdir holding a run of another model."""
  try:
    cli.check_output_dir(workdir, "--workdir")
    pipeline.check_data(config.data, {"train": "the training split",
                                      config.eval_split: "config.eval_split"}, prefix="config.")
  except ValueError as e:
    raise ConfigError(str(e)) from None
  checkpoints.check_compatible(workdir, config)
  if config.init_from:
    if not os.path.exists(os.path.join(config.init_from, checkpoints.CONFIG_FILE)):
      raise ConfigError(f"config.init_from={config.init_from!r} is not a training workdir "
                        f"(no {checkpoints.CONFIG_FILE})")
    if not integrity.steps(checkpoints.checkpoint_dir(config.init_from)):
      raise ConfigError(f"config.init_from={config.init_from!r} has no checkpoint "
                        f"(no step in {checkpoints.checkpoint_dir(config.init_from)})")
    check_init_from_stage(config)


def check_init_from_stage(config: ml_collections.ConfigDict) -> None:
  """ConfigError (one line) if the stage starts only from runs of certain stages
  (`Stage.init_from_stages`: dpo from a fine-tuned run, its frozen reference) and
  `config.init_from` is another run, or holds another model than `config.model`."""
  stage = get_stage(config.stage)
  if not stage.init_from_stages:
    return
  saved = checkpoints.read_config(config.init_from)
  needed = " or ".join(map(repr, stage.init_from_stages))
  if saved.stage not in stage.init_from_stages:
    raise ConfigError(f"config.init_from={config.init_from!r} is a {saved.stage!r} run: stage "
                      f"{config.stage!r} starts from (and keeps as its frozen reference) a "
                      f"{needed} run")
  differences = checkpoints.model_differences(saved, config)
  if differences:
    raise ConfigError(f"config.init_from={config.init_from!r} holds another model than "
                      f"config.model ({'; '.join(differences)}): stage {config.stage!r} "
                      f"trains that {needed} model itself, with the same config.model")


class _Training:
  """One run's data, checkpoints and metrics, and the loop over its steps (`run`)."""

  def __init__(self, parts: Assembly, workdir: str, print_fn: PrintFn):
    self.parts, self.config, self.workdir, self.print = parts, parts.config, workdir, print_fn
    self.is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)

    def load_tokenizer():  # process 0 copies or trains it, the others then load it
      data = self.config.data
      checkpoints.inherit_tokenizer(workdir, self.config.init_from)
      path = checkpoints.tokenizer_path(workdir)
      if os.path.exists(path):
        return pipeline.load_tokenizer_for(data, path)
      if not pipeline.source_is_prepared(data):
        with phase(print_fn, f"building the corpus ({data.name})"):
          pipeline.prepare_source(data)
      with phase(print_fn, f"training the tokenizer ({data.vocab_size} pieces)"):
        return pipeline.load_tokenizer_for(data, path)
    self.tokenizer = parallel.main_process_first(load_tokenizer, "tokenizer")
    if self.is_main:
      checkpoints.write_config(workdir, self.config)
    self.train_data = make_data(self.config, "train", self.tokenizer, train=True)
    self.manager = checkpoints.make_manager(workdir, self.config)
    self.state, self.rng = parts.restore_or_initialize(self.manager, self.train_data, print_fn)
    self.first_step = int(self.state.step)
    self.saved_step = self.first_step if self.first_step else None  # the last good checkpoint
    self.metric_writer = (writer.MetricWriter(workdir, resume_step=self.first_step)
                          if self.is_main else None)
    self.pending: list[Mapping[str, jax.Array]] = []  # step sums since the last log
    self.checked = 0  # of them, how many were checked for non-finite values

  def eval_data(self) -> Iterator[Mapping[str, np.ndarray]]:
    return make_data(self.config, self.config.eval_split, self.tokenizer, train=False)

  # ---------------------------------------------------------------- the loop

  def run(self, stop: preemption.StopRequests) -> dict[str, float]:
    config, parts, last_step = self.config, self.parts, self.config.num_train_steps
    try:
      self.print(f"stage {config.stage}, {describe(parts.model_config)}, "
                 f"{sum(x.size for x in jax.tree.leaves(self.state.params)):,} params; "
                 f"{parallel.describe(parts.layout)}")
      peak = flops.peak_flops_per_device(config.peak_flops_per_device)
      step_flops = parts.flops_per_step()
      step = self.first_step
      tokens, timer, paused, eval_metrics = 0, None, 0.0, {}
      if step == 0:  # the untrained (or init_from) baseline
        with phase(self.print, "compiling the eval step and evaluating at step 0 "
                   f"({config.eval_split})"):
          eval_metrics = self.evaluate(self.state)
        self.log_eval(0, eval_metrics)
      while step < last_step:
        request = stop.check(step)
        if request:
          self.stop(request, step)
        batch = next(self.train_data)
        tokens += count_tokens(parts, batch)
        compiling = phase(self.print, "compiling the train step") if timer is None else (
            contextlib.nullcontext())
        with compiling:
          self.state, sums = parts.train_step(self.state, parts.put_batch(batch),
                                              jax.random.fold_in(self.rng, step))
          if timer is None:  # the first step compiled: throughput counts from here on
            jax.block_until_ready(self.state.step)
        self.pending.append(sums)
        step += 1
        if timer is None:
          timer, timer_step, tokens = time.perf_counter(), step, 0
        logged, evaluated, saving = (every(step, interval, last_step) for interval in (
            config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps))
        if logged or evaluated or saving:
          self.check_finite(step)
        if logged:
          elapsed = max(time.perf_counter() - timer - paused, 1e-9)
          self.log_train(step, (step - timer_step) / elapsed, tokens / elapsed, step_flops, peak)
        pause_start = time.perf_counter()
        if evaluated:
          eval_metrics = self.evaluate(self.state)
          self.log_eval(step, eval_metrics)
        if saving:
          self.save(step, eval_metrics if evaluated else None)
        paused += time.perf_counter() - pause_start
      self.manager.wait_until_finished()
    finally:
      self.manager.close()  # waits for a save in flight, whatever happened
      if self.metric_writer:
        self.metric_writer.close()
    return self.finish(eval_metrics)

  def finish(self, eval_metrics: dict[str, float]) -> dict[str, float]:
    """The end of a run: curves and samples."""
    config = self.config
    if config.stage == "reward":  # the normalisation bias: the train split's chosen mean 0
      normalize_rewards(self.parts, self.state, config, self.tokenizer, self.workdir, self.print)
    show_samples = config.num_samples and self.parts.task.has_targets(config.data)
    # Every process joins the gather of the params.
    params = parallel.to_host(self.state.params) if show_samples else None
    if self.is_main:
      self.print(f"curves: {writer.plot_curves(self.workdir)}")
      if show_samples:
        samples.print_samples(self.parts.model_config, params, next(self.eval_data()),
                              self.tokenizer, config.num_samples, config.max_decode_length,
                              print_fn=self.print)
    return eval_metrics

  # ---------------------------------------------------------------- metrics

  def evaluate(self, state: Any) -> dict[str, float]:
    config, parts, params = self.config, self.parts, state.params
    results = parts.stage.summarize(evaluate_sums(parts, params, state.frozen, self.eval_data(),
                                                  config.eval_steps))
    if config.bleu_eval_batches:
      scores = evaluate_seq2seq(parts.model_config.eval(), params, self.tokenizer,
                                itertools.islice(self.eval_data(), config.bleu_eval_batches),
                                method="greedy", max_new_tokens=config.max_decode_length)
      self.print(f"sacreBLEU {scores['bleu']:.2f} on {scores['examples']} examples "
                 f"({scores['bleu_signature']})")
      results.update(bleu=scores["bleu"], exact_match=scores["exact_match"])
    return results

  def log_eval(self, step: int, results: dict[str, float]) -> None:
    self.print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    if self.metric_writer:
      self.metric_writer.write(step, "eval", results)

  def log_train(self, step: int, rate: float, tokens_per_second: float, step_flops: float,
                peak: float) -> None:
    """The progress line and train metrics of the steps since the last log."""
    totals = sum_metrics(self.pending)
    metrics = {**self.parts.stage.summarize(totals), "grad_norm": totals["grad_norm"]}
    if self.config.skip_nonfinite_updates:
      metrics["skipped_updates"] = totals[NONFINITE]
    last_step = self.config.num_train_steps
    metrics.update(learning_rate=float(self.parts.schedule(step - 1)),
                   tokens_per_second=tokens_per_second,  # this process's
                   steps_per_second=rate,
                   mfu=flops.mfu(step_flops, rate, peak, jax.device_count()))
    line = writer.progress_line(step, last_step, metrics["loss"], metrics["learning_rate"],
                                metrics["tokens_per_second"], metrics["mfu"],
                                (last_step - step) / rate if rate else 0.0,
                                grad_norm=metrics["grad_norm"],
                                extra={k: metrics[k] for k in self.parts.stage.progress})
    if metrics.get("skipped_updates"):
      line += f" | skipped {metrics['skipped_updates']:.0f} non-finite updates"
    self.print(line)
    if self.metric_writer:
      self.metric_writer.write(step, "train", metrics)
    self.pending, self.checked = [], 0

  # ---------------------------------------------------------------- guards

  def last_good(self) -> str:
    if self.saved_step is None:
      return "there is no checkpoint yet"
    return (f"the last good checkpoint is step {self.saved_step} "
            f"({os.path.join(str(self.manager.directory), str(self.saved_step))})")

  def check_finite(self, step: int) -> None:
    """NonFiniteError naming the first non-finite step among those not checked yet (one host
    transfer of their flags), unless such steps are skipped."""
    flags = jax.device_get([sums[NONFINITE] for sums in self.pending[self.checked:]])
    first = next((i for i, flag in enumerate(flags) if flag), None)
    if first is not None and not self.config.skip_nonfinite_updates:
      bad = step - len(flags) + first + 1
      summary = self.parts.stage.summarize(sum_metrics([self.pending[self.checked + first]]))
      self.manager.wait_until_finished()
      raise NonFiniteError(
          f"the train loss or gradient is not finite at step {bad} (loss {summary['loss']}): "
          f"stopped without saving; {self.last_good()}. Lower the learning rate, or set "
          "config.skip_nonfinite_updates=True to skip such steps")
    self.checked = len(self.pending)

  def save(self, step: int, metrics: dict[str, float] | None) -> None:
    """A checkpoint at `step`, after checking the state is finite."""
    if not bool(jax.device_get(is_finite(self.state))):
      self.manager.wait_until_finished()
      raise NonFiniteError(f"the train state at step {step} has non-finite values: not saved; "
                           f"{self.last_good()}")
    checkpoints.save(self.manager, self.state, self.rng, self.train_data, self.config, metrics)
    self.saved_step = step

  def stop(self, request: preemption.StopRequest, step: int) -> None:
    """Saves at `step` (unless saved there already), says so, and exits (SystemExit)."""
    if step != self.saved_step and step > self.first_step:
      self.check_finite(step)
      self.save(step, None)
    self.manager.wait_until_finished()
    self.print(request.message(step, self.saved_step))
    raise request.exit()


# ------------------------------------------------------------------------------ helpers

def normalize_rewards(parts: Assembly, state: Any, config: ml_collections.ConfigDict,
                      tokenizer: Any, workdir: str, print_fn: PrintFn) -> None:
  """Scores the train split's chosen responses and stores the bias (`training/rewards.py`),
  unless the workdir already holds the bias of this step."""
  step = int(state.step)
  stored = rewards.read_bias(workdir)
  if stored is not None and stored["step"] == step:
    print_fn(f"reward bias {stored['bias']:.4f} of step {step} already stored")
    return
  sums = evaluate_sums(parts, state.params, state.frozen,
                       make_data(config, "train", tokenizer, train=False),
                       config.reward.bias_batches)
  if jax.process_index() == 0:
    rewards.normalize(sums, step, workdir, print_fn)


def make_data(config: ml_collections.ConfigDict, split: str, tokenizer: Any, *,
              train: bool) -> Iterator[Mapping[str, np.ndarray]]:
  """This host's share of the global batches of `split` (infinite and shuffled if `train`)."""
  return pipeline.make_dataset(config.data, split, global_batch_size=config.global_batch_size,
                               seed=config.seed, train=train, process_index=jax.process_index(),
                               process_count=jax.process_count(), tokenizer=tokenizer)


def evaluate_sums(parts: Assembly, params: Any, frozen: Any,
                  data: Iterator[Mapping[str, np.ndarray]], max_batches: int) -> dict[str, float]:
  """Summed eval metrics of `params` (and the stage's `frozen` params, `TrainState.frozen`)
  over the first `max_batches` batches of `data` (all if 0)."""
  pending = []
  for i, batch in enumerate(data):
    if max_batches and i >= max_batches:
      break
    pending.append(parts.eval_step(params, parts.put_batch(batch), frozen))
  if not pending:
    raise ValueError("the eval split gave no batches (are all its examples longer than the "
                     "config's lengths?)")
  return sum_metrics(pending)


def last_eval_metrics(workdir: str) -> dict[str, float]:
  """The latest eval record of the workdir's metrics.jsonl (without step and split), or {}."""
  records = [r for r in writer.read_jsonl(workdir) if r["split"] == "eval"]
  return {k: v for k, v in records[-1].items() if k not in ("step", "split")} if records else {}


def sum_metrics(pending: list[Mapping[str, jax.Array]]) -> dict[str, float]:
  """Host-side sums of per-step metric sums (grad_norm, not a sum, is averaged over the
  steps that were applied)."""
  host = jax.device_get(pending)
  totals = {name: float(np.sum([m[name] for m in host])) for name in host[0]}
  if "grad_norm" in totals:  # skipped steps (NONFINITE) report 0: the mean of the others
    totals["grad_norm"] /= max(len(host) - totals.get(NONFINITE, 0.0), 1.0)
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
  print_fn(format_config(config, compact=True))
  abstract_state = parts.abstract_state()
  print_fn(param_overview(abstract_state.params))
  print_fn(parallel.describe(parts.layout))
  print_fn("compiling the train step ...")
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
