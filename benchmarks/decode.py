"""Decoding throughput: cached greedy, sampling, beam 4 and uncached greedy; the peer; prefill.

  python -m benchmarks.decode                 # the reference setting, a few minutes on 2 CPU cores
  python -m benchmarks.decode --peer_models=PATH        # and the Flax WMT example's decoder
  python -m benchmarks.decode --d_model=512 --num_layers=6 --batch_size=32   # the base model
  python -m benchmarks.decode --architecture=lstm --prefill_len=0   # the LSTM's state vs recompute

The reference setting (the defaults): a randomly initialised pre-LN encoder-decoder, d_model
256, 4 + 4 layers, 4 heads, d_ff 1024, vocabulary 8192, decodes a batch of 8 random prompts of
128 tokens (the encoder input of an encoder-decoder, the decoder prefix of the others: lstm,
gated_cnn, decoder_only, with --num_layers decoder layers) into 64 new tokens. For each method
and number of new tokens it reports generated tokens per second (output tokens up to EOS,
summed over the batch, divided by the best of --repeats wall times after one compiling call).

--peer_models=PATH imports the Flax WMT example's models.py from PATH at run time (not part of
this project) and times its cached greedy decoding (`Transformer.encode`, then
`Transformer.decode` on one token at a time against its `decode=True` cache, under `lax.scan`,
as its predict_step runs it) at the same sizes, alternating with ours over --rounds rounds:
tokens/s of both (the median round) and the median of the per-round ratios ours / peer.
Ours counts the tokens it emits up to EOS (it stops a row there and the batch once every row
has stopped); the peer's scan has no end token and runs all steps: batch * new tokens.

The prefill comparison (--prefill_len > 0): a decoder-only model of the same sizes feeds a
prompt of --prefill_len tokens (BOS and the prompt but its last token, which the first
decoding step feeds) into an empty cache in one pass and one token per step; it reports the
best of --repeats times of each and the speedup.
"""

import dataclasses
import functools
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from transformer.decoding import generate
from transformer.decoding.cache import model_logits_fn
from transformer.models.config import ModelConfig
from transformer.models.registry import ARCHITECTURES, architecture, build_model, dummy_batch
from transformer.special_ids import BOS_ID, EOS_ID, PAD_ID

_ARCHITECTURE = flags.DEFINE_enum("architecture", "encoder_decoder", list(ARCHITECTURES),
                                  "The model decoded.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts decoded together.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 128,
                                   "Tokens per prompt (encoder input, or decoder prefix).")
_D_MODEL = flags.DEFINE_integer("d_model", 256, "Model width (heads: d_model / 64, d_ff: 4x).")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 4, "Encoder and decoder layers each.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8192, "Vocabulary size.")
_NEW_TOKENS = flags.DEFINE_list("new_tokens", ["64"], "Numbers of new tokens to time.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per setting (the best is reported).")
_PEER_MODELS = flags.DEFINE_string(
    "peer_models", None, "Path of the Flax WMT example's models.py to compare against "
    "(encoder_decoder only); unset: no comparison.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds of ours and the peer's greedy.")
_PREFILL_LEN = flags.DEFINE_integer("prefill_len", 256,
                                    "Prompt tokens of the prefill comparison; 0: skip it.")

SETTINGS = {  # name -> generate() keyword arguments
    "greedy_cached": dict(method="greedy"),
    "sample_cached": dict(method="sample"),
    "beam4_cached": dict(method="beam", beam_size=4, alpha=0.6),
    "greedy_uncached": dict(method="greedy", use_cache=False),
}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  """(wall seconds of fn() until its result is ready, the result)."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return time.perf_counter() - start, result


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
  """(first call's seconds (compiling), best of `repeats` later calls' seconds, last result)."""
  first, result = timed(fn)
  times = []
  for _ in range(repeats):
    seconds, result = timed(fn)
    times.append(seconds)
  return first, min(times), result


def emitted_tokens(tokens: np.ndarray) -> int:
  """Tokens of int [batch, num_new] up to and including each row's first EOS."""
  tokens = np.asarray(tokens)
  ended = np.cumsum(tokens == EOS_ID, axis=1) - (tokens == EOS_ID) > 0  # after the first EOS
  return int(np.sum(~ended & (tokens != PAD_ID)))


