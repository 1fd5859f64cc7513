r"""Generates text from a trained run or an export: one output line per prompt.

  python -m transformer.generate --workdir=runs/finetune --prompt="def add(a, b): return a + b"
  python -m transformer.generate --workdir=runs/pretrain --prompts_file=prompts.txt \
      --method=sample --temperature=0.8 --top_p=0.9 --seed=1
  python -m transformer.generate --workdir=exports/quickstart --prompts_file=prompts.jsonl
  echo "some prompt" | python -m transformer.generate --workdir=runs/x --method=beam --beam_size=4
  python -m transformer.generate --workdir=runs/rlhf/finetune --reward_workdir=runs/rlhf/reward \
      --num_samples=8 --prompts_file=code.txt --show_candidates

Best-of-N: with --reward_workdir, --num_samples=N candidates are sampled per prompt
(--method=sample unless another method is given), each is scored by the reward model (its
normalisation bias applied) and the best is printed; --show_candidates also prints every
candidate under it as '  <score>\t<text>', best first.

--workdir is a training workdir (config.json, spm.model, checkpoints/) or an export folder
written by `python -m transformer.export` (export.json marks it; loading one imports no
training code, grain or TensorFlow Datasets). From a workdir the params are the latest
checkpoint, --step's, the mean of the last --average_last checkpoints, or a saved average
(--averaged=DIR/averaged/step<N>-avg<K>, from `python -m transformer.average`).

Prompts come from --prompt, else --prompts_file, else standard input: one prompt per line, or,
for a file ending in .jsonl (or with --jsonl), one JSON object {"prompt": "..."} per line, so
that a prompt may hold line breaks (code). Empty prompts are errors; too long prompts are
truncated with a warning; see transformer/decoding/prompts.py. Line breaks in outputs are
printed escaped ('\n') so that output line i answers prompt i. Usage errors are one line on
stderr (exit status 2).

The latest intact checkpoint is used: a damaged later one is reported on stderr in one line
and set aside (`training/integrity.py`). Bad inputs are one line on stderr, exit status 2
(`transformer.cli`).
"""

import json
import sys
from typing import Any

from absl import app, flags

from transformer import cli, decoding, inference
from transformer.data.tokenizer import Tokenizer, load_tokenizer
from transformer.models.config import ModelConfig

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training workdir (config.json, spm.model, checkpoints/) or an export "
    "folder (export.json, params/, spm.model).", required=True)
_PROMPT = flags.DEFINE_string("prompt", None, "A single prompt.")
_PROMPTS_FILE = flags.DEFINE_string(
    "prompts_file", None, "A file of prompts: one per line, or one JSON object {\"prompt\": ...} "
    "per line if its name ends in .jsonl (prompts with line breaks).")
_JSONL = flags.DEFINE_bool("jsonl", False, "Read --prompts_file or standard input as JSONL.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to load (default: the latest).")
_AVERAGE_LAST = flags.DEFINE_integer(
    "average_last", 0, "Average the params of the last K checkpoints (0: no averaging).")
_AVERAGED = flags.DEFINE_string(
    "averaged", None, "A saved average (DIR/averaged/step<N>-avg<K>) to load the params from.")
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
_REWARD_WORKDIR = flags.DEFINE_string(
    "reward_workdir", None, "A reward run: rerank --num_samples candidates per prompt by it.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Candidates per prompt (best-of-N).")
_SHOW_CANDIDATES = flags.DEFINE_bool("show_candidates", False,
                                     "Best-of-N: print every candidate with its score.")

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


def load_for_generation(workdir: str, step: int | None = None, *, average_last: int = 0,
                        averaged: str | None = None) -> tuple[ModelConfig, Any, Tokenizer]:
  """(eval model config, params, tokenizer) of a training workdir or an export folder.

  An export loads through `inference.load_export` only (no training code imported); a workdir
  through the training checkpoints (`step`, `average_last`, `averaged`: see
  `training.averaging.load_params`)."""
  if inference.is_export(workdir):
    if step is not None or average_last or averaged:
      raise ValueError(f"{workdir} is an export (one set of params): --step, --average_last and "
                       f"--averaged apply to training workdirs")
    return inference.load_export(workdir)
  from transformer.training import averaging  # only for training workdirs

  model_config, params, tokenizer_file, _ = averaging.load_for_inference(
      workdir, step=step, average_last=average_last, averaged=averaged,
      print_fn=lambda line: print(line if line.startswith("warning: ") else f"warning: {line}",
                                  file=sys.stderr, flush=True))
  return model_config, params, load_tokenizer(tokenizer_file)


