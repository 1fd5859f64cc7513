"""Tiny run configs (the experiments' own tiny variants) on a slice of the embedded corpus,
prepared once per test session (in tests/conftest.py's `data_dir`)."""

import hashlib
import importlib.util
import os
import shutil

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# The session fixtures `data_dir` and `tokenizer_dir` are tests/conftest.py's.


def load_experiment(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of experiments/<name>.py, loaded by path as the --config flag does."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, "experiments", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# The experiment whose tiny variant stands for each data task in the tests.
TASK_EXPERIMENTS = {"seq2seq": "quickstart", "lm": "pretrain_lm",
                    "span_corruption": "pretrain_span"}


def tiny_experiment(data_dir: str, task: str = "seq2seq",
                    stage: str | None = None) -> ml_collections.ConfigDict:
  """The tiny variant (`presets.shrink`) of the experiment of `task`, reading `data_dir`."""
  config = load_experiment(TASK_EXPERIMENTS[task], "tiny")
  config.data.data_dir = data_dir
  if stage:
    config.stage = stage
  return config


@pytest.fixture
def tiny_config(data_dir):
  """tiny_config(task, stage=None) -> tiny_experiment on the session's corpus slice."""
  return lambda task="seq2seq", stage=None: tiny_experiment(data_dir, task, stage)


def cached_tokenizer(config, tokenizer_dir: str) -> str:
  """Path of the config's trained spm.model, trained into `tokenizer_dir` on first use."""
  from transformer.data import pipeline
  key = hashlib.sha1(config.data.to_json().encode()).hexdigest()[:12]
  cached = os.path.join(tokenizer_dir, f"{key}.model")
  if not os.path.exists(cached):
    pipeline.load_tokenizer_for(config.data, cached)
  return cached


@pytest.fixture
def workdir_for(tmp_path, tokenizer_dir):
  """workdir_for(config, name) -> a fresh workdir holding the config's (cached) trained
  tokenizer."""
  from transformer.training.checkpoints import tokenizer_path

  def make(config, name: str = "run") -> str:
    workdir = str(tmp_path / name)
    os.makedirs(workdir, exist_ok=True)
    shutil.copyfile(cached_tokenizer(config, tokenizer_dir), tokenizer_path(workdir))
    return workdir
  return make


@pytest.fixture(scope="session")
def reward_runs(tmp_path_factory, data_dir):
  """reward_runs(architecture='encoder_decoder') -> (sft workdir, rm workdir, the reward run's
  log): a tiny fine-tuned run (finetune_lm.py:<architecture>,tiny) and a tiny reward run
  initialised from it (reward.py:<architecture>,tiny), trained to the end once per session.
  Tests may add eval/ beside them, but change nothing else."""
  from transformer.training.loop import run
  made = {}

  def make(architecture: str = "encoder_decoder") -> tuple[str, str, str]:
    if architecture not in made:
      root = tmp_path_factory.mktemp(f"rlhf_{architecture}")
      sft = load_experiment("finetune_lm", f"{architecture},tiny")
      sft.data.data_dir = data_dir
      run(sft, str(root / "sft"), print_fn=lambda line: None)
      rm = load_experiment("reward", f"{architecture},tiny")
      rm.data.data_dir = data_dir
      rm.init_from = str(root / "sft")
      lines = []
      run(rm, str(root / "rm"), print_fn=lines.append)
      made[architecture] = str(root / "sft"), str(root / "rm"), "\n".join(lines)
    return made[architecture]
  return make


@pytest.fixture(scope="session")
def reward_run(reward_runs) -> tuple[str, str, str]:
  """The encoder-decoder `reward_runs`: (sft workdir, rm workdir, the reward run's log)."""
  return reward_runs("encoder_decoder")
