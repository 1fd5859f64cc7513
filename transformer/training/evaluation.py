"""Scoring a trained run on any split, for `python -m transformer.evaluate` (see its docstring).

    report = evaluate_run("runs/quickstart", "test", method="beam", beam_size=4, alpha=0.6)

The run's own assembly, eval step and tokenizer on its saved config (changed in memory only);
the report is written to DIR/eval/<split>-step<N>[-avg<K>].json. Examples longer than the run's
lengths are skipped, as in training (the pipeline's policy), so "the whole split" is every
example that fits. Seq2seq decoding and its metrics are `decoding.evaluation.evaluate_seq2seq`'s.
"""

import itertools
import json
import os
import time
from typing import Any

import jax
import ml_collections

from transformer.data import pipeline
from transformer.decoding.evaluation import evaluate_seq2seq
from transformer.training import averaging, checkpoints
from transformer.training.assembly import assemble
from transformer.training.config import default_config
from transformer.training.loop import evaluate_sums, make_data

EVAL_DIR = "eval"


def run_config(workdir: str, split: str,
               data_dir: str | None = None) -> ml_collections.ConfigDict:
  """The run's saved config for evaluating `split`: config.json over the schema's defaults
  (fields added since the run keep their defaults), the split and data dir set, and a
  data-parallel layout over this machine's devices; nothing is written."""
  saved = checkpoints.read_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"no {checkpoints.CONFIG_FILE} in {workdir}: not a training workdir")
  config = default_config()
  with config.unlocked():
    config.update(saved.to_dict())
  config.eval_split = split
  config.parallelism.update(mode="jit", data=-1, fsdp=1, tensor=1)
  if data_dir is not None:
    config.data.data_dir = data_dir
  return config


def output_path(workdir: str, split: str, steps: list[int]) -> str:
  """DIR/eval/<split>-step<last>[-avg<K>].json."""
  average = f"-avg{len(steps)}" if len(steps) > 1 else ""
  return os.path.join(workdir, EVAL_DIR, f"{split}-step{max(steps)}{average}.json")


def evaluate_run(workdir: str, split: str = "test", *, step: int | None = None,
                 average_last: int = 0, averaged: str | None = None, max_batches: int = 0,
                 decode: bool = True, method: str = "beam", beam_size: int = 4,
                 alpha: float = 0.6, temperature: float = 1.0, seed: int = 0,
                 max_new_tokens: int | None = None, data_dir: str | None = None,
                 output: str | None = None, print_fn=print) -> dict[str, Any]:
  """Evaluates the run in `workdir` on `split` (see the module docstring); writes the report to
  `output` (default `output_path`) and returns it."""
  config = run_config(workdir, split, data_dir)
  parts = assemble(config)
  tokenizer_file = checkpoints.tokenizer_path(workdir)
  if not os.path.exists(tokenizer_file):
    raise FileNotFoundError(f"no {os.path.basename(tokenizer_file)} in {workdir}")
  tokenizer = pipeline.load_tokenizer_for(config.data, tokenizer_file)
  params, steps = averaging.load_params(workdir, step=step, average_last=average_last,
                                        averaged=averaged)
  params = jax.device_put(params, parts.layout.state_sharding.params)
  frozen = {}
  if parts.layout.state_sharding.frozen:  # the stage's frozen params (dpo: its reference)
    frozen, _ = checkpoints.restore_raw_params(workdir, item="frozen", print_fn=print_fn)
    frozen = jax.device_put(frozen, parts.layout.state_sharding.frozen)
  batches = f"{max_batches} batches" if max_batches else "all batches"
  start = time.perf_counter()
  print_fn(f"scoring {split} ({batches}) with the params of step(s) {steps} ...")
  sums = evaluate_sums(parts, params, frozen, make_data(config, split, tokenizer, train=False),
                       max_batches)
  report: dict[str, Any] = {
      "workdir": os.path.abspath(workdir), "split": split, "step": max(steps), "steps": steps,
      "params": ("averaged " + averaged) if averaged else (
          f"mean of the last {len(steps)} checkpoints" if average_last else "checkpoint"),
      "stage": config.stage, "metrics": parts.stage.summarize(sums)}
  print_fn(f"scored in {time.perf_counter() - start:.1f}s: " + ", ".join(
      f"{k} {v:.4f}" for k, v in report["metrics"].items()))
  if decode and config.data.task == "seq2seq":
    settings = {"method": method,
                "max_new_tokens": max_new_tokens or config.max_decode_length}
    if method == "beam":
      settings.update(beam_size=beam_size, alpha=alpha)
    if method == "sample":
      settings.update(temperature=temperature, seed=seed)
    start = time.perf_counter()
    print_fn(f"decoding {split} ({batches}; {settings}) ...")
    data = make_data(config, split, tokenizer, train=False)
    scores = evaluate_seq2seq(
        parts.model_config.eval(), params, tokenizer,
        itertools.islice(data, max_batches) if max_batches else data,
        rng=jax.random.key(seed) if method == "sample" else None, **settings)
    print_fn(f"decoded {scores['examples']} examples in {time.perf_counter() - start:.1f}s: "
             f"sacreBLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}, "
             f"exact match {scores['exact_match']:.4f}")
    report["decoding"] = settings
    report.update({k: scores[k] for k in ("bleu", "bleu_signature", "chrf", "chrf_signature",
                                          "exact_match", "examples")})
    report["samples"] = [dict(zip(("input", "output", "reference"), s)) for s in scores["samples"]]
  path = output or output_path(workdir, split, steps)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(report, f, indent=2)
  os.replace(path + ".tmp", path)
  print_fn(f"wrote {path}")
  return report