def time_generate(config: ModelConfig, params, prompts: jnp.ndarray, num_new: int,
                  repeats: int, **kwargs) -> dict[str, float]:
  """Compiles once, then times `repeats` calls: {'tokens_per_s', 'seconds', 'compile_s', ...}."""
  compile_s, seconds, tokens = best_time(
      lambda: generate(config, params, prompts, max_new_tokens=num_new, rng=jax.random.key(0),
                       **kwargs), repeats)
  generated = emitted_tokens(tokens)
  return {"tokens_per_s": round(generated / seconds, 1), "seconds": round(seconds, 3),
          "generated_tokens": generated, "compile_and_first_call_s": round(compile_s, 1)}


def load_peer(path: str) -> ModuleType:
  """The peer's models.py, imported from `path`."""
  spec = importlib.util.spec_from_file_location("peer_models", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"--peer_models: cannot import {path!r}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def peer_greedy_fn(peer: ModuleType, config: ModelConfig, batch: int, input_len: int,
                   num_new: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """The peer's jitted cached greedy decoding with random params, in its reference config.

  Returns:
    decode(inputs int [batch, input_len]) -> tokens int [batch, num_new].
  """
  peer_config = peer.TransformerConfig(
      vocab_size=config.vocab_size, output_vocab_size=config.vocab_size, share_embeddings=True,
      logits_via_embedding=True, emb_dim=config.d_model, num_heads=config.num_heads,
      num_layers=config.num_decoder_layers, qkv_dim=config.d_model, mlp_dim=config.d_ff,
      max_len=config.max_len, dropout_rate=0.1, attention_dropout_rate=0.1, deterministic=True)
  decode_config = peer_config.replace(decode=True)
  inputs_shape, targets_shape = (batch, input_len), (batch, num_new)
  params = jax.jit(peer.Transformer(peer_config).init)(
      jax.random.key(0), jnp.ones(inputs_shape, jnp.int32),
      jnp.ones(targets_shape, jnp.int32))["params"]

  @jax.jit
  def decode(params: Any, inputs: jnp.ndarray) -> jnp.ndarray:
    model = peer.Transformer(decode_config)
    cache = model.init(jax.random.key(0), jnp.ones(inputs_shape, jnp.int32),
                       jnp.ones(targets_shape, jnp.int32))["cache"]
    encoded = model.apply({"params": params}, inputs, method=model.encode)

    def step(carry: tuple, _: None) -> tuple:
      tokens, cache = carry
      logits, updated = model.apply({"params": params, "cache": cache}, encoded, inputs, tokens,
                                    mutable=["cache"], method=model.decode)
      tokens = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)[:, None]
      return (tokens, updated["cache"]), tokens[:, 0]

    first = jnp.zeros((batch, 1), jnp.int32)  # the peer's start token (0)
    return jax.lax.scan(step, (first, cache), None, length=num_new)[1].T

  return lambda inputs: decode(params, inputs)


def compare_with_peer(config: ModelConfig, params, prompts: jnp.ndarray, num_new: int,
                      path: str, rounds: int) -> dict[str, Any]:
  """Ours and the peer's cached greedy, alternating: median tokens/s and the paired ratio."""
  peer_decode = peer_greedy_fn(load_peer(path), config, *prompts.shape, num_new)
  ours = lambda: generate(config, params, prompts, method="greedy", max_new_tokens=num_new)
  peer = lambda: peer_decode(prompts)
  compile_s = {name: timed(fn)[0] for name, fn in (("ours", ours), ("peer", peer))}
  rates: dict[str, list[float]] = {"ours": [], "peer": []}
  for _ in range(rounds):
    seconds, tokens = timed(ours)
    rates["ours"].append(emitted_tokens(tokens) / seconds)
    seconds, tokens = timed(peer)
    rates["peer"].append(tokens.size / seconds)
  ratios = [a / b for a, b in zip(rates["ours"], rates["peer"])]
  return {"tokens_per_s": {name: round(statistics.median(r), 1) for name, r in rates.items()},
          "ratio_ours_over_peer": round(statistics.median(ratios), 3),
          "per_round_ratios": [round(r, 3) for r in ratios], "rounds": rounds,
          "compile_and_first_call_s": {k: round(v, 1) for k, v in compile_s.items()}}


