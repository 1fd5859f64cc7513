"""Generates text from a trained run: one output line per prompt.

  python -m transformer.generate --workdir=runs/finetune --prompt="def add(a, b): return a + b"
  python -m transformer.generate --workdir=runs/pretrain --prompts_file=prompts.txt \
      --method=sample --temperature=0.8 --top_p=0.9 --seed=1
  echo "some prompt" | python -m transformer.generate --workdir=runs/x --method=beam --beam_size=4

Prompts come from --prompt, else --prompts_file (one per line), else standard input
(one per line). Empty prompts are errors; too long prompts are truncated with a
warning; see transformer/decoding/prompts.py. Newlines in outputs are printed as
'\\n' so that output line i answers prompt i.
"""

import json
import os
import sys
from typing import Any

import orbax.checkpoint as ocp
import sentencepiece as spm
from absl import app, flags

from transformer import decoding
from transformer.models.config import ModelConfig

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir: config.json, spm.model, checkpoints/.",
                            required=True)
_PROMPT = flags.DEFINE_string("prompt", None, "A single prompt.")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A file of prompts, one per line.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to load (default: the latest).")
_METHOD = flags.DEFINE_enum("method", "greedy", list(decoding.METHODS), "Decoding method.")
_MAX_NEW_TOKENS = flags.DEFINE_integer(
    "max_new_tokens", None, "Tokens to generate per prompt (default: prompt length + 50).")
_BEAM_SIZE = flags.DEFINE_integer("beam_size", 4, "Beam size (--method=beam).")
_ALPHA = flags.DEFINE_float("alpha", 0.6, "GNMT length penalty exponent (--method=beam).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature (--method=sample).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0: all.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling probability mass; 1: all.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Prompts decoded together.")

CONFIG_FILE, TOKENIZER_FILE, CHECKPOINT_DIR = "config.json", "spm.model", "checkpoints"


def load_for_generation(workdir: str, step: int | None = None
                        ) -> tuple[ModelConfig, Any, spm.SentencePieceProcessor]:
  """(model config, params, tokenizer) of the run in `workdir`.

  Layout read: `config.json` (the run config; its `model` dict holds ModelConfig fields,
  vocab_size there or in `data.vocab_size`), `spm.model`, and `checkpoints/`, an Orbax
  CheckpointManager directory whose steps hold an item 'params' (the params pytree).
  """
  config_path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"--workdir={workdir} has no {CONFIG_FILE}: not a training workdir")
  with open(config_path) as f:
    run_config = json.load(f)
  fields = {k: v for k, v in run_config["model"].items() if k in ModelConfig.__dataclass_fields__}
  fields.setdefault("vocab_size", run_config.get("data", {}).get("vocab_size"))
  model_config = ModelConfig(**fields)
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"--workdir={workdir} has no checkpoint in {CHECKPOINT_DIR}/")
  params = manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore()))
  manager.close()
  tokenizer = spm.SentencePieceProcessor(model_file=os.path.join(workdir, TOKENIZER_FILE))
  return model_config, params["params"], tokenizer


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
  """--prompt, else the lines of --prompts_file, else the lines of standard input."""
  if prompt is not None:
    return [prompt]
  if prompts_file is not None:
    with open(prompts_file) as f:
      return f.read().splitlines()
  return sys.stdin.read().splitlines()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  model_config, params, tokenizer = load_for_generation(_WORKDIR.value, _STEP.value)
  outputs = decoding.generate_texts(
      model_config, params, tokenizer, read_prompts(_PROMPT.value, _PROMPTS_FILE.value),
      batch_size=_BATCH_SIZE.value, seed=_SEED.value, method=_METHOD.value,
      max_new_tokens=_MAX_NEW_TOKENS.value, beam_size=_BEAM_SIZE.value, alpha=_ALPHA.value,
      temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)
  for text in outputs:
    print(text.replace("\n", "\\n"))


if __name__ == "__main__":
  app.run(main)
