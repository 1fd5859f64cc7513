r"""grain input pipeline: source -> tokenize -> task -> pack (train) or pad (eval) -> batch per
process.

The trainer calls two functions:

    tokenizer = load_tokenizer_for(data_cfg, workdir)      # trains on first use, then reuses
    it = make_dataset(data_cfg, "train", global_batch_size=64, seed=0, train=True,
                      process_index=jax.process_index(), process_count=jax.process_count(),
                      tokenizer=tokenizer)
    batch = next(it)          # dict of numpy arrays [global_batch_size / process_count, L]
    state = it.get_state()    # JSON-able; it.set_state(state) resumes exactly there

`it` is a grain `DatasetIterator`: Orbax saves and restores it with
`grain.python.PyGrainCheckpointSave(it)` / `...PyGrainCheckpointRestore(it)`.

Batch keys by task (int32 unless noted; segmentation 1.. per packed segment and
0 on padding; positions restart at 0 in each segment):
- lm:              targets, targets_segmentation, targets_position
- prefix_lm:       the lm keys + targets_weights (float32: 1 on target and EOS)
- seq2seq, span_corruption: inputs, targets, {inputs,targets}_{segmentation,position}
- preference:      chosen, rejected, chosen_weights, rejected_weights (float32); never packed
Training batches are packed (if `pack`) and endless (shuffled anew each epoch);
eval batches are padded (segmentation 1 on tokens, positions arange), one pass,
the last batch filled up with all-padding rows. Training records are sharded over
processes; for eval every process reads the whole split in order and keeps its rows
of each global batch, so all processes run the same number of eval batches (their
collectives stay in step) and together see exactly the one-process batches.

Over-long examples (longer than the configured lengths after tokenization and
EOS; lm documents are cut into chunks and never are) are skipped and counted
in the log. Span-corruption chunks under 2 tokens are dropped.

Statistics (packing efficiency) of a config:

    python -m transformer.data.pipeline --workdir=/tmp/data_stats --data.data_dir=/tmp/tfds \
        --data.seq_len=256
"""


import functools
import glob
import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags, logging

from transformer import cli
from transformer.data import tasks
from transformer.data import tokenizer as tokenizer_lib
from transformer.data.builders import catalog, local_files, stdlib_corpus
from transformer.data.config import (
  default_data_config,
  field_error,
  source_kind,
  task_lengths,
  validate_data_config,
)


def _stdlib_config(cfg: ml_collections.ConfigDict) -> str | stdlib_corpus.StdlibCorpusConfig:
  """The embedded corpus's builder config of a data config (a name, or a package slice)."""
  content = cfg.name.partition("/")[2]
  packages = tuple(cfg.stdlib_packages)
  return content if not packages else stdlib_corpus.StdlibCorpusConfig(
      name=f"{content}_{'_'.join(sorted(packages))}", content=content, packages=packages,
      description=f"{content} of the packages {packages}")


def source_is_prepared(cfg: ml_collections.ConfigDict) -> bool:
  """False only for an embedded corpus not yet built in `data_dir` (`prepare_source` builds it);
  the other sources are read as they are."""
  if cfg.source != "stdlib":
    return True
  return stdlib_corpus.StdlibCorpus(config=_stdlib_config(cfg), data_dir=cfg.data_dir or None,
                                    file_format="array_record").is_prepared()


def prepare_source(cfg: ml_collections.ConfigDict) -> None:
  """Builds the embedded corpus of `cfg` in its `data_dir` if needed (what `open_source` does on
  first use), so that the caller can time it."""
  if cfg.source == "stdlib":
    stdlib_corpus.prepare(_stdlib_config(cfg), cfg.data_dir or None)


def open_source(cfg: ml_collections.ConfigDict, split: str) -> Sequence[Mapping[str, Any]]:
  """The random-access records of `split` (stdlib corpus prepared on first use)."""
  data_dir = cfg.data_dir or None
  if cfg.source == "stdlib":
    return stdlib_corpus.prepare(_stdlib_config(cfg), data_dir).as_data_source(split)
  if cfg.source == "tfds":
    return catalog.catalog_source(cfg.name, split, data_dir)
  return local_files.read_records(cfg.file_pattern.replace("{split}", split),
                                  tasks.get_task(cfg.task).kind)


