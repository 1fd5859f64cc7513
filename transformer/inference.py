"""A trained model for inference without the training code: params-only checkpoints and exports.

    model_config, params, tokenizer = load_export("exports/quickstart")
    texts = decoding.generate_texts(model_config, params, tokenizer, ["def add(a, b): ..."])

This module imports jax, flax (through the models), orbax, numpy and sentencepiece (through
`data.tokenizer`) and nothing else: no grain, no TensorFlow Datasets, no ml_collections, nothing
of `transformer.training`. An exported run therefore loads and generates where only those are
installed (`tests/test_export.py` checks it in a fresh process that blocks the rest).

An export (written by `python -m transformer.export`) is one folder:

  export.json    {"format": FORMAT, "model_config": the ModelConfig fields, "steps": the
                 checkpoint step(s) whose params these are (several: averaged), "workdir": the
                 run it came from, "config": that run's config}; its presence marks an export
  params/        the params pytree, an Orbax PyTree checkpoint (nothing else: no optimizer state)
  spm.model      the run's SentencePiece model

Params-only checkpoints (`params/` of an export, of a checkpoint averaged by
`python -m transformer.average`, and the `params/` item of every training checkpoint) are read
with Orbax's PyTree handler into host numpy arrays, whatever mesh wrote them.
"""

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from transformer.data.tokenizer import TOKENIZER_FILE, Tokenizer, load_tokenizer
from transformer.models.config import ModelConfig

FORMAT = "transformer-export/1"
EXPORT_FILE = "export.json"
PARAMS_DIR = "params"
# ModelConfig fields set by whoever builds the model (train / eval / decode), not stored.
_SWITCHES = ("deterministic", "decode")


def read_params(directory: str) -> Any:
  """The params pytree of a params-only Orbax checkpoint folder, as host numpy arrays.

  Raises:
    FileNotFoundError: `directory` is not a finished Orbax checkpoint.
  """
  path = epath.Path(os.path.abspath(directory))
  if not (path / "_METADATA").exists():
    raise FileNotFoundError(f"no params checkpoint in {directory}")
  handler = ocp.PyTreeCheckpointHandler()
  try:
    tree = handler.metadata(path).tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return handler.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  finally:
    handler.close()


def write_params(directory: str, params: Any) -> None:
  """Saves a params pytree as a params-only Orbax checkpoint folder (replacing one there).

  Orbax writes into a temporary folder and renames it when complete, so a crash never leaves a
  half-written `directory` that `read_params` would take for finished."""
  if os.path.exists(directory):
    shutil.rmtree(directory)
  os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(directory), jax.tree.map(np.asarray, params))
    checkpointer.wait_until_finished()


def model_config_fields(config: ModelConfig) -> dict[str, Any]:
  """The ModelConfig fields an export stores (all but the train / eval / decode switches)."""
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
          if f.name not in _SWITCHES}


def is_export(path: str) -> bool:
  """Whether `path` is an export folder (it holds export.json)."""
  return os.path.isfile(os.path.join(path, EXPORT_FILE))


def read_export_info(path: str) -> dict[str, Any]:
  """The export.json of an export folder; ValueError if it is not this project's format."""
  with open(os.path.join(path, EXPORT_FILE)) as f:
    info = json.load(f)
  if info.get("format") != FORMAT:
    raise ValueError(f"{os.path.join(path, EXPORT_FILE)}: format {info.get('format')!r}, "
                     f"expected {FORMAT!r}")
  return info


def load_export(path: str) -> tuple[ModelConfig, Any, Tokenizer]:
  """(eval ModelConfig, params as numpy arrays, tokenizer) of the export folder `path`."""
  if not is_export(path):
    raise FileNotFoundError(f"no {EXPORT_FILE} in {path}: not an export folder")
  info = read_export_info(path)
  config = ModelConfig(**info["model_config"]).eval()
  return (config, read_params(os.path.join(path, PARAMS_DIR)),
          load_tokenizer(os.path.join(path, TOKENIZER_FILE)))


def write_export(path: str, model_config: ModelConfig, params: Any, tokenizer_file: str,
                 **provenance: Any) -> str:
  """Writes an export folder: params/, spm.model (a copy of `tokenizer_file`) and export.json
  (model config plus `provenance`, e.g. steps=[300], workdir=..., config=run config dict).

  Returns:
    `path`.
  """
  os.makedirs(path, exist_ok=True)
  write_params(os.path.join(path, PARAMS_DIR), params)
  shutil.copyfile(tokenizer_file, os.path.join(path, TOKENIZER_FILE))
  info = {"format": FORMAT, "model_config": model_config_fields(model_config), **provenance}
  with open(os.path.join(path, EXPORT_FILE) + ".tmp", "w") as f:
    json.dump(info, f, indent=2)
  os.replace(os.path.join(path, EXPORT_FILE) + ".tmp", os.path.join(path, EXPORT_FILE))
  return path
