"""Input-pipeline throughput: the project's grain pipeline alone, no model; prints one JSON object.

  python -m benchmarks.input_pipeline       # ~10 s on 2 CPU cores (1st run: + ~50 s of setup)
  python -m benchmarks.input_pipeline --num_workers=2       # grain worker processes

The training data of experiments/quickstart.py (`stdlib_corpus/summarize`, seq2seq: a
function's code to its docstring's first sentence, packed rows) at the reference lengths of
benchmarks/train_throughput.py: inputs and targets of 128 tokens, global batch 16, a
SentencePiece vocabulary of 8192. The setup is timed in parts: preparing the embedded corpus in
--data_dir (seconds once, then found), training the tokenizer in --workdir (on the first run,
then loaded), building the iterator, its first batch. Then --warmup batches, and --batches
timed ones: rows/s, examples/s (packed segments), target tokens/s (every target slot of a
batch, what a train step consumes, and the non-padding ones), non-padding input tokens/s, and
the batches delivered in the time of one reference train step (--train_step_s).

It imports grain, tensorflow_datasets and SentencePiece, which are what it measures: the one
benchmark exempt from tests/benchmarks/test_imports.py.
"""

import itertools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import app, flags

from experiments import quickstart
from transformer.data import pipeline

_LENGTH = flags.DEFINE_integer("length", 128, "Input and target tokens per row.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Rows per batch (global batch, one process).")
_VOCAB = flags.DEFINE_integer("vocab_size", 8192, "SentencePiece vocabulary size.")
_WORKERS = flags.DEFINE_integer("num_workers", 0,
                                "grain worker processes (data.num_workers; 0: in this process).")
_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed batches after the first.")
_TRAIN_STEP_S = flags.DEFINE_float(
    "train_step_s", 2.0, "Seconds of the reference train step that consumes one batch "
    "(benchmarks/train_throughput.py on 2 CPU cores).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir of the corpus ('': TFDS default).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/input_pipeline_benchmark",
                               "Where the tokenizer is trained on the first run and reused.")


def data_config() -> ml_collections.ConfigDict:
  """The quickstart's data section at the flags' lengths, vocabulary, data dir and workers."""
  data = quickstart.get_config().data
  data.update(seq_len=_LENGTH.value, targets_len=_LENGTH.value, vocab_size=_VOCAB.value,
              data_dir=_DATA_DIR.value, num_workers=_WORKERS.value)
  return data


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  """(fn(), its wall seconds)."""
  start = time.perf_counter()
  result = fn()
  return result, round(time.perf_counter() - start, 3)


def main(argv: list[str]) -> None:
  del argv
  cfg = data_config()
  tokenizer_path = os.path.join(_WORKDIR.value, f"summarize_{_VOCAB.value}.model")
  tokenizer_found = os.path.exists(tokenizer_path)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  corpus_found = pipeline.source_is_prepared(cfg)
  _, corpus_s = timed(lambda: pipeline.prepare_source(cfg))
  tokenizer, tokenizer_s = timed(lambda: pipeline.load_tokenizer_for(cfg, tokenizer_path))
  it, build_s = timed(lambda: pipeline.make_dataset(
      cfg, "train", global_batch_size=_BATCH.value, seed=0, train=True, process_index=0,
      process_count=1, tokenizer=tokenizer))
  _, first_batch_s = timed(lambda: next(it))
  for _ in itertools.islice(it, _WARMUP.value):
    pass
  stats, seconds = timed(lambda: pipeline.packing_stats(it, _BATCHES.value))
  rows_per_s = stats["rows"] / seconds
  slots_per_s = rows_per_s * _LENGTH.value
  print(json.dumps({
      "data": cfg.name, "task": cfg.task, "length": _LENGTH.value, "batch_size": _BATCH.value,
      "vocab_size": tokenizer.vocab_size, "num_workers": _WORKERS.value,
      "setup_s": {"corpus": corpus_s, "corpus_found": corpus_found,
                  "tokenizer": tokenizer_s, "tokenizer_found": tokenizer_found,
                  "iterator": build_s, "first_batch": first_batch_s},
      "batches": _BATCHES.value, "seconds": round(seconds, 3),
      "batches_per_s": round(rows_per_s / _BATCH.value, 2),
      "rows_per_s": round(rows_per_s, 1),
      "examples_per_s": round(rows_per_s * stats["targets_segmentation_per_row"], 1),
      "target_slots_per_s": round(slots_per_s, 1),
      "target_tokens_per_s": round(slots_per_s * stats["targets_segmentation_non_pad_fraction"],
                                   1),
      "input_tokens_per_s": round(slots_per_s * stats["inputs_segmentation_non_pad_fraction"], 1),
      "packing": stats,
      "batches_per_train_step": round(rows_per_s / _BATCH.value * _TRAIN_STEP_S.value, 2),
  }), flush=True)


if __name__ == "__main__":
  app.run(main)
