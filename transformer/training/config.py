"""The run config: every field with its default and one line of documentation, and its validation.

Experiment files (`experiments/*.py`) start from `default_config()` and change what they
need; `validate` rejects anything else before a model is built or a step compiled, with
a one-line `ConfigError` naming the field. The model section holds the `ModelConfig`
fields except `vocab_size`, which is the data section's (one source of truth), and the
train/eval/decode switches, which the loop sets.
"""

import collections
import dataclasses
from typing import Any

import ml_collections

from transformer.cli import ConfigError
from transformer.data import config as data_config
from transformer.data.tasks import get_task
from transformer.models.config import ModelConfig
from transformer.models.registry import architecture
from transformer.training import stages

OPTIMIZERS = ("adam", "adamw", "sgd")
DECODER_ONLY_PROMPT = 8  # tokens of a validation text that prompt a decoder-only model's samples
PARALLELISM_MODES = ("jit", "pmap")
SCHEDULES = ("paper", "cosine", "constant")
# ModelConfig fields that are not in the config's model section: the vocabulary size is the data
# section's, and the train / eval / decode switches are set by whoever builds the model.
RUN_SWITCHES = ("vocab_size", "deterministic", "decode")


def default_config() -> ml_collections.ConfigDict:
  """The schema of every run config, with defaults (a tiny causal LM on the embedded corpus)."""
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"             # 'pretrain' | 'finetune' | 'reward' | 'dpo' | 'policy':
                                   # which loss and metrics.
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
  c.optimizer.frozen_params = ""   # Comma-separated top-level param names (e.g.
                                   # 'token_embedding') kept as initialised or restored: no
                                   # update, no weight decay. '' = every param trains.

  c.parallelism = ml_collections.ConfigDict()
  c.parallelism.mode = "jit"       # 'jit' (a Mesh with named shardings) | 'pmap' (replicated
                                   # state, axis 'batch').
  c.parallelism.data = -1          # jit: mesh axis 'data' (splits the batch); -1 = the devices
                                   # fsdp × tensor leave.
  c.parallelism.fsdp = 1           # jit: mesh axis 'fsdp' (splits the batch, and params +
                                   # optimizer state on 'embed').
  c.parallelism.tensor = 1         # jit: mesh axis 'tensor' (splits params on 'heads', 'mlp',
                                   # 'vocab'; batch replicated).

  c.reward = ml_collections.ConfigDict()
  c.reward.pairing = "best_vs_rest"  # K-way pairs: 'best_vs_rest' (0 vs each) | 'all' (a ranking).
  c.reward.center_coef = 0.0       # Centering term coef * mean((r+ + r-)^2) (TRL: 1e-2); 0 = off.
  c.reward.margin_field = ""       # Batch feature of per-pair margins (Llama 2); '' = no margin.
  c.reward.dropout = False         # Keep the model's dropout in reward training (off by default).
  c.reward.bias_batches = 0        # Train batches scored for the bias (chosen mean 0); 0 = all.

  c.dpo = ml_collections.ConfigDict()
  c.dpo.beta = 0.1                 # DPO's β > 0: implicit reward β·log(π/π_ref) (paper: 0.1;
                                   # 0.5 for summaries).
  c.dpo.label_smoothing = 0.0      # Conservative DPO: assumed probability ε in [0, 0.5) that a
                                   # preference label is flipped; 0 = plain DPO.

  c.policy = ml_collections.ConfigDict()
  c.policy.algorithm = "rloo"      # 'rloo' (leave-one-out baseline, KL as reward shaping) |
                                   # 'grpo' (group mean/std, k3 KL in the loss).
  c.policy.samples_per_prompt = 4  # k >= 2 responses sampled per prompt (the group).
  c.policy.beta = 0.05             # KL coefficient β >= 0 (TRL RLOO 0.05; GRPO paper 0.04).
  c.policy.eos_penalty = 1.0       # Subtracted from the reward of a response without EOS (>= 0).
  c.policy.temperature = 1.0       # Sampling temperature > 0 (1: on-policy samples of π).
  c.policy.max_new_tokens = 32     # The response budget: new tokens sampled per response.
  c.policy.updates_per_batch = 1   # Optimizer updates on each batch of samples.
  c.policy.clip_epsilon = 0.2      # ε of the clipped ratio π/π_old (acts from the 2nd update).
  c.policy.reward_workdir = ""     # The reward run that scores the samples (its bias applied).

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
  c.skip_nonfinite_updates = False  # Skip a step with a non-finite loss or gradient (else stop).
  c.time_limit_seconds = 0.0       # Save and exit 0 after this long (a job's time limit); 0 = none.
  c.stop_check_every_steps = 10    # Multi-process: steps between agreeing on a stop (signal, time).
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
  _check_optimizer_ranges(config.optimizer)
  if not config.eval_split:
    raise ConfigError("config.eval_split must name a split of the data, got ''")
  if config.time_limit_seconds < 0:
    raise ConfigError(f"config.time_limit_seconds must be >= 0 (0 = none), "
                      f"got {config.time_limit_seconds!r}")
  if config.stop_check_every_steps < 1:
    raise ConfigError(f"config.stop_check_every_steps must be >= 1, "
                      f"got {config.stop_check_every_steps!r}")
  _check_choice("config.reward.pairing", config.reward.pairing, stages.PAIRINGS)
  if config.reward.pairing == "all" and config.data.rejected_pool:
    raise ConfigError("config.data.rejected_pool must be 0 with config.reward.pairing='all': "
                      "drawn rejected responses hold no ranking among themselves")
  if config.reward.center_coef < 0:
    raise ConfigError(f"config.reward.center_coef must be >= 0, got {config.reward.center_coef!r}")
  if config.reward.bias_batches < 0:
    raise ConfigError(
        f"config.reward.bias_batches must be >= 0, got {config.reward.bias_batches!r}")
  if not config.dpo.beta > 0:
    raise ConfigError(f"config.dpo.beta must be > 0, got {config.dpo.beta!r}")
  if not 0.0 <= config.dpo.label_smoothing < 0.5:
    raise ConfigError(f"config.dpo.label_smoothing must be in [0, 0.5) (the probability that a "
                      f"label is flipped), got {config.dpo.label_smoothing!r}")
  _check_policy(config)
  try:
    data_config.validate_data_config(config.data)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None
  problem = stages.get_stage(config.stage).check(config.data.task,
                                                 model_config(config).architecture)
  if problem:
    raise ConfigError(problem)
  metrics = eval_metric_names(config)
  if config.best_metric and config.best_metric not in metrics:
    raise ConfigError(f"config.best_metric must be '' or an eval metric of stage "
                      f"{config.stage!r}: one of {metrics}, got {config.best_metric!r}")
  _check_lengths(config)


