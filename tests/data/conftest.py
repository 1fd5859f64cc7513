"""Shared fixtures: a stdlib corpus subset prepared once per session, and a small tokenizer
trained on it."""

import pytest

from transformer.data import config as data_config
from transformer.data import pipeline

PACKAGES = ("json", "email", "http", "urllib")  # 45 modules; every split non-empty.


def _small_config(data_dir: str, **overrides):
  cfg = data_config.default_data_config()
  cfg.data_dir = data_dir
  cfg.stdlib_packages = PACKAGES
  cfg.vocab_size = 600
  cfg.spm_model_type = "bpe"
  cfg.num_sentinels = 24
  cfg.seq_len = 64
  cfg.update(overrides)
  return cfg


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def small_config(data_dir):
  """small_config(**overrides): a data config on the stdlib subset with a small vocabulary."""
  return lambda **overrides: _small_config(**{"data_dir": data_dir, **overrides})


@pytest.fixture(scope="session")
def tokenizer(small_config, tmp_path_factory):
  return pipeline.load_tokenizer_for(small_config(), str(tmp_path_factory.mktemp("work")))
