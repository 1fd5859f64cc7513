"""Cached (and uncached) step-by-step decoding reproduces the full forward pass's logits."""

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
    logits_fn, cache = model_logits_fn(config, params, inputs, num_rows=2, max_decode_len=9,
                                       use_cache=use_cache)
    step = lambda cache, tokens: logits_fn(tokens[:, None], cache)[::-1]
    return jax.lax.scan(step, cache, decoder_inputs.T)[1].transpose(1, 0, 2)

  stepped = step_by_step(params, inputs, decoder_inputs)
  for t in range(targets.shape[1]):
    np.testing.assert_allclose(stepped[:, t], full[:, t], atol=1e-5, rtol=1e-5,
                               err_msg=f"step {t}")