def _check_policy(config: ml_collections.ConfigDict) -> None:
  """The policy section's ranges; for stage 'policy', the response budget fits the decoder."""
  policy = config.policy
  _check_choice("config.policy.algorithm", policy.algorithm, ("rloo", "grpo"))
  if policy.samples_per_prompt < 2:
    raise ConfigError(f"config.policy.samples_per_prompt must be >= 2 ({policy.algorithm}'s "
                      f"baseline is the prompt's other samples), got {policy.samples_per_prompt!r}")
  for name in ("beta", "eos_penalty"):
    if policy[name] < 0:
      raise ConfigError(f"config.policy.{name} must be >= 0, got {policy[name]!r}")
  for name in ("temperature", "clip_epsilon"):
    if not policy[name] > 0:
      raise ConfigError(f"config.policy.{name} must be > 0, got {policy[name]!r}")
  for name in ("max_new_tokens", "updates_per_batch"):
    if policy[name] < 1:
      raise ConfigError(f"config.policy.{name} must be >= 1, got {policy[name]!r}")
  if config.stage != "policy":
    return
  cfg, task = model_config(config), get_task(config.data.task)
  decoder = policy.max_new_tokens + (0 if task.encoder else config.data.seq_len)
  if decoder > cfg.max_len:
    prompt = "" if task.encoder else " + config.data.seq_len (the prompt)"
    raise ConfigError(f"config.policy.max_new_tokens{prompt} = {decoder} does not fit the "
                      f"decoder: raise config.model.max_len ({cfg.max_len}) to at least {decoder}")


