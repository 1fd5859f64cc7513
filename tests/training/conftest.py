"""Tiny run configs on a small slice of the embedded corpus, prepared once per test session."""

import hashlib
import os
import shutil

import pytest

from transformer.training.config import default_config

PACKAGES = ("email", "json", "http")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data dir shared by the session (the corpus slice is prepared on first use)."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
  """Where trained tokenizers are cached per data config (tokenizer training is the slow part)."""
  return str(tmp_path_factory.mktemp("tokenizers"))


def make_tiny_config(data_dir: str, task: str = "seq2seq", stage: str | None = None):
  """A 1-layer d_model 32 run config of `task` on the corpus slice in `data_dir`, a few steps long."""
  c = default_config()
  name, architecture, default_stage = {
      "seq2seq": ("summarize", "encoder_decoder", "finetune"),
      "lm": ("text", "decoder_only", "pretrain"),
      "span_corruption": ("text", "encoder_decoder", "pretrain"),
      "prefix_lm": ("summarize", "decoder_only", "finetune"),
      "preference": ("preferences", "decoder_only", "reward"),
  }[task]
  c.stage = stage or default_stage
  c.data.update(name=f"stdlib_corpus/{name}", task=task, seq_len=128 if task == "seq2seq" else 32, targets_len=64 if task == "seq2seq" else 0,
                vocab_size=400, num_sentinels=8, stdlib_packages=PACKAGES, data_dir=data_dir,
                spm_input_sentence_size=20_000)
  c.model.update(architecture=architecture, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=1,
                 num_decoder_layers=1, max_len=128)
  c.global_batch_size = 4
  c.num_train_steps = 4
  c.optimizer.update(warmup_steps=2)
  c.log_every_steps = 1
  c.eval_every_steps = 2
  c.eval_steps = 1
  c.checkpoint_every_steps = 2
  c.num_samples = 1
  c.max_decode_length = 4
  c.peak_flops_per_device = 1e11
  c.async_checkpoints = False
  return c


@pytest.fixture
def tiny_config(data_dir):
  """tiny_config(task, stage=None) -> make_tiny_config on the session's corpus slice."""
  return lambda task="seq2seq", stage=None: make_tiny_config(data_dir, task, stage)


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
  """workdir_for(config, name) -> a fresh workdir holding the config's (cached) trained tokenizer."""
  from transformer.training.checkpoints import tokenizer_path

  def make(config, name: str = "run") -> str:
    workdir = str(tmp_path / name)
    os.makedirs(workdir, exist_ok=True)
    shutil.copyfile(cached_tokenizer(config, tokenizer_dir), tokenizer_path(workdir))
    return workdir
  return make
