"""Cached (and uncached) step-by-step decoding reproduces the full forward pass's logits; a
prefill in one pass leaves the cache that feeding its tokens one per step leaves."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding.conftest import init_params, tiny_config
from transformer.decoding.cache import model_logits_fn
from transformer.models.registry import build_model
from transformer.models.sequences import shift_right


@pytest.mark.parametrize("architecture,position_encoding,norm_placement,use_cache", [
    ("encoder_decoder", "sinusoidal", "post", True),
    ("encoder_decoder", "rope", "pre", True),
    ("encoder_decoder", "learned", "post", False),
    ("decoder_only", "learned", "pre", True),
    ("decoder_only", "rope", "post", True),
    ("decoder_only", "sinusoidal", "post", False),
    ("lstm", "sinusoidal", "post", True),
    ("gated_cnn", "sinusoidal", "post", True),
])
def test_step_logits_equal_full_forward(architecture, position_encoding, norm_placement,
                                        use_cache):
  config = tiny_config(architecture, position_encoding=position_encoding,
                       norm_placement=norm_placement, num_encoder_layers=2, num_decoder_layers=2,
                       conv_kernel_size=3)
  params = init_params(config)
  rng = np.random.default_rng(0)
  targets = jnp.asarray(rng.integers(4, config.vocab_size, (2, 7)), jnp.int32)
  inputs = jnp.asarray(rng.integers(4, config.vocab_size, (2, 5)), jnp.int32)
  inputs = inputs.at[1, 3:].set(0)  # a padded encoder input
  forward = jax.jit(build_model(config.eval()).apply)
  if architecture == "encoder_decoder":
    full = forward({"params": params}, inputs, targets)
  else:
    full = forward({"params": params}, targets)
    inputs = None
  decoder_inputs = shift_right(targets, jnp.ones_like(targets))

  @jax.jit
  def step_by_step(params, inputs, decoder_inputs):  # -> logits [batch, length, vocab]
    logits_fn, _, cache = model_logits_fn(config, params, inputs, num_rows=2, max_decode_len=9,
                                       use_cache=use_cache)
    step = lambda cache, tokens: logits_fn(tokens[:, None], cache)[::-1]
    return jax.lax.scan(step, cache, decoder_inputs.T)[1].transpose(1, 0, 2)

  stepped = step_by_step(params, inputs, decoder_inputs)
  for t in range(targets.shape[1]):
    np.testing.assert_allclose(stepped[:, t], full[:, t], atol=1e-5, rtol=1e-5,
                               err_msg=f"step {t}")


@pytest.mark.parametrize("architecture,position_encoding,use_cache", [
    ("decoder_only", "sinusoidal", True),
    ("decoder_only", "rope", True),
    ("encoder_decoder", "learned", True),
    ("decoder_only", "learned", False),
])
def test_prefill_leaves_the_step_by_step_cache(architecture, position_encoding, use_cache):
  """Prefilling the first `length` of 6 tokens in one pass: the cache equals that of `length`
  single-token steps where it was written (and in its counters), and the next step's logits
  equal both the step-by-step ones and the full forward pass's (no cache)."""
  config = tiny_config(architecture, position_encoding=position_encoding, num_decoder_layers=2)
  params = init_params(config, seed=1)
  rng = np.random.default_rng(1)
  targets = jnp.asarray(rng.integers(4, config.vocab_size, (2, 7)), jnp.int32)
  inputs = (jnp.asarray(rng.integers(4, config.vocab_size, (2, 5)), jnp.int32)
            if architecture == "encoder_decoder" else None)
  decoder_inputs = shift_right(targets, jnp.ones_like(targets))
  length = 4

  @functools.partial(jax.jit, static_argnames="prefill")
  def prefilled(params, length, prefill):  # -> (cache, logits [batch, vocab] of the next step)
    logits_fn, prefill_fn, cache = model_logits_fn(config, params, inputs, num_rows=2,
                                                   max_decode_len=9, use_cache=use_cache,
                                                   prefill=prefill)
    cache = prefill_fn(decoder_inputs[:, :6], length, cache)
    logits, _ = logits_fn(jax.lax.dynamic_slice_in_dim(decoder_inputs, length, 1, axis=1), cache)
    return cache, logits

  one_pass, one_pass_logits = prefilled(params, length, prefill=True)
  stepped, stepped_logits = prefilled(params, length, prefill=False)
  forward = jax.jit(build_model(config.eval()).apply)
  full = (forward({"params": params}, inputs, targets) if inputs is not None
          else forward({"params": params}, targets))
  np.testing.assert_allclose(one_pass_logits, stepped_logits, atol=1e-5)
  np.testing.assert_allclose(one_pass_logits, full[:, length], atol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one_pass), jax.tree.leaves(stepped)):
    name = jax.tree_util.keystr(path)
    if a.ndim > 0 and "cross_attention" not in name:  # positions >= length may be stale
      a, b = a[..., :length], b[..., :length]  # keys/values [rows, heads, d_k, positions]
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)
