"""Session fixtures of the whole suite: the TFDS data dir of the tiny corpus slice, the cache of
trained tokenizers, and one trained tiny run that the inference tests (generate, evaluate,
average, export) read."""

import os

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A TFDS data dir shared by the session (the corpus slice is prepared on first use)."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
  """Where trained tokenizers are cached per data config (tokenizer training is the slow part)."""
  return str(tmp_path_factory.mktemp("tokenizers"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir, tokenizer_dir) -> str:
  """The workdir of experiments/quickstart.py:tiny trained to the end (4 steps; checkpoints at
  steps 2 and 4). Tests may add eval/, averaged/ or exports beside, but change nothing else."""
  import shutil

  from tests.training.conftest import cached_tokenizer, tiny_experiment
  from transformer.training import checkpoints, loop

  config = tiny_experiment(data_dir, "seq2seq")
  workdir = str(tmp_path_factory.mktemp("tiny_run") / "run")
  os.makedirs(workdir)
  shutil.copyfile(cached_tokenizer(config, tokenizer_dir), checkpoints.tokenizer_path(workdir))
  loop.run(config, workdir, print_fn=lambda line: None)
  return workdir
