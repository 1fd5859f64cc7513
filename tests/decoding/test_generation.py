"""`generate`: prefilling the prompts in one pass decodes exactly what feeding them one token per
step does, and what recomputing the whole prefix without a cache does (mixed prompt lengths)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding.conftest import init_params, tiny_config
from transformer.decoding import generate

PROMPTS = jnp.array([[5, 6, 7, 8, 9, 10], [11, 12, 0, 0, 0, 0], [13, 14, 15, 16, 0, 0]],
                    jnp.int32)


@pytest.mark.parametrize("method,position_encoding", [
    ("greedy", "rope"), ("greedy", "sinusoidal"), ("beam", "rope"), ("sample", "learned")])
def test_prefill_decodes_as_step_by_step_and_as_recompute(method, position_encoding):
  config = tiny_config("decoder_only", tie_output_embedding=False, num_decoder_layers=2,
                       position_encoding=position_encoding)
  params = init_params(config, seed=2)
  kwargs = dict(method=method, max_new_tokens=8, beam_size=3, rng=jax.random.key(4),
                temperature=1.5)
  prefilled = np.asarray(generate(config, params, PROMPTS, **kwargs))
  stepped = np.asarray(generate(config, params, PROMPTS, prefill=False, **kwargs))
  recomputed = np.asarray(generate(config, params, PROMPTS, use_cache=False, prefill=False,
                                   **kwargs))
  np.testing.assert_array_equal(prefilled, stepped)
  np.testing.assert_array_equal(prefilled, recomputed)
  assert len(np.unique(prefilled)) > 3  # the outputs are not degenerate


def test_prefill_log_probs_equal_step_by_step():
  config = tiny_config("decoder_only", tie_output_embedding=False, position_encoding="rope")
  params = init_params(config, seed=3)
  tokens, log_probs = generate(config, params, PROMPTS, max_new_tokens=8, with_log_probs=True)
  stepped_tokens, stepped_log_probs = generate(config, params, PROMPTS, max_new_tokens=8,
                                               with_log_probs=True, prefill=False)
  np.testing.assert_array_equal(tokens, stepped_tokens)
  np.testing.assert_allclose(log_probs, stepped_log_probs, atol=1e-5)