def check_data(cfg: ml_collections.ConfigDict, splits: Mapping[str, str], prefix: str = "") -> None:
  """ValueError (one line, naming the field) unless the data of each split can be read: done
  before a tokenizer trains or anything compiles.

  Checks the data config, that `data_dir` can be a directory (written: the stdlib corpus is
  prepared there), that each split exists (stdlib: its splits; files: a file matches; TFDS:
  prepared) and holds examples (files: not all empty; the rows parse).

  Args:
    cfg: the data config.
    splits: split name -> where the caller's split comes from, e.g. {'validation':
      'config.eval_split'}, for the message.
    prefix: how the caller spells the data section's fields, e.g. 'config.' or '--'.
  """
  try:
    validate_data_config(cfg)
  except ValueError as e:
    raise ValueError(f"{prefix}{e}") from None
  if cfg.data_dir:
    problem = cli.output_dir_problem(cfg.data_dir)
    if problem and (cfg.source == "stdlib" or not os.path.isdir(cfg.data_dir)):
      raise ValueError(f"{prefix}data.data_dir={cfg.data_dir!r} {problem}")
  for split, origin in splits.items():
    if cfg.source == "stdlib":
      if split not in stdlib_corpus.SPLITS:
        raise ValueError(f"{origin}={split!r}: {cfg.name} has no such split "
                         f"(its splits: {', '.join(stdlib_corpus.SPLITS)})")
      continue  # the embedded corpus: every split has examples
    if cfg.source == "files":
      pattern = cfg.file_pattern.replace("{split}", split)
      if not any(os.path.isfile(p) for p in glob.glob(pattern, recursive=True)):
        raise ValueError(f"{prefix}data.file_pattern: no file of split {split!r} ({origin}) "
                         f"matches {pattern!r}")
    try:
      source = open_source(cfg, split)
    except ValueError as e:
      raise ValueError(f"{prefix}data.{e} (split {split!r}: {origin})") from None
    if len(source) == 0:  # pylint: disable=g-explicit-length-test
      raise ValueError(f"{prefix}data.name/file_pattern: split {split!r} ({origin}) of "
                       f"{cfg.name or cfg.file_pattern!r} has no examples")


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_texts(record: Mapping[str, Any], features: Sequence[str]) -> list[str]:
  """The field texts of one record, in the kind's field order."""
  return [_text(record[f]) for f in features]


def load_tokenizer_for(cfg: ml_collections.ConfigDict,
                       workdir_or_path: str) -> tokenizer_lib.Tokenizer:
  """The SentencePiece model at `<dir>/spm.model` (or the given `.model` path); trained on first
  use.

  Training reads at most `spm_input_sentence_size` non-blank lines of the
  train split. A stored model whose vocabulary size differs from
  `vocab_size` is rejected (ValueError).
  """
  validate_data_config(cfg)
  path = (workdir_or_path if workdir_or_path.endswith(".model")
          else os.path.join(workdir_or_path, tokenizer_lib.TOKENIZER_FILE))
  if os.path.exists(path):
    tok = tokenizer_lib.load_tokenizer(path)
    if tok.vocab_size != cfg.vocab_size:
      raise field_error("vocab_size", cfg.vocab_size,
                        f"{tok.vocab_size}, the size of the stored model {path}")
    return tok
  _, features = source_kind(cfg)
  lines = (
      line
      for record in open_source(cfg, "train")
      for text in record_texts(record, features)
      for line in text.splitlines()
      if line.strip()
  )
  tok = tokenizer_lib.train_tokenizer(
      itertools.islice(lines, cfg.spm_input_sentence_size), vocab_size=cfg.vocab_size,
      model_type=cfg.spm_model_type, byte_fallback=cfg.spm_byte_fallback,
      character_coverage=cfg.spm_character_coverage, num_sentinels=cfg.num_sentinels,
      input_sentence_size=cfg.spm_input_sentence_size,
  )
  tokenizer_lib.save_tokenizer(tok, path)
  logging.info("trained SentencePiece (%d pieces) on %s and saved it to %s", tok.vocab_size,
               cfg.name, path)
  return tok


