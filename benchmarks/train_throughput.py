"""Train-step throughput and MFU of the encoder-decoder; prints one JSON line per setting.

  python -m benchmarks.train_throughput                       # ~3.5 minutes on 2 CPU cores
  python -m benchmarks.train_throughput --sizes=base --batch_size=8 --length=128

For each model size and setting (dropout on / off, float32 / bfloat16 compute) it assembles
the project's own run on one device (`training/assembly.py`, as `transformer.train` does: the
`finetune` stage's loss, Adam, the jit-compiled pure step), runs it on random full-length
token batches, and reports the best of --repeats timings of --steps steps: tokens/s (input
and target tokens), seconds per step, analytic matmul FLOPs per step and MFU against a
float32 matmul peak measured on the same device (`training/flops.py`).
"""

import dataclasses
import json
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags

from transformer.models.config import ModelConfig, named_size
from transformer.training import flops
from transformer.training.assembly import assemble
from transformer.training.config import default_config, model_section

_SIZES = flags.DEFINE_list("sizes", ["quickstart", "small"],
                           "Model sizes: quickstart, small, base.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per step.")
_LENGTH = flags.DEFINE_integer("length", 128, "Input and target tokens per example.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timings per setting (the best is reported).")

SETTINGS = {  # name -> ModelConfig overrides
    "f32_dropout": dict(dtype="float32"),
    "f32_no_dropout": dict(dtype="float32", dropout_rate=0.0),
    "bf16_dropout": dict(dtype="bfloat16"),
}


def model_size(name: str, vocab_size: int) -> ModelConfig:
  """'quickstart' (experiments/quickstart.py's model), 'small' (d 256, 3+3), or the paper's
  'base'."""
  if name == "base":
    return named_size("base", vocab_size=vocab_size)
  widths = {"quickstart": (128, 4, 512, 2), "small": (256, 4, 1024, 3)}
  if name not in widths:
    raise app.UsageError(f"--sizes: unknown size {name!r}, expected quickstart, small or base")
  d, heads, d_ff, layers = widths[name]
  return ModelConfig(vocab_size=vocab_size, d_model=d, num_heads=heads, d_ff=d_ff,
                     num_encoder_layers=layers, num_decoder_layers=layers)


def random_batch(batch_size: int, length: int, vocab_size: int) -> dict[str, np.ndarray]:
  """Full-length seq2seq rows (no padding): inputs and targets int32 [batch, length]."""
  rng = np.random.default_rng(0)
  batch = {}
  for name in ("inputs", "targets"):
    batch[name] = rng.integers(4, vocab_size, (batch_size, length), dtype=np.int32)
    batch[f"{name}_segmentation"] = np.ones((batch_size, length), np.int32)
    batch[f"{name}_position"] = np.broadcast_to(np.arange(length, dtype=np.int32),
                                                (batch_size, length)).copy()
  return batch


def run_config(cfg: ModelConfig, batch_size: int, length: int) -> ml_collections.ConfigDict:
  """The run config of a seq2seq fine-tuning step of model `cfg` (label smoothing 0.1, Adam)."""
  config = default_config()
  config.stage = "finetune"
  config.data.update(name="stdlib_corpus/summarize", task="seq2seq", seq_len=length,
                     targets_len=length, vocab_size=cfg.vocab_size, num_sentinels=0)
  config.model.update(**model_section(cfg))
  config.global_batch_size = batch_size
  config.label_smoothing = 0.1
  config.num_train_steps = 1000
  return config


def time_train_step(cfg: ModelConfig, batch: dict[str, np.ndarray], steps: int, repeats: int,
                    peak: float) -> dict[str, float]:
  """Compiles the train step, then times `steps` steps `repeats` times (best kept)."""
  batch_size, length = batch["targets"].shape
  parts = assemble(run_config(cfg, batch_size, length), jax.devices()[:1])
  state, rng = parts.init()
  batch = parts.put_batch(batch)
  start = time.perf_counter()
  state, _ = parts.train_step(state, batch, rng)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - start
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for i in range(steps):
      state, _ = parts.train_step(state, batch, jax.random.fold_in(rng, i))
    jax.block_until_ready(state)
    best = min(best, (time.perf_counter() - start) / steps)
  step_flops = parts.flops_per_step()
  tokens = sum(int(np.prod(batch[k].shape)) for k in ("inputs", "targets"))
  return {"tokens_per_s": round(tokens / best, 1), "step_s": round(best, 4),
          "tflop_per_step": round(step_flops / 1e12, 4),
          "mfu": round(flops.mfu(step_flops, 1 / best, peak, 1), 3),
          "compile_and_first_step_s": round(compile_s, 1)}


def main(argv: list[str]) -> None:
  del argv
  peak = flops.peak_flops_per_device(0.0)
  batch = random_batch(_BATCH_SIZE.value, _LENGTH.value, _VOCAB_SIZE.value)
  print(json.dumps({"device": jax.devices()[0].device_kind, "device_count": jax.device_count(),
                    "measured_f32_matmul_peak_tflops": round(peak / 1e12, 4),
                    "batch_size": _BATCH_SIZE.value, "length": _LENGTH.value}), flush=True)
  for size in _SIZES.value:
    base = model_size(size, _VOCAB_SIZE.value)
    for setting, overrides in SETTINGS.items():
      cfg = dataclasses.replace(base, **overrides)
      result = time_train_step(cfg, batch, _STEPS.value, _REPEATS.value, peak)
      print(json.dumps({"size": size, "setting": setting, **result}), flush=True)


if __name__ == "__main__":
  app.run(main)
