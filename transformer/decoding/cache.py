"""A model's next-token function for the decoding loops, with or without the KV cache.

Every loop in `transformer.decoding` advances a batch of rows one decoder token
at a time through a `LogitsFn`:

    logits_fn(tokens int [rows, 1], cache) -> (logits float32 [rows, vocab], cache)

where `tokens` is each row's current decoder input and `cache` a pytree whose
array leaves have `rows` as their leading axis (scalar leaves, such as the
cache index, are step counters shared by all rows). Beam search reorders rows by
gathering every non-scalar leaf, so any state of this shape works; the tests pass
hand-made tables.

A loop first feeds the part of the prompts that every row has through a `PrefillFn`:

    prefill_fn(tokens int [rows, n], length int [], cache) -> cache

leaves the cache as `length` (<= n, traced) calls of logits_fn on tokens[:, 0], ...,
tokens[:, length - 1] would, up to positions >= length, which may hold stale values
that the steps from `length` on overwrite before reading them. `step_prefill` makes
one of any LogitsFn (the reference: one call per token); `model_logits_fn` gives a
model with `prefill` one pass over all n tokens (causal within them), then winds the
step counters back to `length`.

`model_logits_fn` builds it for a model of `build_model` (an architecture without
`kv_cache` has only the uncached path):
- cached (default): the flax 'cache' collection of the model's decode variant (the
  Transformer's keys/values, the LSTM's recurrent state, the gated CNN's receptive field),
  flattened to {path: array}. The encoder runs once; the first decode call creates the
  cache, projecting the cross-attention keys/values and transposing the output table
  once; they stay out of the loop state (`split_fixed`); each step then costs one token.
- uncached (the reference for benchmarks): a token buffer [rows, max_decode_len]
  run through the whole decoder every step, reading the logits at the step's
  position (the prefix recomputed every step, at the buffer's fixed shape); its
  prefill only writes the buffer.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax import lax

from transformer.models.config import ModelConfig
from transformer.models.embeddings import OUTPUT_TABLE
from transformer.models.registry import architecture, build_model
from transformer.models.scan_conversion import convert_layout
from transformer.models.sequences import segmentation_or_default
from transformer.special_ids import BOS_ID, PAD_ID

Cache = Any
LogitsFn = Callable[[jnp.ndarray, Cache], tuple[jnp.ndarray, Cache]]
PrefillFn = Callable[[jnp.ndarray, jnp.ndarray, Cache], Cache]
# The cache entries no step changes: `layers.DecoderLayer`'s cross-attention keys/values and
# the transposed output table of `embeddings.TokenEmbedding`.
FIXED_NAMES = ("cross_attention", OUTPUT_TABLE)


def step_prefill(logits_fn: LogitsFn) -> PrefillFn:
  """The PrefillFn that feeds the tokens one per call of logits_fn (a traced-length loop)."""

  def prefill_fn(tokens: jnp.ndarray, length: jnp.ndarray, cache: Cache) -> Cache:
    step = lambda i, cache: logits_fn(lax.dynamic_slice_in_dim(tokens, i, 1, axis=1), cache)[1]
    return lax.fori_loop(0, length, step, cache)

  return prefill_fn


def split_fixed(cache: Cache) -> tuple[dict[tuple[str, ...], jnp.ndarray], Cache]:
  """Splits a model's 'cache' collection into the part no step changes and the rest.

  The fixed part, the cross-attention keys/values (modules named 'cross_attention') and the
  transposed output table (`OUTPUT_TABLE`), stays out of the loops' state: the loops do not
  carry it through their iterations, and beam search does not reorder it between beams (every
  beam of an example has the same encoder output: gathering it cost a copy of every
  cross-attention key and value per step).

  Returns:
    (fixed: the flattened {path: array} of the entries named in `FIXED_NAMES`,
     the rest: a flattened {path: array}, the state the loops carry).
  """
  flat = traverse_util.flatten_dict(cache)
  is_fixed = lambda path: any(name in path for name in FIXED_NAMES)
  fixed = {path: x for path, x in flat.items() if is_fixed(path)}
  return fixed, {path: x for path, x in flat.items() if not is_fixed(path)}


def model_logits_fn(config: ModelConfig, params: Any, inputs: jnp.ndarray | None, num_rows: int,
                    max_decode_len: int, use_cache: bool = True,
                    prefill: bool = True) -> tuple[LogitsFn, PrefillFn, Cache]:
  """The next-token function of a Transformer, its prefill function and its initial cache.

  Args:
    config: the model config (any variant; the decode/eval variants are derived here).
    params: the model's params pytree (without the 'params' key).
    inputs: encoder input tokens int [batch, input_len] (PAD-padded) for an architecture with
      an encoder; None for one without (its prompt is a decoder prefix).
    num_rows: decoding rows, batch * copies per example (the beam size; 1 for greedy and
      sampling), example-major: row = example * copies + copy.
    max_decode_len: decoder positions the cache holds (BOS + prompt + new tokens).
    use_cache: False gives the uncached reference that recomputes the prefix every step.
    prefill: False gives `step_prefill` (the prompt one token per step, the reference) even
      where the architecture can prefill in one pass.

  Returns:
    (logits_fn, prefill_fn, cache): see the module docstring.
  """
  model_class = architecture(config.architecture)
  model = build_model(config.decoding() if use_cache else config.eval())
  variables = {"params": params}
  encoder_args: tuple[jnp.ndarray, ...] = ()
  if model_class.has_encoder:
    if inputs is None:
      raise ValueError("an encoder-decoder model needs encoder inputs")
    segmentation = segmentation_or_default(inputs, None)
    encoded = model.apply(variables, inputs, segmentation, method="encode")
    copies = num_rows // inputs.shape[0]
    encoder_args = tuple(jnp.repeat(x, copies, axis=0) for x in (encoded, segmentation))
  elif inputs is not None:
    raise ValueError("a model without an encoder takes its prompt as a decoder prefix, "
                     "not as inputs")

  def decode(extra: dict[str, Any], tokens: jnp.ndarray, **kwargs: Any) -> Any:
    """model.decode on [rows, length] decoder input tokens with the encoder output, if any."""
    return model.apply({**variables, **extra}, *encoder_args, tokens, method="decode", **kwargs)

  if use_cache:
    # The loops see the unrolled layout (every leaf rows first, as beam search gathers it);
    # a scanned model's cache is stacked [layers, rows, ...] (`scan_conversion.py`).
    def unrolled(cache: Cache) -> Cache:
      return convert_layout(cache, config, config.scan_layers, False)

    # Creating the cache runs the decoder once over a dummy full-length input; under jit
    # only the cross-attention key/value projections of it survive dead-code elimination.
    dummy = jnp.full((num_rows, max_decode_len), BOS_ID, jnp.int32)
    fixed, initial = split_fixed(unrolled(decode({}, dummy, mutable=["cache"])[1]["cache"]))

    def cached_decode(tokens: jnp.ndarray, cache: Cache) -> tuple[jnp.ndarray, Cache]:
      """Logits [rows, n, vocab] of n tokens and the updated cache (without the fixed part)."""
      whole = traverse_util.unflatten_dict({**fixed, **cache})
      logits, updated = decode({"cache": convert_layout(whole, config, False, config.scan_layers)},
                               tokens, mutable=["cache"])
      return logits, split_fixed(unrolled(updated["cache"]))[1]

    def cached_logits_fn(tokens: jnp.ndarray, cache: Cache) -> tuple[jnp.ndarray, Cache]:
      logits, cache = cached_decode(tokens, cache)
      return logits[:, 0], cache

    def cached_prefill_fn(tokens: jnp.ndarray, length: jnp.ndarray, cache: Cache) -> Cache:
      updated = cached_decode(tokens, cache)[1]
      return jax.tree.map(lambda old, new: old + length if new.ndim == 0 else new,
                          cache, updated)

    return (cached_logits_fn,
            cached_prefill_fn if prefill and model_class.prefill else step_prefill(
                cached_logits_fn),
            initial)

  def uncached_logits_fn(tokens: jnp.ndarray, cache: Cache) -> tuple[jnp.ndarray, Cache]:
    buffer = cache["tokens"].at[:, cache["index"]].set(tokens[:, 0])
    logits = decode({}, buffer)[:, cache["index"]]
    return logits, {"tokens": buffer, "index": cache["index"] + 1}

  def uncached_prefill_fn(tokens: jnp.ndarray, length: jnp.ndarray, cache: Cache) -> Cache:
    buffer = lax.dynamic_update_slice_in_dim(cache["tokens"], tokens, cache["index"], axis=1)
    return {"tokens": buffer, "index": cache["index"] + length}

  return (uncached_logits_fn,
          uncached_prefill_fn if prefill else step_prefill(uncached_logits_fn),
          {"tokens": jnp.full((num_rows, max_decode_len), PAD_ID, jnp.int32),
           "index": jnp.zeros((), jnp.int32)})