class _Tokenize(grain.transforms.Map):
  """Record -> tuple of int32 token arrays, one per field."""

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer, features: Sequence[str]):
    self._tokenizer = tokenizer
    self._features = tuple(features)

  def map(self, record: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    return tuple(self._tokenizer.encode(t) for t in record_texts(record, self._features))


class _FlatMap(grain.experimental.FlatMapTransform):
  """Grain wrapper of a pure one-to-many task function."""

  max_fan_out = 1 << 20

  def __init__(self, fn):
    self._fn = fn

  def flat_map(self, element):
    return self._fn(element)


class _SkipOverlong(grain.transforms.Filter):
  """Keeps examples that fit the task lengths; logs the running count of skipped ones
  (rate-limited)."""

  def __init__(self, max_lengths: Mapping[str, int], where: str):
    self._max_lengths = dict(max_lengths)
    self._where = where
    self._skipped = 0
    self._logged_at = 0.0

  def filter(self, example: Mapping[str, np.ndarray]) -> bool:
    if tasks.fits(example, self._max_lengths):
      return True
    self._skipped += 1
    now = time.monotonic()
    if self._skipped == 1 or now - self._logged_at >= 60:  # the first skip, then a line a minute
      self._logged_at = now
      logging.warning("%s: skipped %d over-long examples so far (lengths %s > %s)", self._where,
                      self._skipped, tasks.lengths_of(example), self._max_lengths)
    return False


def _task_examples(fields: tuple[np.ndarray, ...], rng: np.random.Generator | None, *, task: str,
                   cfg: ml_collections.ConfigDict) -> list[dict[str, np.ndarray]]:
  """One record's token arrays -> its unpadded examples (`tasks.TASKS[task].examples`)."""
  return tasks.TASKS[task].examples(fields, rng, cfg)


def _identity(element: Any) -> Any:
  return element


def _apply_task(ds: grain.IterDataset, cfg: ml_collections.ConfigDict) -> grain.IterDataset:
  """Token arrays per record -> unpadded task examples (module-level functions: picklable for
  workers)."""
  task = tasks.get_task(cfg.task)
  examples = functools.partial(_task_examples, task=task.name, cfg=cfg)
  ds = ds.random_map(examples) if task.random else ds.map(functools.partial(examples, rng=None))
  return grain.experimental.FlatMapIterDataset(ds, _FlatMap(_identity))


def _packed_features(example: Mapping[str, np.ndarray],
                     lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
  """grain packing output -> contract names (`k_segmentation`, `k_position`), weights without
  extras."""
  out = {}
  for key in lengths:
    out[key] = example[key]
    if not key.endswith("_weights"):
      out[f"{key}_segmentation"] = example[f"{key}_segment_ids"]
      out[f"{key}_position"] = example[f"{key}_positions"]
  return out


def _fill_rows(batch: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
  """Casts (ids int32, weights float32) and fills the batch up to `rows` rows of padding
  (positions arange)."""
  out = {}
  for key, value in batch.items():
    value = value.astype(np.float32 if key.endswith("_weights") else np.int32)
    filler = np.zeros((rows - len(value),) + value.shape[1:], value.dtype)
    if key.endswith("_position"):
      filler[:] = np.arange(value.shape[1])
    out[key] = np.concatenate([value, filler])
  return out


def _process_rows(batch: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
  """Rows start:stop of every array of a global batch: one process's block."""
  return {key: value[start:stop] for key, value in batch.items()}


def make_dataset(
    cfg: ml_collections.ConfigDict,
    split: str,
    *,
    global_batch_size: int,
    seed: int,
    train: bool,
    process_index: int,
    process_count: int,
    tokenizer: tokenizer_lib.Tokenizer,
) -> grain.DatasetIterator:
  """A checkpointable iterator of this process's batches, each
  [global_batch_size / process_count, L].

  train=True: records sharded by process, shuffled with `seed` anew each epoch,
  repeated forever, packed if `cfg.pack`. train=False: one pass in order,
  padded, last batch filled with padding rows; every process reads all records
  and yields rows [i · B/n, (i + 1) · B/n) of each global batch of B rows, so every
  process yields the same number of batches whatever the over-long filter drops; the
  preference pairs are then each record's first K - 1 (`data.rejected_pool` draws in training
  only).
  """
  validate_data_config(cfg)
  if not train and cfg.rejected_pool:  # evaluation compares the same pairs: the first K - 1
    cfg = cfg.copy_and_resolve_references()
    cfg.rejected_pool = 0
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise field_error("global_batch_size", global_batch_size,
                      f"a positive multiple of process_count={process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index: got {process_index}, expected 0 <= index < "
                     f"process_count={process_count}")
  if cfg.task == "span_corruption" and tokenizer.num_sentinels < cfg.num_sentinels:
    raise field_error("num_sentinels", cfg.num_sentinels,
                      f"<= {tokenizer.num_sentinels}, the tokenizer's")
  batch_size = global_batch_size // process_count
  lengths = task_lengths(cfg)
  _, features = source_kind(cfg)
  source = open_source(cfg, split)
  if len(source) == 0:  # pylint: disable=g-explicit-length-test
    raise ValueError(f"data.name/file_pattern: split {split!r} of "
                     f"{cfg.name or cfg.file_pattern!r} has no examples")

  ds = grain.MapDataset.source(source)
  if train:
    ds = ds[process_index::process_count].shuffle(seed=seed).repeat(None)
  ds = ds.map(_Tokenize(tokenizer, features)).to_iter_dataset()
  ds = _apply_task(ds.seed(seed), cfg)
  ds = ds.filter(_SkipOverlong(lengths, f"{cfg.name or cfg.file_pattern} {split}"))
  packable = tasks.get_task(cfg.task).packable
  if train and cfg.pack and packable:
    ds = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, num_packing_bins=cfg.packing_bins or 4 * batch_size, seed=seed)
    ds = ds.map(functools.partial(_packed_features, lengths=lengths))
  else:
    ds = ds.map(functools.partial(
        tasks.pad_example, max_lengths=lengths, with_segmentation=packable))
  rows = batch_size if train else global_batch_size
  ds = ds.batch(rows, drop_remainder=train)
  ds = ds.map(functools.partial(_fill_rows, rows=rows))
  if not train:
    ds = ds.map(functools.partial(_process_rows, start=process_index * batch_size,
                                  stop=(process_index + 1) * batch_size))
  if cfg.num_workers:
    # grain's workers read absl flags; outside `app.run` use defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
  return iter(ds)


def packing_stats(batches: Iterator[Mapping[str, np.ndarray]],
                  num_batches: int) -> dict[str, float]:
  """Non-padding fraction and segments per row of each `*_segmentation` feature over
  `num_batches` batches."""
  tokens, cells, segments, rows = {}, {}, {}, 0
  for batch in itertools.islice(batches, num_batches):
    for key, seg in batch.items():
      if key.endswith("_segmentation"):
        tokens[key] = tokens.get(key, 0) + int((seg > 0).sum())
        cells[key] = cells.get(key, 0) + seg.size
        segments[key] = segments.get(key, 0) + int(seg.max(axis=1).sum())
    rows += len(next(iter(batch.values())))
  return {
      **{f"{k}_non_pad_fraction": round(tokens[k] / cells[k], 4) for k in tokens},
      **{f"{k}_per_row": round(segments[k] / rows, 2) for k in tokens},
      "rows": rows,
  }


def main(argv: Sequence[str]) -> None:
  """Prints packing statistics (JSON) of the --data config on its train split; bad flags,
  paths and data are one line on stderr, exit status 2, before the tokenizer trains."""
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  cfg = flags.FLAGS.data
  for name in ("batch_size", "num_batches"):
    if flags.FLAGS[name].value < 1:
      raise ValueError(f"--{name} must be >= 1, got {flags.FLAGS[name].value}")
  cli.check_output_dir(flags.FLAGS.workdir, "--workdir")
  check_data(cfg, {"train": "the split measured"}, prefix="--")
  tok = load_tokenizer_for(cfg, flags.FLAGS.workdir)
  it = make_dataset(cfg, "train", global_batch_size=flags.FLAGS.batch_size, seed=0, train=True,
                    process_index=0, process_count=1, tokenizer=tok)
  print(json.dumps({"name": cfg.name, "task": cfg.task, "seq_len": cfg.seq_len, "pack": cfg.pack,
                    **packing_stats(it, flags.FLAGS.num_batches)}))


if __name__ == "__main__":
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_dict("data", default_data_config(),
                                  "Data config; override fields with --data.x=y.")
  flags.DEFINE_string("workdir", "/tmp/transformer_data",
                      "Where spm.model is trained on first use and reused.")
  flags.DEFINE_integer("batch_size", 64, "Global batch size.")
  flags.DEFINE_integer("num_batches", 100, "Batches to measure.")
  cli.run(main)
