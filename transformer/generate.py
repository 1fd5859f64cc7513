r"""Generates text from a trained run: one output line per prompt.

  python -m transformer.generate --workdir=runs/finetune --prompt="def add(a, b): return a + b"
  python -m transformer.generate --workdir=runs/pretrain --prompts_file=prompts.txt \
      --method=sample --temperature=0.8 --top_p=0.9 --seed=1
  echo "some prompt" | python -m transformer.generate --workdir=runs/x --method=beam --beam_size=4

Prompts come from --prompt, else --prompts_file (one per line), else standard input
(one per line). Empty prompts are errors; too long prompts are truncated with a
warning; see transformer/decoding/prompts.py. Line breaks in outputs are printed
escaped ('\n') so that output line i answers prompt i.
"""

import sys
from typing import Any

from absl import app, flags, logging

from transformer import decoding
from transformer.data.tokenizer import Tokenizer, load_tokenizer
from transformer.models.config import ModelConfig
from transformer.training import checkpoints

_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Training workdir: config.json, spm.model, checkpoints/.",
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

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


def load_for_generation(workdir: str, step: int | None = None
                        ) -> tuple[ModelConfig, Any, Tokenizer]:
  """(eval model config, params, tokenizer) of the training run in `workdir`."""
  model_config, params, tokenizer_file = checkpoints.load_params_for_inference(workdir, step)
  return model_config, params, load_tokenizer(tokenizer_file)


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
  """--prompt, else the lines of --prompts_file, else the lines of standard input."""
  if prompt is not None:
    return [prompt]
  if prompts_file is not None:
    with open(prompts_file) as f:
      return f.read().splitlines()
  return sys.stdin.read().splitlines()


def one_line(text: str) -> str:
  """`text` with each line break that str.splitlines knows escaped, e.g. '\\n', '\\x0b'."""
  return "".join(repr(c)[1:-1] if c in LINE_BREAKS else c for c in text)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # library INFO logs (Orbax) off unless asked for
    logging.set_verbosity(logging.WARNING)
  try:
    model_config, params, tokenizer = load_for_generation(_WORKDIR.value, _STEP.value)
  except FileNotFoundError as e:
    raise app.UsageError(f"--workdir={_WORKDIR.value}: {e}") from None
  try:
    outputs = decoding.generate_texts(
        model_config, params, tokenizer, read_prompts(_PROMPT.value, _PROMPTS_FILE.value),
        batch_size=_BATCH_SIZE.value, seed=_SEED.value, method=_METHOD.value,
        max_new_tokens=_MAX_NEW_TOKENS.value, beam_size=_BEAM_SIZE.value, alpha=_ALPHA.value,
        temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)
  except ValueError as e:  # an empty prompt, no prompts, or a bad decoding option
    raise app.UsageError(str(e)) from None
  for text in outputs:
    print(one_line(text))


if __name__ == "__main__":
  app.run(main)
