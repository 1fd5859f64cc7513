"""A trained reward model for its consumers: the normalisation bias and `load_reward_model`.

At the end of a reward run, `normalize` scores the chosen (reference) responses of the
train split with the final params and stores their mean as the bias, in
`<workdir>/reward_bias.json` beside the checkpoints (with the step it belongs to). Every
consumer loads the model through `load_reward_model(workdir)`, whose scores subtract that
bias, so the train split's chosen responses score 0 on average (Stiennon et al. 2020).

    rm = load_reward_model("runs/rlhf/reward")
    rm.score_texts(["def f(x): ..."], ["Return x doubled."])    # float32 [1]
    scores, valid = rm.score_batch(batch)                         # a preference batch [b, K]
"""

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from transformer.data import tasks
from transformer.data.tokenizer import Tokenizer, load_tokenizer
from transformer.models.config import ModelConfig
from transformer.models.reward import reward_model
from transformer.training import checkpoints
from transformer.training.config import ConfigError, model_config
from transformer.training.stages import reward_scores

BIAS_FILE = "reward_bias.json"
PrintFn = Callable[[str], None]


def bias_path(workdir: str) -> str:
  """Where a reward run keeps its normalisation bias."""
  return os.path.join(workdir, BIAS_FILE)


def read_bias(workdir: str) -> dict[str, Any] | None:
  """The stored bias record of `workdir` ({'bias', 'step', ...}), or None."""
  path = bias_path(workdir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_bias(workdir: str, record: dict[str, Any]) -> None:
  """Writes the bias record atomically (temp file + rename)."""
  path = bias_path(workdir)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)


def normalize(sums: dict[str, float], step: int, workdir: str,
              print_fn: PrintFn = print) -> dict[str, Any]:
  """Stores the bias from the reward sums of the train split's chosen responses.

  Args:
    sums: the reward stage's eval sums over the train split (`chosen_sum`, `chosen_n`, ...),
      scored by the final params without a bias.
    step: the step of those params.
    workdir: the reward run's workdir.

  Returns:
    the record written: bias (= the raw chosen mean), step, examples, raw chosen std, and
    the chosen mean after the bias (0 up to rounding).
  """
  n = max(float(sums["chosen_n"]), 1.0)
  mean = float(sums["chosen_sum"]) / n
  std = float(np.sqrt(max(float(sums["chosen_sq"]) / n - mean * mean, 0.0)))
  record = {"bias": mean, "step": int(step), "examples": int(sums["chosen_n"]),
            "train_chosen_std": std, "train_chosen_mean_after_bias": mean - mean}
  write_bias(workdir, record)
  print_fn(f"reward bias {mean:.4f} (the train split's chosen mean over {record['examples']} "
           f"responses, std {std:.4f}); stored in {bias_path(workdir)}; after it the chosen "
           f"mean is {record['train_chosen_mean_after_bias']:.4f}")
  return record


@dataclasses.dataclass(frozen=True)
class RewardModel:
  """A trained reward model with its bias applied (build with `load_reward_model`).

  Attributes:
    workdir: the reward run.
    config: its run config.
    model_config: its eval ModelConfig.
    params: the params (host arrays).
    bias: subtracted from every raw score.
    step: the checkpoint step.
    tokenizer: the run's tokenizer.
  """

  workdir: str
  config: ml_collections.ConfigDict
  model_config: ModelConfig
  params: Any
  bias: float
  step: int
  tokenizer: Tokenizer

  @property
  def task(self) -> tasks.Task:
    return tasks.get_task(self.config.data.task)

  @functools.cached_property
  def _scores(self) -> Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, jax.Array]]:
    model = reward_model(self.model_config)
    return jax.jit(lambda params, batch: reward_scores(model, params, batch,
                                                       jax.random.PRNGKey(0)))

  def score_batch(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [b, K] with the bias subtracted, valid bool [b, K]) of a preference
    batch of the run's task (filler rows and missing responses are not valid)."""
    keys = [k for k in batch if k == "inputs" or k.startswith("response_")]
    scores, valid = self._scores(self.params, {k: jnp.asarray(batch[k]) for k in keys})
    return np.asarray(scores) - np.float32(self.bias), np.asarray(valid)

  def check_tokenizer(self, workdir: str, name: str) -> None:
    """ConfigError `<name>=<workdir> has another tokenizer than the reward model` unless the
    run in `workdir` has this model's tokenizer."""
    if _read(checkpoints.tokenizer_path(workdir)) != self.tokenizer.model_proto:
      raise ConfigError(f"{name}={workdir} has another tokenizer than the reward model "
                        f"{self.workdir}")

  def response_budget(self) -> int:
    """The most response tokens (EOS not counted) a scored sequence has room for."""
    lengths = self.task.lengths(self.config.data)
    return lengths["response_0"] - 1 - (0 if self.task.encoder else 1)

  def score_texts(self, prompts: Sequence[str], responses: Sequence[str], *,
                  batch_size: int = 64, cut_responses: bool = False) -> np.ndarray:
    """float32 [n]: the reward of responses[i] to prompts[i] (bias subtracted).

    Prompts are cut to fit as in training (their start kept). A response that cannot fit
    the reward model's sequence with its EOS (and one prompt token, decoder-only) is a
    ValueError naming it; with `cut_responses` it is scored on its first
    `response_budget()` tokens instead (for sampled text, which can re-encode to a token or
    two more than were sampled).
    """
    if len(prompts) != len(responses):
      raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    data = self.config.data.copy_and_resolve_references()
    data.num_responses, data.truncate_inputs = 1, True
    lengths = self.task.lengths(data)
    rows = []
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
      response_ids = self.tokenizer.encode(response)
      if len(response_ids) > self.response_budget():
        if not cut_responses:
          raise ValueError(f"response {i} has {len(response_ids)} tokens: with its EOS it does "
                           f"not fit the reward model's sequence (at most "
                           f"{self.response_budget()} response tokens)")
        response_ids = response_ids[:self.response_budget()]
      example = self.task.examples((self.tokenizer.encode(prompt), response_ids), None, data)[0]
      rows.append(tasks.pad_example(example, lengths, with_segmentation=False))
    scores = []
    for start in range(0, len(rows), batch_size):
      chunk = rows[start:start + batch_size]
      batch = {k: np.stack([r[k] for r in chunk] + [np.zeros_like(chunk[0][k])]
                           * (batch_size - len(chunk))) for k in chunk[0]}
      scores.append(self.score_batch(batch)[0][:len(chunk), 0])
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def reward_run(workdir: str, field: str = "") -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """(run config, bias record) of the finished reward run in `workdir`.

  Raises:
    ConfigError (one line, starting with `field`=workdir if given) if `workdir` is not a
    finished reward run: no config.json, a stage other than 'reward', or no stored bias.
  """
  name = f"{field}={workdir!r}" if field else workdir
  config = checkpoints.read_config(workdir) if workdir else None
  if config is None:
    raise ConfigError(f"{name} is not a training workdir (no {checkpoints.CONFIG_FILE})")
  if config.stage != "reward":
    raise ConfigError(f"{name} is not a reward model: its run is stage {config.stage!r}; "
                      f"train one with config.stage='reward'")
  record = read_bias(workdir)
  if record is None:
    raise ConfigError(f"{name} has no {BIAS_FILE}: its reward run has not finished")
  return config, record


