"""`generate`: the one decoding entry point of the trainer's eval and the generate command.

    tokens = generate(model_config, params, prompts, method="beam", beam_size=4, alpha=0.6)

The prompt is the encoder input of an encoder-decoder and the decoder prefix of
a decoder-only model. The whole decode (encoder, cache creation, loop) is one
jit-compiled function per (config, method, shapes, beam_size).
"""

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from transformer.decoding.cache import model_logits_fn
from transformer.decoding.prompts import Tokenizer, decode_outputs, encode_prompts
from transformer.decoding.sampling import decode_loop, greedy, sampler
from transformer.decoding.search import beam_search
from transformer.models.config import ModelConfig
from transformer.models.registry import architecture
from transformer.special_ids import PAD_ID

METHODS = ("greedy", "beam", "sample")
EXTRA_LENGTH = 50  # the paper's maximum output length: input length + 50


def num_new_tokens(config: ModelConfig, prompt_len: int, max_new_tokens: int | None) -> int:
  """The output width: max_new_tokens, or by default prompt_len + 50 clipped to the model.

  The decoder sees BOS, the prompt (decoder-only) and all but the last new token, so a
  decoder-only model needs prompt_len + num_new <= max_len, an encoder-decoder num_new <= max_len.
  """
  decoder_prompt = 0 if architecture(config.architecture).has_encoder else prompt_len
  room = config.max_len - decoder_prompt
  if max_new_tokens is None:
    if room < 1:
      raise ValueError(f"prompts of {prompt_len} tokens leave no room to generate "
                       f"(model max_len {config.max_len})")
    return min(prompt_len + EXTRA_LENGTH, room)
  if not 1 <= max_new_tokens <= room:
    raise ValueError(f"max_new_tokens must be in [1, {room}] for prompts of {prompt_len} tokens "
                     f"(model max_len {config.max_len}), got {max_new_tokens}")
  return max_new_tokens


