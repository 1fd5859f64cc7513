"""The data section of a run config: its fields with defaults and one line each, and validation.

Imports no I/O library (no grain, no tensorflow_datasets), so experiment files and config
checks load in milliseconds; `pipeline.py` reads the data a config describes.
"""

from typing import Any

import ml_collections

from transformer.data import tasks
from transformer.data import tokenizer as tokenizer_lib
from transformer.data.builders import catalog, local_files

SOURCES = ("stdlib", "tfds", "files")
# Builder configs of the embedded corpus: name -> (record kind, feature per field).
STDLIB_CONFIGS = {
    "text": ("documents", ("text",)),
    "summarize": ("pairs", ("input", "target")),
    "preferences": ("preferences", ("prompt", "chosen", "rejected")),
}
MAX_STDLIB_RESPONSES = 16  # the stdlib preferences hold the chosen summary and 15 rejected ones


def default_data_config() -> ml_collections.ConfigDict:
  """The data config with defaults; every field documented in one line."""
  c = ml_collections.ConfigDict()
  c.source = "stdlib"  # where examples come from: 'stdlib' (embedded corpus) | 'tfds' (catalog) |
                       # 'files' (glob)
  c.name = "stdlib_corpus/text"  # 'stdlib_corpus/<text|summarize|preferences>' or a catalog name,
                                 # e.g. 'lm1b'
  c.task = "lm"  # a task of `tasks.TASKS`: 'lm' | 'prefix_lm' | 'seq2seq' | 'span_corruption' |
                 # 'preference'
  c.seq_len = 256  # tokens per sequence: targets (lm, prefix_lm), inputs (seq2seq, span),
                   # chosen/rejected
  c.targets_len = 0  # targets length of seq2seq / span_corruption; 0 = seq_len (span: T5's derived
                     # length)
  c.pack = True  # pack several examples per row in training (segmentation/positions); eval is
                 # always padded
  c.packing_bins = 0  # rows packed at once (first fit); 0 = 4 x the per-process batch
  c.data_dir = ""  # TFDS data dir (stdlib corpus prepared here on first use); '' = TFDS default
  c.stdlib_packages = ()  # limit the stdlib corpus to these top-level packages (quick runs);
                          # () = all
  c.file_pattern = ""  # glob of local files (source 'files'); '{split}' is replaced by the split
                       # name
  c.vocab_size = 8000  # SentencePiece vocabulary size (incl. 4 special ids, sentinels and 256
                       # bytes)
  c.spm_model_type = "unigram"  # 'unigram' | 'bpe' | 'char' | 'word'
  c.spm_byte_fallback = True  # unknown characters become UTF-8 byte pieces (lossless)
  c.spm_character_coverage = 0.9995  # fraction of characters covered by pieces of their own
  c.spm_input_sentence_size = 1_000_000  # at most this many lines of the train split train
                                         # SentencePiece
  c.num_sentinels = 100  # span-corruption sentinels <extra_id_k>, ids 4 .. 4 + num_sentinels - 1
  c.noise_density = tasks.NOISE_DENSITY  # span corruption: fraction of tokens masked
  c.mean_span_length = tasks.MEAN_SPAN_LENGTH  # span corruption: mean masked span length
  c.num_responses = 2  # preference tasks: responses per prompt K (best first; stdlib: up to 16)
  c.rejected_pool = 0  # preference tasks, training: draw the K-1 rejected anew each epoch from
                       # the first rejected_pool (stdlib: up to 15); 0 = always the first K-1
  c.truncate_inputs = True  # cut over-long prompts/inputs to fit, keeping their start (False: skip)
  c.num_workers = 0  # grain worker processes per JAX process (0 = in the main process)
  return c


def field_error(field: str, value: Any, expected: str) -> ValueError:
  """ValueError 'data.<field>: got <value>, expected <expected>'."""
  return ValueError(f"data.{field}: got {value!r}, expected {expected}")


