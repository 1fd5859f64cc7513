r"""Fits the n-gram baseline on a data config's train split and prints validation perplexity (JSON).

  python -m transformer.ngram --order=3 --workdir=runs/baselines_lstm \
      --data.seq_len=128 --data.vocab_size=1000 --data.num_sentinels=0 \
      --data.spm_input_sentence_size=100000 --batch_size=32 --eval_batches=10

Tokens come from the project's pipeline (`pipeline.make_dataset`, task 'lm', unpacked rows):
the tokenizer at `<workdir>/spm.model` (a neural run's, so the ids are the same; trained
there on first use otherwise), every row of the train split to fit, and the first
`eval_batches` batches of `batch_size` rows of the validation split to score. With the
neural run's data config, batch size and eval_steps these are exactly the rows and target
tokens (each chunk predicted from BOS) behind its eval perplexity.

Bad flags, paths and data are one line on stderr, exit status 2, before the tokenizer trains
(`transformer.cli`).
"""

import json
import time
from collections.abc import Mapping, Sequence

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from transformer import cli
from transformer.data import config as data_config
from transformer.data import pipeline
from transformer.data.segments import split_segments
from transformer.models.ngram import NGramModel

_DATA = config_flags.DEFINE_config_dict("data", data_config.default_data_config(),
                                        "Data config; override fields with --data.x=y.")
_ORDER = flags.DEFINE_integer("order", 3, "n of the n-gram model.")
_DISCOUNT = flags.DEFINE_float("discount", None,
                               "Kneser-Ney discount for every order; default: Ney's estimate.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/transformer_ngram",
                               "Where spm.model is read (or trained on first use).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32,
                                   "Rows per validation batch (the neural run's "
                                   "global_batch_size).")
_EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 10,
                                     "Validation batches scored (the neural run's eval_steps); "
                                     "0 = all.")


def check_flags(data: Mapping) -> None:
  """UsageError or ValueError (one line, naming the flag) before the tokenizer trains."""
  if data.task != "lm":
    raise app.UsageError(f"--data.task must be 'lm' for the n-gram baseline, got {data.task!r}")
  if _ORDER.value < 1:
    raise app.UsageError(f"--order must be >= 1, got {_ORDER.value}")
  if _DISCOUNT.value is not None and not 0.0 < _DISCOUNT.value < 1.0:
    raise app.UsageError(f"--discount must be in (0, 1), got {_DISCOUNT.value}")
  if _BATCH_SIZE.value < 1:
    raise app.UsageError(f"--batch_size must be >= 1, got {_BATCH_SIZE.value}")
  if _EVAL_BATCHES.value < 0:
    raise app.UsageError(f"--eval_batches must be >= 0 (0 = all), got {_EVAL_BATCHES.value}")
  cli.check_output_dir(_WORKDIR.value, "--workdir")
  pipeline.check_data(data, {"train": "the split fitted", "validation": "the split scored"},
                      prefix="--")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data = _DATA.value
  check_flags(data)
  start = time.perf_counter()
  tokenizer = pipeline.load_tokenizer_for(data, _WORKDIR.value)
  train = split_segments(data, "train", 256, 0, tokenizer)
  evaluation = split_segments(data, "validation", _BATCH_SIZE.value, _EVAL_BATCHES.value, tokenizer)
  read = time.perf_counter()
  model = NGramModel.fit(train, _ORDER.value, tokenizer.vocab_size, _DISCOUNT.value)
  nll, tokens = model.nll(evaluation)
  print(json.dumps({
      "order": _ORDER.value, "discounts": [round(level.discount, 4) for level in model.levels],
      "train_tokens": int(sum(len(s) for s in train)), "eval_tokens": tokens,
      "nll": nll / tokens, "perplexity": float(np.exp(nll / tokens)),
      "data_seconds": round(read - start, 1),
      "fit_eval_seconds": round(time.perf_counter() - read, 1)}))


if __name__ == "__main__":
  cli.run(main)