def eval_metric_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The names of the eval metrics a run reports (its stage's summary, BLEU if asked for)."""
  names = tuple(stages.get_stage(config.stage).summarize(collections.defaultdict(float)))
  return names + (("bleu", "exact_match") if config.bleu_eval_batches else ())


def _check_optimizer_ranges(opt: ml_collections.ConfigDict) -> None:
  """The optimizer's numbers are in range: a positive rate, Adam's betas in [0, 1), ..."""
  if not opt.learning_rate > 0:
    raise ConfigError(f"config.optimizer.learning_rate must be > 0, got {opt.learning_rate!r}")
  for name in ("b1", "b2"):
    if not 0.0 <= opt[name] < 1.0:
      raise ConfigError(f"config.optimizer.{name} must be in [0, 1), got {opt[name]!r}")
  for name in ("eps", "weight_decay"):
    if opt[name] < 0:
      raise ConfigError(f"config.optimizer.{name} must be >= 0, got {opt[name]!r}")
  if not 0.0 <= opt.end_learning_rate_fraction <= 1.0:
    raise ConfigError(f"config.optimizer.end_learning_rate_fraction must be in [0, 1], "
                      f"got {opt.end_learning_rate_fraction!r}")


def _check_lengths(config: ml_collections.ConfigDict) -> None:
  """Every length the run feeds or decodes fits `model.max_len` (ConfigError naming both fields).

  Learned positions: every sequence of a batch row (a table of max_len rows). Any positions:
  what the run decodes (end-of-run samples, BLEU) fits `decoding.generate`'s limits: encoder
  inputs of at most max_len tokens, and a decoder holding the prompt and max_decode_length new
  tokens within max_len.
  """
  cfg, task = model_config(config), get_task(config.data.task)
  lengths = task.lengths(config.data)
  fix = f"raise config.model.max_len ({cfg.max_len}) to at least"
  if cfg.position_encoding == "learned":
    for feature in task.id_features(config.data):
      if lengths[feature] > cfg.max_len:
        raise ConfigError(f"{_length_field(config, feature)} = {lengths[feature]} does not fit the "
                          f"learned position table: {fix} {lengths[feature]}")
  decodes = config.bleu_eval_batches or (config.num_samples and task.has_targets(config.data))
  if not decodes:
    return
  off = "(or set config.num_samples=0 and config.bleu_eval_batches=0)"
  if task.encoder and lengths["inputs"] > cfg.max_len:
    raise ConfigError(f"{_length_field(config, 'inputs')} = {lengths['inputs']}: the encoder "
                      f"inputs the run decodes must fit the model: {fix} {lengths['inputs']} {off}")
  prompt = 0 if task.encoder else DECODER_ONLY_PROMPT
  if prompt + config.max_decode_length > cfg.max_len:
    after = f" (after a prompt of {prompt} tokens)" if prompt else ""
    raise ConfigError(f"config.max_decode_length = {config.max_decode_length}{after} does not fit "
                      f"the decoder: {fix} {prompt + config.max_decode_length} {off}")


def _length_field(config: ml_collections.ConfigDict, feature: str) -> str:
  """The config field that sets the length of a batch feature, e.g. 'config.data.targets_len'."""
  if feature == "targets" and get_task(config.data.task).encoder:
    return "config.data.targets_len" + ("" if config.data.targets_len else " (derived)")
  return "config.data.seq_len"




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


# ------------------------------------------------------------------------------ inspection

def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """Dotted field name -> value of every leaf field, e.g. {'data.seq_len': 128, ...}."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def format_config(config: ml_collections.ConfigDict, *, compact: bool = False,
                  width: int = 100) -> str:
  """The resolved config, one field per line (`name = value`), `*` where it differs from the
  default of the schema (`default_config()`); `compact`: the fields of each section on
  lines wrapped at `width` (`section: name=value name=value* ...`), for the start of a run."""
  defaults = flatten(default_config())
  marked = {name: repr(value) + ("" if name in defaults and _same(defaults[name], value) else "*")
            for name, value in _in_schema_order(flatten(config))}
  title = "config (* = differs from the default of transformer/training/config.py):"
  if not compact:
    return "\n".join([title] + [f"  {name} = {value}" for name, value in marked.items()])
  sections: dict[str, list[str]] = {}
  for name, value in marked.items():
    section, _, field = name.rpartition(".")
    sections.setdefault(section or "run", []).append(f"{field}={value}")
  lines = [title]
  for section, items in sections.items():
    line = f"  {section}:"
    for item in items:
      if len(line) + 1 + len(item) > width and not line.endswith(":"):
        lines.append(line)
        line = "   "
      line += " " + item
    lines.append(line)
  return "\n".join(lines)


def _in_schema_order(flat: dict[str, Any]) -> list[tuple[str, Any]]:
  """The items of a flattened config in the order the schema's source defines them: top-level
  fields first, then each section (data, model, optimizer, parallelism) as it appears."""
  rank = {name: i for i, name in enumerate(field_docs())}
  def key(name: str) -> tuple[int, int, str]:
    section = name.rpartition(".")[0]
    return (rank.get(section, len(rank)) if section else -1, rank.get(name, len(rank)), name)
  return sorted(flat.items(), key=lambda item: key(item[0]))


def _same(default: Any, value: Any) -> bool:
  if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
    return tuple(default) == tuple(value)
  return type(default) is type(value) and default == value or (
      isinstance(default, float) and isinstance(value, int) and default == value)


def field_docs() -> dict[str, str]:
  """Dotted field name -> its documentation, read from the schema's own source: the comment of
  each assignment in `default_config` and `default_data_config`, and the `Attributes:` of the
  ModelConfig docstring for the model section. Sections map to their comment too."""
  docs = _assignment_comments(default_config, "")
  docs.update(_assignment_comments(data_config.default_data_config, "data."))
  model_docs, model_fields = _attribute_docs(ModelConfig.__doc__ or ""), default_config().model
  docs.update({f"model.{name}": text for name, text in model_docs.items() if name in model_fields})
  docs.update({f"model.{name}": "" for name in model_fields if f"model.{name}" not in docs})
  return docs


def _assignment_comments(function: Any, prefix: str) -> dict[str, str]:
  """`c.a.b = value  # comment` (and comment-only lines continuing it) -> {prefix + 'a.b': ...}."""
  import inspect
  import io
  import re
  import tokenize

  source = inspect.getsource(function)
  comments: dict[int, str] = {}
  code_lines: set[int] = set()
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = token.string.lstrip("#").strip()
    elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):
      code_lines.update(range(token.start[0], token.end[0] + 1))
  docs, current = {}, None
  for number, line in enumerate(source.splitlines(), start=1):
    match = re.match(r"\s*c\.([\w.]+)\s*=(?!=)", line)
    if match:
      current = prefix + match.group(1)
      docs[current] = comments.get(number, "")
    elif number in code_lines:
      current = None
    elif current and number in comments:  # a comment-only line continues the field's comment
      docs[current] = f"{docs[current]} {comments[number]}".strip()
  return docs


def _attribute_docs(docstring: str) -> dict[str, str]:
  """The `Attributes:` section of a Google-style docstring as {name: one-line text}."""
  import inspect
  import re

  docs, current, indent = {}, None, None
  lines = inspect.cleandoc(docstring).splitlines()
  start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "Attributes:"), len(lines))
  for line in lines[start:]:
    if not line.strip():
      continue
    depth = len(line) - len(line.lstrip())
    indent = depth if indent is None else indent
    match = re.match(r"(\w+): (.*)", line.strip())
    if depth == indent and match:
      current = match.group(1)
      docs[current] = match.group(2).strip()
    elif depth > indent and current:
      docs[current] += " " + line.strip()
    else:
      break
  return docs


def field_listing() -> str:
  """docs/config.md: every field of the schema with its default and documentation (Markdown)."""
  docs, flat = field_docs(), dict(_in_schema_order(flatten(default_config())))
  lines = [
      "# Run config fields",
      "",
      "Every field of a run config (`transformer/training/config.py::default_config`), its",
      "default there and its documentation, generated from the schema's own source:",
      "",
      "    python -m transformer.training.config --list > docs/config.md",
      "",
      "`tests/training/test_config.py` checks that this file is current. Experiment files change",
      "these defaults; `python -m transformer.train --config=experiments/<file>.py --print_config`",
      "prints a run's resolved config, marking what differs from these defaults. Override any",
      "field with `--config.<section>.<field>=<value>`.",
  ]
  sections: dict[str, list[str]] = {}
  for name in flat:
    sections.setdefault(name.rpartition(".")[0], []).append(name)
  for section, names in sections.items():
    lines += ["", f"## {section or 'top level'}", ""]
    if section and docs.get(section):
      lines += [docs[section], ""]
    lines += ["| field | default | meaning |", "| --- | --- | --- |"]
    for name in names:
      cell = lambda text: text.replace("|", "\\|")  # noqa: E731
      lines.append(f"| `{name}` | `{cell(repr(flat[name]))}` | {cell(docs.get(name, ''))} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  from absl import app, flags

  flags.DEFINE_bool("list", False, "Print docs/config.md: every field, its default and comment.")

  def _main(argv: list[str]) -> None:
    del argv
    if not flags.FLAGS.list:
      raise app.UsageError("nothing to do: pass --list")
    print(field_listing(), end="")

  app.run(_main)