def source_kind(cfg: ml_collections.ConfigDict) -> tuple[str, tuple[str, ...]]:
  """(record kind, feature name per field) of the configured source."""
  if cfg.source == "stdlib":
    prefix, _, config = cfg.name.partition("/")
    if prefix != "stdlib_corpus" or config not in STDLIB_CONFIGS:
      raise field_error("name", cfg.name,
                        f"one of {[f'stdlib_corpus/{k}' for k in STDLIB_CONFIGS]}")
    kind, fields = STDLIB_CONFIGS[config]
    if kind == "preferences":  # the extra rejected summaries, for K > 2 or a pool
      fields += tuple(f"rejected_{k}" for k in range(2, max(cfg.num_responses,
                                                            cfg.rejected_pool + 1)))
    return kind, fields
  if cfg.source == "tfds":
    if cfg.name not in catalog.CATALOG:
      raise field_error("name", cfg.name, f"one of {sorted(catalog.CATALOG)}")
    entry = catalog.CATALOG[cfg.name]
    return entry.kind, entry.features
  kind = tasks.get_task(cfg.task).kind
  return kind, local_files.KIND_FIELDS[kind]


def validate_data_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first invalid field of a data config."""
  if cfg.source not in SOURCES:
    raise field_error("source", cfg.source, f"one of {SOURCES}")
  task = tasks.get_task(cfg.task)
  if cfg.source == "files" and not cfg.file_pattern:
    raise field_error("file_pattern", cfg.file_pattern, "a glob of local files for source 'files'")
  kind, _ = source_kind(cfg)
  if kind != task.kind:
    raise field_error("task", cfg.task,
                      f"a task for {kind} (source {cfg.source!r}, name {cfg.name!r}): "
                      f"{[t.name for t in tasks.TASKS.values() if t.kind == kind]}")
  if task.kind == "preferences":
    most = MAX_STDLIB_RESPONSES if cfg.source == "stdlib" else 2
    if not 2 <= cfg.num_responses <= most:
      raise field_error("num_responses", cfg.num_responses,
                        f"2 to {most} responses per prompt for source {cfg.source!r}")
    if cfg.rejected_pool and not cfg.num_responses - 1 <= cfg.rejected_pool <= most - 1:
      raise field_error("rejected_pool", cfg.rejected_pool,
                        f"0 or num_responses - 1 = {cfg.num_responses - 1} to {most - 1} "
                        f"rejected responses per prompt for source {cfg.source!r}")
  for field in ("seq_len", "vocab_size"):
    if cfg[field] <= 0:
      raise field_error(field, cfg[field], "a positive integer")
  for field in ("targets_len", "num_workers", "packing_bins", "num_sentinels"):
    if cfg[field] < 0:
      raise field_error(field, cfg[field], "a non-negative integer")
  if cfg.spm_model_type not in tokenizer_lib.MODEL_TYPES:
    raise field_error("spm_model_type", cfg.spm_model_type, f"one of {tokenizer_lib.MODEL_TYPES}")
  reserved = 4 + cfg.num_sentinels + (256 if cfg.spm_byte_fallback else 0)
  if cfg.vocab_size <= reserved:
    raise field_error("vocab_size", cfg.vocab_size, f"more than the {reserved} reserved pieces")
  if not 0.0 < cfg.noise_density < 1.0:
    raise field_error("noise_density", cfg.noise_density, "a fraction in (0, 1)")
  if cfg.mean_span_length < 1.0:
    raise field_error("mean_span_length", cfg.mean_span_length, ">= 1")
  if cfg.task == "span_corruption":
    raw, _ = tasks.span_corruption_lengths(cfg.seq_len, cfg.noise_density, cfg.mean_span_length)
    spans = max(1, round(round(raw * cfg.noise_density) / cfg.mean_span_length))
    if spans > cfg.num_sentinels:
      raise field_error("num_sentinels", cfg.num_sentinels,
                        f">= {spans} spans of a {raw}-token chunk")


def task_lengths(cfg: ml_collections.ConfigDict) -> dict[str, int]:
  """The fixed length of every feature of a batch row of the configured task."""
  return tasks.get_task(cfg.task).lengths(cfg)