def config_field(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted config field, e.g. 'policy.reward_workdir'."""
  value = config
  for name in field.split("."):
    value = value[name]
  return value


def reward_options(config: ml_collections.ConfigDict, field: str) -> dict[str, Any]:
  """{'reward_model': the module, 'reward_bias': its bias} of the reward run named by the
  dotted `field` of `config` (a stage that reads one: `Stage.reward_field`).

  Raises:
    ConfigError (one line, naming the field) if config.<field> or config.init_from is empty,
    or unless config.<field> is a finished reward run
    (`reward_run`) on config.data.task, with the tokenizer of config.init_from and a
    model.max_len of at least config.model.max_len (what the run decodes fits it).
  """
  workdir, name = config_field(config, field), f"config.{field}"
  if not workdir:
    raise ConfigError(f"{name} must name the reward run that stage {config.stage!r} reads")
  if not config.init_from:
    raise ConfigError(f"config.init_from must name the run stage {config.stage!r} starts from "
                      f"(with the tokenizer of {name})")
  saved, record = reward_run(workdir, name)
  name = f"{name}={workdir!r}"
  if saved.data.task != config.data.task:
    raise ConfigError(f"{name} scores data task {saved.data.task!r}, but config.data.task is "
                      f"{config.data.task!r}")
  if _read(checkpoints.tokenizer_path(workdir)) != _read(
      checkpoints.tokenizer_path(config.init_from)):
    raise ConfigError(f"{name} has another tokenizer than config.init_from={config.init_from!r}")
  cfg = model_config(saved).eval()
  if cfg.max_len < config.model.max_len:
    raise ConfigError(f"{name}: its model.max_len ({cfg.max_len}) is below config.model.max_len "
                      f"({config.model.max_len}), the longest sequence it may score")
  return {"reward_model": reward_model(cfg), "reward_bias": float(record["bias"])}


def _read(path: str) -> bytes | None:
  """The bytes of a file, or None if there is none."""
  if not os.path.exists(path):
    return None
  with open(path, "rb") as f:
    return f.read()


def load_reward_model(workdir: str, step: int | None = None) -> RewardModel:
  """The reward model trained in `workdir`, its bias applied.

  Raises:
    ConfigError (one line) if `workdir` is not a finished reward run (`reward_run`) or its
    bias is not of the checkpoint loaded.
  """
  config, record = reward_run(workdir)
  try:
    params, step = checkpoints.restore_raw_params(workdir, step)
  except FileNotFoundError as e:
    raise ConfigError(f"{workdir}: {e}") from None
  if record["step"] != step:
    raise ConfigError(f"{workdir}: the bias in {BIAS_FILE} is of step {record['step']}, "
                      f"the checkpoint of step {step}; rerun the reward run to finish it")
  return RewardModel(workdir, config, model_config(config).eval(),
                     jax.tree.map(np.asarray, params), float(record["bias"]), int(step),
                     load_tokenizer(checkpoints.tokenizer_path(workdir)))
