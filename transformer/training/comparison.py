"""`compare(config, workdir)`: the language-model families on one token budget, one table.

The comparison config (`experiments/compare_lms.py`) has three fields:
  run            the run config every network shares (data, batch, steps, optimizer, eval);
  models         name -> model fields over run.model (a causal LM each: no encoder);
  ngram_orders   the Kneser-Ney orders fitted.

In `workdir` (every step skipped when its output is there, so a rerun resumes):
  comparison_config.json  the config (a rerun with another config is refused);
  spm.model               the tokenizer, trained once and copied into each network's run;
  <name>/                 an ordinary training run of `run` with the model's fields (the
                          trainer's own resume order), then <name>/comparison.json;
  ngram_<order>.json      the n-gram fitted on the networks' training tokens, and its score;
  train_tokens.json       training tokens after each step (the plot's x axis);
  comparison.md, .png     the table and the plot (`comparison_report`).

Matched budget: the networks train on the same batches (same data config, seed, global batch
and steps), and the n-grams count the target segments of exactly those batches (`segments`:
each packed segment scored from BOS, as the networks see it). Every model is scored on the
whole validation split: the trainer's eval with `eval_steps = 0`, the n-grams on the
segments of the same unpacked rows; both report the summed nll of the same tokens.
"""

import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from transformer.data import pipeline
from transformer.data.config import source_kind
from transformer.data.segments import segments, split_segments
from transformer.models.ngram import NGramModel, ngram_keys
from transformer.training import checkpoints, comparison_report, integrity, loop, writer
from transformer.training.assembly import PrintFn, assemble
from transformer.training.config import ConfigError

RECORD_FILE = "comparison.json"
CONFIG_FILE = "comparison_config.json"
TRAIN_TOKENS_FILE = "train_tokens.json"
TABLE_FILE, PLOT_FILE = "comparison.md", "comparison.png"


def checked_runs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Each network's run config (`run_configs`), after ConfigError (one line, naming the field)
  for a comparison that cannot run as one table."""
  for name in ("run", "models", "ngram_orders"):
    if name not in config:
      raise ConfigError(f"config.{name} is missing (see experiments/compare_lms.py)")
  if config.run.data.task != "lm":
    raise ConfigError(f"config.run.data.task must be 'lm' (one causal LM task for every model), "
                      f"got {config.run.data.task!r}")
  if config.run.eval_steps != 0:
    raise ConfigError(f"config.run.eval_steps must be 0 (every model on the whole validation "
                      f"split), got {config.run.eval_steps!r}")
  if not config.models:
    raise ConfigError("config.models must name at least one network")
  orders = tuple(config.ngram_orders)
  vocab = config.run.data.vocab_size
  for order in orders:
    if not isinstance(order, int) or order < 1 or vocab ** order >= 2 ** 63:
      raise ConfigError(f"config.ngram_orders must hold ints >= 1 with vocab_size ** order in "
                        f"int64 (vocab_size {vocab}), got {orders!r}")
  return run_configs(config)


def run_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Each network's run config: `config.run` with its model fields; ConfigError names a bad one."""
  out = {}
  for name, fields in config.models.items():
    run = ml_collections.ConfigDict(config.run.to_dict())
    unknown = sorted(set(fields) - set(run.model))
    if unknown:
      raise ConfigError(f"config.models.{name}.{unknown[0]} is not a model field "
                        f"(docs/config.md, 'model')")
    run.model.update(num_encoder_layers=0, **fields)
    try:
      assemble(run)  # (also: the 'lm' task takes a causal LM, no encoder)
    except ConfigError as e:
      raise ConfigError(f"config.models.{name}: {e}") from None
    out[name] = run
  return out


# ------------------------------------------------------------------------------ records