def read_prompts(prompt: str | None, prompts_file: str | None, jsonl: bool = False) -> list[str]:
  """--prompt, else the prompts of --prompts_file, else those of standard input: one a line, or
  JSONL (`jsonl`, or a file name ending in .jsonl): the "prompt" of one JSON object a line."""
  if prompt is not None:
    return [prompt]
  if prompts_file is not None:
    with open(prompts_file) as f:
      text, name = f.read(), prompts_file
    jsonl = jsonl or prompts_file.endswith(".jsonl")
  else:
    text, name = sys.stdin.read(), "<stdin>"
  return parse_jsonl_prompts(text, name) if jsonl else text.splitlines()


def parse_jsonl_prompts(text: str, name: str) -> list[str]:
  """The "prompt" string of each non-blank line's JSON object; ValueError names FILE:LINE."""
  prompts = []
  for number, line in enumerate(text.split("\n"), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{name}:{number}: not JSON ({e.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
      raise ValueError(f'{name}:{number}: expected an object {{"prompt": "..."}}, got {line[:60]}')
    prompts.append(record["prompt"])
  return prompts


def one_line(text: str) -> str:
  """`text` with each line break that str.splitlines knows escaped, e.g. '\\n', '\\x0b'."""
  return "".join(repr(c)[1:-1] if c in LINE_BREAKS else c for c in text)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    model_config, params, tokenizer = load_for_generation(
        _WORKDIR.value, _STEP.value, average_last=_AVERAGE_LAST.value, averaged=_AVERAGED.value)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(f"--workdir={_WORKDIR.value}: {e}") from None
  if _NUM_SAMPLES.value < 1:
    raise app.UsageError(f"--num_samples must be >= 1, got {_NUM_SAMPLES.value}")
  reward = None
  if _REWARD_WORKDIR.value:
    from transformer.training.config import ConfigError
    from transformer.training.rewards import load_reward_model
    try:
      reward = load_reward_model(_REWARD_WORKDIR.value)
    except ConfigError as e:
      raise app.UsageError(f"--reward_workdir: {e}") from None
    budget = reward.response_budget()
    if _MAX_NEW_TOKENS.value is not None and _MAX_NEW_TOKENS.value > budget:
      raise app.UsageError(f"--max_new_tokens={_MAX_NEW_TOKENS.value}: no room for the EOS in "
                           f"the reward model's response budget ({budget} tokens)")
  elif _NUM_SAMPLES.value > 1:
    raise app.UsageError("--num_samples > 1 needs --reward_workdir to choose among them")
  n = _NUM_SAMPLES.value
  method = _METHOD.value if reward is None or flags.FLAGS["method"].present else "sample"
  max_new = _MAX_NEW_TOKENS.value
  if reward is not None and max_new is None:
    max_new = min(reward.response_budget(), 50)
  try:
    prompts = read_prompts(_PROMPT.value, _PROMPTS_FILE.value, _JSONL.value)
    repeated = [p for p in prompts for _ in range(n)]
    outputs = decoding.generate_texts(
        model_config, params, tokenizer, repeated, batch_size=_BATCH_SIZE.value,
        seed=_SEED.value, method=method, max_new_tokens=max_new, beam_size=_BEAM_SIZE.value,
        alpha=_ALPHA.value, temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
        top_p=_TOP_P.value)
    scores = None if reward is None else reward.score_texts(repeated, outputs, cut_responses=True)
  except (OSError, ValueError) as e:  # a bad prompts file, an empty prompt, a bad option
    raise app.UsageError(str(e)) from None
  if reward is None:
    for text in outputs:
      print(one_line(text))
    return
  for i in range(len(prompts)):
    candidates = sorted(zip(scores[i * n:(i + 1) * n], outputs[i * n:(i + 1) * n],
                            strict=True), key=lambda c: -c[0])
    print(one_line(candidates[0][1]))
    if _SHOW_CANDIDATES.value:
      for score, text in candidates:
        print(f"  {score:.4f}\t{one_line(text)}")


if __name__ == "__main__":
  cli.run(main)