def compare_prefill(base: ModelConfig, batch: int, prompt_len: int,
                    repeats: int) -> dict[str, Any]:
  """A decoder-only model of base's sizes: seconds to feed a prompt in one pass vs per token."""
  config = dataclasses.replace(base, architecture="decoder_only", num_encoder_layers=0,
                               max_len=prompt_len + 1)
  params = jax.jit(build_model(config.eval()).init)(
      jax.random.key(0), *architecture("decoder_only").batch_args(dummy_batch()))["params"]
  prompts = jax.random.randint(jax.random.key(2), (batch, prompt_len), 4, config.vocab_size)
  inputs = jnp.concatenate([jnp.full((batch, 1), BOS_ID), prompts[:, :-1]], axis=1)

  def feed(prefill: bool) -> Callable[[Any, jnp.ndarray], Any]:
    def run(params: Any, inputs: jnp.ndarray) -> Any:
      _, prefill_fn, cache = model_logits_fn(config, params, None, batch, prompt_len + 1,
                                             prefill=prefill)
      return prefill_fn(inputs, jnp.int32(prompt_len), cache)
    return jax.jit(run)

  results = {}
  for name, prefill in (("one_pass", True), ("per_token", False)):
    compile_s, seconds, _ = best_time(functools.partial(feed(prefill), params, inputs), repeats)
    results[name] = {"seconds": round(seconds, 4), "prompt_tokens_per_s": round(
        batch * prompt_len / seconds, 1), "compile_and_first_call_s": round(compile_s, 1)}
  return {"prompt_len": prompt_len, "batch_size": batch, "layers": config.num_decoder_layers,
          **results, "speedup": round(results["per_token"]["seconds"]
                                      / results["one_pass"]["seconds"], 2)}


def main(argv: list[str]) -> None:
  del argv
  model_class = architecture(_ARCHITECTURE.value)
  config = ModelConfig(architecture=_ARCHITECTURE.value, vocab_size=_VOCAB_SIZE.value,
                       d_model=_D_MODEL.value, num_heads=max(1, _D_MODEL.value // 64),
                       d_ff=4 * _D_MODEL.value, norm_placement="pre",
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
  report = {
      "device": jax.devices()[0].device_kind, "jax": jax.__version__,
      "model": {"architecture": config.architecture, "d_model": config.d_model,
                "num_heads": config.num_heads, "d_ff": config.d_ff, "layers": _NUM_LAYERS.value,
                "vocab_size": config.vocab_size, "norm_placement": config.norm_placement},
      "batch_size": _BATCH_SIZE.value, "prompt_len": _PROMPT_LEN.value,
      "tokens_per_s": {name: {n: r["tokens_per_s"] for n, r in by_n.items()}
                       for name, by_n in results.items()},
      "details": results}
  if _PEER_MODELS.value:
    if not model_class.has_encoder:
      raise ValueError("--peer_models compares encoder-decoders: use "
                       "--architecture=encoder_decoder")
    report["peer"] = compare_with_peer(config, params, prompts, int(_NEW_TOKENS.value[0]),
                                       _PEER_MODELS.value, _ROUNDS.value)
  if _PREFILL_LEN.value:
    report["prefill"] = compare_prefill(config, _BATCH_SIZE.value, _PREFILL_LEN.value,
                                        _REPEATS.value)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