def _read(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _write(path: str, value: Any) -> None:
  """JSON to `path`, atomically (a killed run leaves the old file or none)."""
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def validation_facts(data: ml_collections.ConfigDict, tokenizer: Any,
                     batch_size: int) -> tuple[list[np.ndarray], dict[str, int]]:
  """The validation segments (the trainer's eval rows) and {'tokens', 'bytes'} of the split
  (bytes: UTF-8 bytes of every record's original text)."""
  scored = split_segments(data, "validation", batch_size, 0, tokenizer)
  _, features = source_kind(data)
  num_bytes = sum(len(text.encode("utf-8")) for record in pipeline.open_source(data, "validation")
                  for text in pipeline.record_texts(record, features))
  return scored, {"tokens": int(sum(len(s) for s in scored)), "bytes": int(num_bytes)}


def training_segments(run: ml_collections.ConfigDict, tokenizer: Any
                      ) -> tuple[list[np.ndarray], list[int]]:
  """The target segments of the batches a network of `run` trains on, and the training tokens
  seen after each step ([num_train_steps + 1], starting at 0)."""
  data: Iterator[Mapping[str, np.ndarray]] = loop.make_data(run, "train", tokenizer, train=True)
  out, seen = [], [0]
  for _ in range(run.num_train_steps):
    batch = list(segments([next(data)]))
    out += batch
    seen.append(seen[-1] + int(sum(len(s) for s in batch)))
  return out, seen


def fit_ngram(order: int, train: list[np.ndarray], scored: list[np.ndarray],
              vocab_size: int) -> dict[str, Any]:
  """The n-gram record: fitted on `train`, its summed nll over `scored`, and `seen`: the
  fraction of scored tokens whose whole n-gram (BOS-padded) occurs in `train`."""
  start = time.perf_counter()
  model = NGramModel.fit(train, order, vocab_size)
  nll, tokens = model.nll(scored)
  wall = time.perf_counter() - start
  keys = np.concatenate([ngram_keys(s, order, vocab_size) for s in scored])
  seen = np.isin(keys, model.levels[-1].keys)
  return {"model": f"Kneser-Ney {order}-gram",
          "params": sum(len(level.keys) for level in model.levels),
          "train_tokens": int(sum(len(s) for s in train)), "train_flops": None,
          "wall_seconds": wall, "nll": nll, "tokens": tokens, "seen": float(np.mean(seen))}


def train_network(name: str, run: ml_collections.ConfigDict, workdir: str,
                  print_fn: PrintFn) -> dict[str, Any]:
  """Trains (or resumes) one network in `workdir` and returns its record.

  wall_seconds: the trainer's whole run (compiling, training, the whole-split evals) when this
  call trained it from step 0; None when it only resumed it or found it finished.
  """
  saved = integrity.steps(checkpoints.checkpoint_dir(workdir))
  print_fn(f"=== {name}: {workdir}")
  start = time.perf_counter()
  metrics = loop.run(run, workdir, print_fn=print_fn)
  parts = assemble(run)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(parts.abstract_state().params))
  return {"model": name, "params": params, "train_flops": parts.flops_per_step() *
          run.num_train_steps, "wall_seconds": None if saved else time.perf_counter() - start,
          "nll": metrics["nll"] * metrics["tokens"], "tokens": int(metrics["tokens"])}


def eval_curve(workdir: str, seen: list[int]) -> list[tuple[int, float]]:
  """[(training tokens, validation nll per token)] of a network's eval records."""
  return [(seen[r["step"]], r["nll"]) for r in writer.read_jsonl(workdir) if r["split"] == "eval"]


def check_same_comparison(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the config to `workdir/CONFIG_FILE` the first time; ConfigError if the workdir holds
  a comparison of another config (its records would not be of this budget)."""
  path = os.path.join(workdir, CONFIG_FILE)
  text = config.to_json(sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) != json.loads(text):
        raise ConfigError(f"--workdir={workdir!r} holds a comparison of another config "
                          f"({path}): use a new workdir")
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


# ------------------------------------------------------------------------------ the comparison

def compare(config: ml_collections.ConfigDict, workdir: str, *,
            print_fn: PrintFn = loop.print_flush) -> list[dict[str, Any]]:
  """Runs the comparison of the module docstring in `workdir`; returns the table's rows."""
  runs = checked_runs(config)
  first = next(iter(runs.values()))
  check_same_comparison(config, workdir)
  load = os.getloadavg()
  with loop.phase(print_fn, "the tokenizer (trained on first use) and the validation split"):
    tokenizer = pipeline.load_tokenizer_for(first.data, workdir)
    scored, validation = validation_facts(first.data, tokenizer, first.global_batch_size)
  ngram_paths = {order: os.path.join(workdir, f"ngram_{order}.json")
                 for order in config.ngram_orders}
  seen_path = os.path.join(workdir, TRAIN_TOKENS_FILE)
  if not all(os.path.exists(p) for p in [seen_path, *ngram_paths.values()]):
    with loop.phase(print_fn, f"the training tokens of {first.num_train_steps} steps"):
      train, seen = training_segments(first, tokenizer)
    for order, path in ngram_paths.items():
      if not os.path.exists(path):
        with loop.phase(print_fn, f"Kneser-Ney {order}-gram"):
          _write(path, fit_ngram(order, train, scored, tokenizer.vocab_size))
    _write(seen_path, seen)
  seen = _read(seen_path)
  rows, curves = [], {}
  for name, run in runs.items():
    sub = os.path.join(workdir, name)
    record_path = os.path.join(sub, RECORD_FILE)
    if not os.path.exists(record_path):
      os.makedirs(sub, exist_ok=True)
      if not os.path.exists(checkpoints.tokenizer_path(sub)):
        shutil.copyfile(checkpoints.tokenizer_path(workdir), checkpoints.tokenizer_path(sub))
      _write(record_path, {**train_network(name, run, sub, print_fn), "train_tokens": seen[-1]})
    rows.append(_read(record_path))
    curves[name] = eval_curve(sub, seen)
    if rows[-1]["tokens"] != validation["tokens"]:
      raise RuntimeError(f"{name} was scored on {rows[-1]['tokens']} validation tokens, the "
                         f"n-grams on {validation['tokens']}: not the same rows")
  ngrams = [_read(path) for path in ngram_paths.values()]
  rows += ngrams
  table = comparison_report.markdown_table(rows, validation)
  table += (f"This invocation: 1-minute load average {load[0]:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} cores).\n")
  with open(os.path.join(workdir, TABLE_FILE), "w") as f:
    f.write(table)
  comparison_report.plot(curves, {r["model"]: r["nll"] / r["tokens"] for r in ngrams},
                         os.path.join(workdir, PLOT_FILE))
  print_fn(table)
  print_fn(f"table: {os.path.join(workdir, TABLE_FILE)}, plot: {os.path.join(workdir, PLOT_FILE)}")
  return rows
