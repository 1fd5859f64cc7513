"""The run config: every field with its default and one line of documentation, and its validation.

Experiment files (`experiments/*.py`) start from `default_config()` and change what they
need; `validate` rejects anything else before a model is built or a step compiled, with
a one-line `ConfigError` naming the field. The model section holds the `ModelConfig`
fields except `vocab_size`, which is the data section's (one source of truth), and the
train/eval/decode switches, which the loop sets.
"""

import dataclasses
from typing import Any

import ml_collections

from transformer.data import config as data_config
from transformer.models.config import ModelConfig
from transformer.models.registry import architecture
from transformer.training import stages

OPTIMIZERS = ("adam", "adamw", "sgd")
PARALLELISM_MODES = ("jit", "pmap")
SCHEDULES = ("paper", "cosine", "constant")
# ModelConfig fields that are not in the config's model section: the vocabulary size is the data
# section's, and the train / eval / decode switches are set by whoever builds the model.
RUN_SWITCHES = ("vocab_size", "deterministic", "decode")


class ConfigError(ValueError):
  """An invalid run config; the message is one line naming the offending field."""


def default_config() -> ml_collections.ConfigDict:
  """The schema of every run config, with defaults (a tiny causal LM on the embedded corpus)."""
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"             # 'pretrain' | 'finetune' | 'reward': which loss and metrics.
  c.seed = 0                       # Seeds parameter init, dropout and data order.
  c.data = data_config.default_data_config()  # The data section (see transformer/data/config.py).
  c.eval_split = "validation"      # Split used for evaluation.

  c.model = ml_collections.ConfigDict(model_section(ModelConfig()))
  c.model.update(architecture="decoder_only", d_model=64, num_heads=4, d_ff=256,
                 num_encoder_layers=0, num_decoder_layers=2,
                 max_len=256)      # ModelConfig fields (transformer/models/config.py).

  c.global_batch_size = 32         # Examples per optimizer step, summed over all devices and hosts.
  c.grad_accum_steps = 1           # Microbatches per step (global_batch_size must divide evenly).
  c.num_train_steps = 100          # Stop after this many optimizer steps.
  c.label_smoothing = 0.0          # ε of the smoothed target distribution (paper: 0.1).

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"        # 'adam' (paper) | 'adamw' (decoupled weight decay) | 'sgd'.
  c.optimizer.schedule = "paper"   # 'paper' (d_model^-0.5·min(s^-0.5, s·w^-1.5)) | 'cosine' |
                                   # 'constant'.
  c.optimizer.learning_rate = 1.0  # Multiplier of the paper schedule; peak rate for
                                   # cosine/constant.
  c.optimizer.warmup_steps = 4000  # Linear warmup steps (all schedules).
  c.optimizer.end_learning_rate_fraction = 0.1  # Cosine: final rate as a fraction of the peak.
  c.optimizer.b1 = 0.9             # Adam β1.
  c.optimizer.b2 = 0.98            # Adam β2 (paper: 0.98).
  c.optimizer.eps = 1e-9           # Adam ε (paper: 1e-9).
  c.optimizer.weight_decay = 0.0   # AdamW decoupled weight decay.
  c.optimizer.grad_clip_norm = 0.0 # Clip gradients to this global norm; 0 turns clipping off.

  c.parallelism = ml_collections.ConfigDict()
  c.parallelism.mode = "jit"       # 'jit' (a Mesh with named shardings) | 'pmap' (replicated
                                   # state, axis 'batch').
  c.parallelism.data = -1          # jit: mesh axis 'data' (splits the batch); -1 = the devices
                                   # fsdp × tensor leave.
  c.parallelism.fsdp = 1           # jit: mesh axis 'fsdp' (splits the batch, and params +
                                   # optimizer state on 'embed').
  c.parallelism.tensor = 1         # jit: mesh axis 'tensor' (splits params on 'heads', 'mlp',
                                   # 'vocab'; batch replicated).

  c.init_from = ""                 # Workdir of an earlier stage to take params from (if no own
                                   # checkpoint).
  c.log_every_steps = 10           # Progress line and train metrics every this many steps.
  c.eval_every_steps = 50          # Evaluate every this many steps (and at the last step).
  c.eval_steps = 8                 # Eval batches per evaluation; 0 = the whole split.
  c.checkpoint_every_steps = 50    # Save a checkpoint every this many steps (and at the last step).
  c.keep_checkpoints = 2           # Keep the latest this many checkpoints ...
  c.best_metric = "loss"           # ... plus the best by this eval metric ('' = latest only).
  c.best_mode = "min"              # 'min' | 'max': which direction of best_metric is better.
  c.async_checkpoints = True       # Write checkpoints in a background thread.
  c.num_samples = 3                # Decoded validation examples printed at the end (0 = none).
  c.bleu_eval_batches = 0          # Seq2seq fine-tuning: eval batches greedily decoded for BLEU
                                   # and exact match (0 = none).
  c.max_decode_length = 32         # Longest decoded sample, in tokens.
  c.peak_flops_per_device = 0.0    # Device peak FLOP/s for MFU; 0 = measure a matmul peak at start.
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (one line, naming the field) unless `config` fits the schema.

  Checks unknown fields, types (an int is accepted where a float is expected), the stage,
  choices, ranges and cross-field constraints. Runs in milliseconds and builds nothing.
  """
  _check_fields(config, default_config(), "config")
  _check_choice("config.stage", config.stage, tuple(stages.STAGES))
  _check_choice("config.optimizer.name", config.optimizer.name, OPTIMIZERS)
  _check_choice("config.optimizer.schedule", config.optimizer.schedule, SCHEDULES)
  _check_choice("config.best_mode", config.best_mode, ("min", "max"))
  _check_choice("config.parallelism.mode", config.parallelism.mode, PARALLELISM_MODES)
  if config.parallelism.data < 1 and config.parallelism.data != -1:
    raise ConfigError(f"config.parallelism.data must be >= 1 or -1 (all devices fsdp × tensor "
                      f"leave), got {config.parallelism.data!r}")
  for name in ("fsdp", "tensor"):
    if config.parallelism[name] < 1:
      raise ConfigError(f"config.parallelism.{name} must be >= 1, got {config.parallelism[name]!r}")
    if config.parallelism.mode == "pmap" and config.parallelism[name] != 1:
      raise ConfigError(f"config.parallelism.{name} must be 1 in pmap mode (pmap is data "
                        f"parallel only), got {config.parallelism[name]!r}")
  for name in ("global_batch_size", "grad_accum_steps", "num_train_steps", "log_every_steps",
               "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
               "max_decode_length"):
    if config[name] < 1:
      raise ConfigError(f"config.{name} must be >= 1, got {config[name]!r}")
  for name in ("eval_steps", "num_samples", "bleu_eval_batches"):
    if config[name] < 0:
      raise ConfigError(f"config.{name} must be >= 0, got {config[name]!r}")
  if config.bleu_eval_batches and config.data.task != "seq2seq":
    raise ConfigError(f"config.bleu_eval_batches needs config.data.task='seq2seq', "
                      f"got {config.data.task!r}")
  if config.global_batch_size % config.grad_accum_steps:
    raise ConfigError(f"config.global_batch_size ({config.global_batch_size}) must be divisible "
                      f"by config.grad_accum_steps ({config.grad_accum_steps})")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"config.label_smoothing must be in [0, 1), got {config.label_smoothing!r}")
  if config.optimizer.warmup_steps < 0 or (
      config.optimizer.schedule == "paper" and config.optimizer.warmup_steps < 1):
    raise ConfigError(f"config.optimizer.warmup_steps must be >= 1 for the paper schedule and "
                      f">= 0 otherwise, got {config.optimizer.warmup_steps!r}")
  if config.optimizer.grad_clip_norm < 0:
    raise ConfigError(f"config.optimizer.grad_clip_norm must be >= 0, "
                      f"got {config.optimizer.grad_clip_norm!r}")
  try:
    data_config.validate_data_config(config.data)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None
  problem = stages.get_stage(config.stage).check(config.data.task,
                                                 model_config(config).architecture)
  if problem:
    raise ConfigError(problem)


def model_section(cfg: ModelConfig) -> dict[str, Any]:
  """The fields of a ModelConfig that make up a run config's model section (no RUN_SWITCHES)."""
  return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
          if f.name not in RUN_SWITCHES}


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """The ModelConfig of a run config (training variant); ConfigError names a bad model field."""
  try:
    cfg = ModelConfig(vocab_size=config.data.vocab_size, **config.model.to_dict())
    architecture(cfg.architecture)  # a known architecture
    return cfg
  except ValueError as e:
    raise ConfigError(str(e).replace("ModelConfig.", "config.model.")
                      .replace("config.model.vocab_size", "config.data.vocab_size")) from None


def _check_fields(config: Any, schema: Any, path: str) -> None:
  """Recursively: every key of `config` is in `schema`, with a compatible type."""
  for key, value in config.items():
    name = f"{path}.{key}"
    if key not in schema:
      raise ConfigError(f"unknown config field {name}")
    expected = schema[key]
    if isinstance(expected, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f"{name} must be a section (ConfigDict), got {type(value).__name__}")
      _check_fields(value, expected, name)
    elif not _type_ok(value, expected):
      raise ConfigError(f"{name} must be of type {type(expected).__name__}, "
                        f"got {type(value).__name__} {value!r}")


def _type_ok(value: Any, expected: Any) -> bool:
  if expected is None or value is None:
    return True
  if isinstance(expected, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(expected, bool)
  if isinstance(expected, float):
    return isinstance(value, (int, float))
  if isinstance(expected, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(expected))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