def generate(config: ModelConfig, params: Any, prompts: jnp.ndarray, *, method: str = "greedy",
             max_new_tokens: int | None = None, beam_size: int = 4, alpha: float = 0.6,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             rng: jax.Array | None = None, num_samples: int = 1, use_cache: bool = True,
             prefill: bool = True,
             with_log_probs: bool = False) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
  """Continues (decoder-only) or transduces (encoder-decoder) a batch of prompts.

  Args:
    config: the model config (architecture, sizes; variants are derived).
    params: the model's params pytree.
    prompts: int32 [batch, prompt_len], right-padded with PAD; no BOS/EOS.
    method: 'greedy', 'beam' or 'sample'.
    max_new_tokens: output width; None: each row's prompt length + 50 (the paper), within
      the model's max_len.
    beam_size: hypotheses per example ('beam').
    alpha: GNMT length penalty exponent ('beam').
    temperature: > 0, divides the log-probabilities ('sample').
    top_k: sample among the k most likely tokens; 0: no limit ('sample').
    top_p: sample from the smallest set with probability >= top_p; 1: no limit ('sample').
    rng: PRNG key ('sample'); the same key gives the same samples.
    num_samples: samples drawn per prompt ('sample'), in rows prompt * num_samples + j; an
      encoder encodes each prompt once. The same draws as `num_samples` = 1 on the prompts
      repeated that way (`jnp.repeat(prompts, num_samples, axis=0)`).
    use_cache: False recomputes the whole prefix every step (a reference for benchmarks). An
      architecture without `kv_cache` always takes this path.
    prefill: False feeds the prompt one token per step (the reference for tests and
      benchmarks) instead of in one pass (see `cache.py`).
    with_log_probs: also return each new token's log-probability ('greedy', 'sample').

  Returns:
    int32 [batch * num_samples, num_new]: new tokens of each prompt, EOS included where
    generated, then PAD. With `with_log_probs`, (tokens, float32 [batch * num_samples,
    num_new]): log π of each new token under
    the model itself, 0 on PAD: the untempered, unfiltered log-softmax (PAD excluded), equal
    to the teacher-forced `models.logprobs.sequence_logprobs` of the same tokens, whatever
    temperature, top_k and top_p drew them.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if beam_size < 1:
    raise ValueError(f"beam_size must be >= 1, got {beam_size}")
  if alpha < 0:
    raise ValueError(f"alpha must be >= 0, got {alpha}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0 (use method='greedy' for argmax), got {temperature}")
  if not 0 <= top_k <= config.vocab_size:
    raise ValueError(f"top_k must be in [0, {config.vocab_size}], got {top_k}")
  if not 0 < top_p <= 1:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  if with_log_probs and method == "beam":
    raise ValueError("with_log_probs is for method='greedy' or 'sample', not 'beam'")
  if num_samples < 1 or (num_samples > 1 and method != "sample"):
    raise ValueError(f"num_samples must be >= 1, and 1 unless method='sample', got "
                     f"{num_samples} for method={method!r}")
  if method == "sample" and rng is None:
    raise ValueError("method='sample' needs an rng key (seed)")
  prompts = jnp.asarray(prompts, jnp.int32)
  if prompts.ndim != 2:
    raise ValueError(f"prompts must be int [batch, length], got shape {prompts.shape}")
  model_class = architecture(config.architecture)
  if model_class.has_encoder and not 1 <= prompts.shape[1] <= config.max_len:
    raise ValueError(f"encoder inputs must have 1 to max_len={config.max_len} tokens, "
                     f"got {prompts.shape[1]}")
  num_new = num_new_tokens(config, prompts.shape[1], max_new_tokens)
  outputs = _generate(config, params, prompts, rng if rng is not None else jax.random.key(0),
                   jnp.float32(alpha), jnp.float32(temperature), jnp.int32(top_k),
                   jnp.float32(top_p), method=method, num_new=num_new,
                   limited=max_new_tokens is not None,
                   beam_size=beam_size if method == "beam" else 1, num_samples=num_samples,
                   use_cache=use_cache and model_class.kv_cache, prefill=prefill)
  return outputs if with_log_probs or method == "beam" else outputs[0]


@functools.partial(jax.jit, static_argnums=0, static_argnames=(
    "method", "num_new", "limited", "beam_size", "num_samples", "use_cache", "prefill"))
def _generate(config: ModelConfig, params: Any, prompts: jnp.ndarray, rng: jax.Array,
              alpha: jnp.ndarray, temperature: jnp.ndarray, top_k: jnp.ndarray,
              top_p: jnp.ndarray, *, method: str, num_new: int, limited: bool, beam_size: int,
              num_samples: int, use_cache: bool,
              prefill: bool) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
  """The jit-compiled body of `generate` (arguments validated there): beam search's tokens,
  or (tokens, log-probabilities) of greedy decoding and sampling."""
  rows = prompts.shape[0] * num_samples
  prompt_lengths = jnp.repeat(jnp.sum(prompts != PAD_ID, axis=1), num_samples)
  max_new = jnp.full((rows,), num_new) if limited else jnp.minimum(
      prompt_lengths + EXTRA_LENGTH, num_new)
  if architecture(config.architecture).has_encoder:
    encoder_inputs, prefixes = prompts, jnp.zeros((rows, 0), jnp.int32)
  else:
    encoder_inputs, prefixes = None, jnp.repeat(prompts, num_samples, axis=0)
  logits_fn, prefill_fn, cache = model_logits_fn(
      config, params, encoder_inputs, rows * beam_size,
      max_decode_len=prefixes.shape[1] + num_new, use_cache=use_cache, prefill=prefill)
  if method == "beam":
    return beam_search(logits_fn, cache, prefixes, max_new, num_new, beam_size, alpha,
                       prefill_fn)[0]
  choose = greedy if method == "greedy" else sampler(temperature, top_k, top_p)
  return decode_loop(logits_fn, cache, prefixes, max_new, num_new, choose, rng, prefill_fn)


def generate_texts(config: ModelConfig, params: Any, tokenizer: Tokenizer, texts: Sequence[str],
                   *, batch_size: int = 32, seed: int = 0, **generate_kwargs: Any) -> list[str]:
  """One output text per prompt text: `encode_prompts`, `generate` per batch, `decode_outputs`.

  Args:
    config, params: the model.
    tokenizer: the run's tokenizer.
    texts: prompts (see `prompts.py` for empty, too long and out-of-vocabulary prompts).
    batch_size: prompts decoded together.
    seed: sampling seed; batch i uses fold_in(key(seed), i).
    **generate_kwargs: method, max_new_tokens, beam_size, alpha, temperature, top_k, top_p.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  prompts = encode_prompts(tokenizer, texts, config, generate_kwargs.get("max_new_tokens"))
  outputs = []
  for i, start in enumerate(range(0, len(texts), batch_size)):
    batch = prompts[start:start + batch_size]
    batch = batch[:, :max(1, int(np.max(np.sum(batch != PAD_ID, axis=1))))]  # drop shared padding
    tokens = generate(config, params, batch, rng=jax.random.fold_in(jax.random.key(seed), i),
                      **generate_kwargs)
    outputs += decode_outputs(tokenizer, np.asarray(tokens))
  return outputs
