"""Decoding throughput: cached greedy vs greedy recomputing the prefix vs beam 4; prints JSON.

  python -m benchmarks.decode                 # a few minutes on 2 CPU cores
  python -m benchmarks.decode --d_model=512 --num_layers=6 --batch_size=32   # the base model
  python -m benchmarks.decode --architecture=lstm      # the LSTM's carried state vs recompute

A randomly initialised model of --architecture (default the paper's encoder-decoder, small)
decodes a batch of random prompts: the encoder input of an encoder-decoder, the decoder
prefix of the others (lstm, gated_cnn, decoder_only: --num_layers decoder layers, no
encoder). For each method and number of new tokens it
reports generated tokens per second (output tokens up to EOS, summed over the batch,
divided by the best of --repeats wall times after one compiling call).
"""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from transformer.decoding import generate
from transformer.models.config import ModelConfig
from transformer.models.registry import ARCHITECTURES, architecture, build_model, dummy_batch
from transformer.special_ids import PAD_ID

_ARCHITECTURE = flags.DEFINE_enum("architecture", "encoder_decoder", list(ARCHITECTURES),
                                  "The model decoded.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts decoded together.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 32,
                                   "Tokens per prompt (encoder input, or decoder prefix).")
_D_MODEL = flags.DEFINE_integer("d_model", 256, "Model width.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 2, "Encoder and decoder layers each.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size.")
_NEW_TOKENS = flags.DEFINE_list("new_tokens", ["64", "256"], "Numbers of new tokens to time.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed calls per setting (the best is reported).")

SETTINGS = {  # name -> generate() keyword arguments
    "greedy_cached": dict(method="greedy"),
    "greedy_uncached": dict(method="greedy", use_cache=False),
    "beam4_cached": dict(method="beam", beam_size=4, alpha=0.6),
}


def time_generate(config: ModelConfig, params, prompts: jnp.ndarray, num_new: int,
                  repeats: int, **kwargs) -> dict[str, float]:
  """Compiles once, then times `repeats` calls: {'tokens_per_s', 'seconds', 'compile_s', ...}."""
  start = time.perf_counter()
  tokens = np.asarray(generate(config, params, prompts, max_new_tokens=num_new, **kwargs))
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    tokens = np.asarray(generate(config, params, prompts, max_new_tokens=num_new, **kwargs))
    times.append(time.perf_counter() - start)
  generated = int(np.sum(tokens != PAD_ID))
  return {"tokens_per_s": round(generated / min(times), 1), "seconds": round(min(times), 3),
          "generated_tokens": generated, "compile_and_first_call_s": round(compile_s, 1)}


def main(argv: list[str]) -> None:
  del argv
  model_class = architecture(_ARCHITECTURE.value)
  config = ModelConfig(architecture=_ARCHITECTURE.value, vocab_size=_VOCAB_SIZE.value,
                       d_model=_D_MODEL.value, num_heads=max(1, _D_MODEL.value // 64),
                       d_ff=4 * _D_MODEL.value,
                       num_encoder_layers=_NUM_LAYERS.value if model_class.has_encoder else 0,
                       num_decoder_layers=_NUM_LAYERS.value,
                       max_len=_PROMPT_LEN.value + max(map(int, _NEW_TOKENS.value)))
  params = jax.jit(build_model(config.eval()).init)(
      jax.random.key(0), *model_class.batch_args(dummy_batch()))["params"]
  prompts = jax.random.randint(jax.random.key(1), (_BATCH_SIZE.value, _PROMPT_LEN.value), 4,
                               config.vocab_size)
  results = {name: {n: time_generate(config, params, prompts, int(n), _REPEATS.value, **kwargs)
                    for n in _NEW_TOKENS.value}
             for name, kwargs in SETTINGS.items()}
  print(json.dumps({
      "device": jax.devices()[0].device_kind, "jax": jax.__version__,
      "model": {"architecture": config.architecture, "d_model": config.d_model,
                "num_heads": config.num_heads, "d_ff": config.d_ff, "layers": _NUM_LAYERS.value,
                "vocab_size": config.vocab_size},
      "batch_size": _BATCH_SIZE.value, "prompt_len": _PROMPT_LEN.value,
      "tokens_per_s": {name: {n: r["tokens_per_s"] for n, r in by_n.items()}
                       for name, by_n in results.items()},
      "details": results}, indent=2))


if __name__ == "__main__":
  app.run(main)
