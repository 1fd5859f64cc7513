"""log π of response tokens: against a NumPy log-softmax of the model's own logits, for both
architectures; prompts and responses of different lengths in one batch score as they do alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.models.config import ModelConfig
from transformer.models.logprobs import (
  first_argmax,
  joined_sequences,
  next_token_logprobs,
  sequence_logprobs,
)
from transformer.models.registry import build_model
from transformer.special_ids import EOS_ID, PAD_ID
from transformer.training.state import init_params

PROMPTS = [[5, 6, 7, 8], [9, 10]]
RESPONSES = [[11, 12, EOS_ID], [13, 14, 15, 16, 17]]


def _config(architecture: str) -> ModelConfig:
  return ModelConfig(architecture=architecture, vocab_size=40, d_model=16, num_heads=2, d_ff=32,
                     num_encoder_layers=1 if architecture == "encoder_decoder" else 0,
                     num_decoder_layers=2, max_len=32, dropout_rate=0.0)


def padded(rows: list[list[int]], width: int) -> jnp.ndarray:
  return jnp.asarray([row + [PAD_ID] * (width - len(row)) for row in rows], jnp.int32)


def numpy_log_softmax_without_pad(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, np.float64).copy()
  logits[..., PAD_ID] = -np.inf
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reference_logprobs(model, params, prompt: list[int], response: list[int]) -> np.ndarray:
  """log π of each response token, from one unpadded row's logits (NumPy)."""
  if model.has_encoder:
    logits = model.apply({"params": params}, jnp.asarray([prompt]), jnp.asarray([response]))[0]
    offset = 0
  else:
    logits = model.apply({"params": params}, jnp.asarray([prompt + response]))[0]
    offset = len(prompt)
  table = numpy_log_softmax_without_pad(np.asarray(logits))
  return np.array([table[offset + i, token] for i, token in enumerate(response)])


def test_next_token_logprobs_exclude_pad():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 7)), jnp.float32)
  got = np.asarray(next_token_logprobs(logits))
  assert np.all(got[:, PAD_ID] == -np.inf)
  np.testing.assert_allclose(got, numpy_log_softmax_without_pad(np.asarray(logits)), atol=1e-6)
  np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-6)


def test_joined_sequences_put_each_response_after_its_prompt():
  targets, weights, starts = joined_sequences(padded(PROMPTS, 5), padded(RESPONSES, 6))
  np.testing.assert_array_equal(targets, [
      [5, 6, 7, 8, 11, 12, EOS_ID, 0, 0, 0, 0],
      [9, 10, 13, 14, 15, 16, 17, 0, 0, 0, 0]])
  np.testing.assert_array_equal(weights, [
      [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0],
      [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(starts, [4, 2])


@pytest.mark.parametrize("architecture", ["decoder_only", "encoder_decoder"])
@pytest.mark.parametrize("extra_padding", [0, 3])
def test_sequence_logprobs_equal_numpy_on_each_row_alone(architecture, extra_padding):
  cfg = _config(architecture)
  model = build_model(cfg.eval())
  params = init_params(model, jax.random.PRNGKey(1))
  prompts = padded(PROMPTS, 4 + extra_padding)
  responses = padded(RESPONSES, 5 + extra_padding)
  per_token, total = jax.jit(lambda p, x, y: sequence_logprobs(model, p, x, y))(
      params, prompts, responses)
  assert per_token.shape == responses.shape and total.shape == (2,)
  for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES)):
    expected = reference_logprobs(model, params, prompt, response)
    np.testing.assert_allclose(per_token[row, :len(response)], expected, atol=1e-5)
    np.testing.assert_array_equal(per_token[row, len(response):], 0.0)
    np.testing.assert_allclose(total[row], expected.sum(), atol=1e-5)


def test_first_argmax_is_argmax_ties_included():
  rng = np.random.default_rng(3)
  logits = rng.integers(0, 3, size=(5, 6, 7)).astype(np.float32)  # many ties
  np.testing.assert_array_equal(first_argmax(jnp.asarray(logits)), np.argmax(logits, -1))
  logits[0, 0, 4] = logits[0, 1, 2] = logits[0, 1, 5] = np.nan  # NaN is maximal, as in argmax
  logits[1, 2] = np.nan
  np.testing.assert_array_equal(first_argmax(jnp.asarray(logits)), np.argmax(logits, -1))


@pytest.mark.parametrize("architecture", ["decoder_only", "encoder_decoder"])
def test_sequence_logprobs_of_k_responses_per_prompt_equal_the_prompts_repeated(architecture):
  """Responses [k b', R] to prompts [b', P] (rows i k .. i k + k - 1 answer prompt i, an encoder
  encodes it once) score as with each prompt repeated k times."""
  model = build_model(_config(architecture).eval())
  params = init_params(model, jax.random.PRNGKey(1))
  prompts = padded(PROMPTS, 4)
  responses = padded(RESPONSES + RESPONSES[::-1] + [[18, EOS_ID], [19]], 5)  # 3 per prompt
  shared = sequence_logprobs(model, params, prompts, responses)
  repeated = sequence_logprobs(model, params, jnp.repeat(prompts, 3, axis=0), responses)
  for got, expected in zip(shared, repeated):
    np.testing.assert_allclose(got, expected, atol=1e-5)
