"""The language-model comparison: matched training tokens, the whole validation split, resume,
and one-line config errors (a tiny LSTM and two n-gram orders on the corpus slice)."""

import math
import os
import re
import shutil

import numpy as np
import pytest

from tests.training.conftest import cached_tokenizer, load_experiment
from transformer.data import pipeline
from transformer.models.ngram import NGramModel
from transformer.special_ids import BOS_ID, EOS_ID
from transformer.training import checkpoints, comparison, comparison_report, writer
from transformer.training.config import ConfigError


def tiny_comparison(data_dir: str, models=("lstm",), orders=(2, 3)):
  config = load_experiment("compare_lms", "tiny")
  config.run.data.data_dir = data_dir
  config.models = {name: config.models[name] for name in models}
  config.ngram_orders = orders
  return config


def packed_segments(batch) -> list[np.ndarray]:
  """Reference: each row cut where its segment id changes, padding (id 0) dropped."""
  out = []
  for row, ids in zip(batch["targets"], batch["targets_segmentation"]):
    cuts = np.flatnonzero(np.diff(ids)) + 1
    out += [piece for piece, pid in zip(np.split(row, cuts), np.split(ids, cuts)) if pid[0]]
  return out


def n_grams(sequences, order: int) -> list[tuple[int, ...]]:
  """Reference: every token's n-gram as a tuple, the sequence padded with order - 1 BOS."""
  out = []
  for sequence in sequences:
    padded = [BOS_ID] * (order - 1) + [int(t) for t in sequence]
    out += [tuple(padded[i:i + order]) for i in range(len(sequence))]
  return out


def test_matched_tokens_whole_validation_split_and_resume(data_dir, tokenizer_dir, tmp_path):
  config = tiny_comparison(data_dir)
  run = config.run
  workdir = str(tmp_path / "compare")
  os.makedirs(workdir)
  shutil.copyfile(cached_tokenizer(run, tokenizer_dir), checkpoints.tokenizer_path(workdir))
  lines = []
  rows = comparison.compare(config, workdir, print_fn=lines.append)
  assert [r["model"] for r in rows] == ["lstm", "Kneser-Ney 2-gram", "Kneser-Ney 3-gram"]

  # The networks' batches, read independently: every model counts exactly their tokens.
  tokenizer = pipeline.load_tokenizer_for(run.data, workdir)
  data = pipeline.make_dataset(run.data, "train", global_batch_size=run.global_batch_size,
                               seed=run.seed, train=True, process_index=0, process_count=1,
                               tokenizer=tokenizer)
  train = [s for _ in range(run.num_train_steps) for s in packed_segments(next(data))]
  assert {r["train_tokens"] for r in rows} == {sum(len(s) for s in train)}

  # The whole validation split, from the raw records: each document + EOS in chunks of seq_len,
  # each chunk predicted from BOS.
  records = list(pipeline.open_source(run.data, "validation"))
  chunks = [doc[i:i + run.data.seq_len] for doc in (
      np.append(tokenizer.encode(r["text"].decode() if isinstance(r["text"], bytes) else r["text"]),
                EOS_ID) for r in records) for i in range(0, len(doc), run.data.seq_len)]
  tokens = sum(len(c) for c in chunks)
  assert {r["tokens"] for r in rows} == {tokens}
  for order, row in zip((2, 3), rows[1:]):
    nll, _ = NGramModel.fit(train, order, tokenizer.vocab_size).nll(chunks)
    assert row["nll"] == pytest.approx(nll, rel=1e-9)
    trained = set(n_grams(train, order))
    assert row["seen"] == pytest.approx(np.mean([g in trained for g in n_grams(chunks, order)]))

  # The network's score is the trainer's last whole-split eval; its curve has every eval.
  evals = [r for r in writer.read_jsonl(os.path.join(workdir, "lstm")) if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [0, 2, 4]
  assert rows[0]["nll"] == pytest.approx(evals[-1]["nll"] * tokens, rel=1e-6)

  # Bits per byte of the table = log2(perplexity) * tokens / UTF-8 bytes of the split's text.
  num_bytes = sum(len(r["text"] if isinstance(r["text"], bytes) else r["text"].encode())
                  for r in records)
  with open(os.path.join(workdir, comparison.TABLE_FILE)) as f:
    table = f.read()
  for row in rows:
    ppl = comparison_report.perplexity(row["nll"], row["tokens"])
    assert f"| {ppl:.2f} | {math.log2(ppl) * tokens / num_bytes:.3f} |" in table
  assert f"{tokens:,} tokens, {num_bytes:,} bytes" in table
  assert os.path.getsize(os.path.join(workdir, comparison.PLOT_FILE)) > 1000

  # A rerun trains and fits nothing and gives the same rows.
  again = []
  assert comparison.compare(config, workdir, print_fn=again.append) == rows
  assert not any(line.startswith(("===", "Kneser-Ney", "the training tokens")) for line in again)
  config.ngram_orders = (2,)
  with pytest.raises(ConfigError, match="holds a comparison of another config"):
    comparison.compare(config, workdir, print_fn=again.append)


@pytest.mark.parametrize("field, value, words", [
    ("run.eval_steps", 3, "config.run.eval_steps must be 0"),
    ("run.data.task", "span_corruption", "config.run.data.task must be 'lm'"),
    ("ngram_orders", (2, 9), "config.ngram_orders must hold ints >= 1"),
    ("models", {}, "config.models must name at least one network"),
    ("models", {"paper": {"architecture": "encoder_decoder"}},
     "config.models.paper: data task 'lm' needs config.model.architecture='decoder_only'"),
    ("models", {"lstm": {"architecture": "lstm", "num_layers": 2}},
     "config.models.lstm.num_layers is not a model field"),
])
def test_bad_comparison_configs_name_the_field(data_dir, field, value, words):
  config = tiny_comparison(data_dir)
  *parents, name = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[name] = value
  with pytest.raises(ConfigError, match=re.escape(words)):
    comparison.checked_runs(config)
