"""Beam search: GNMT length penalty, known best sequence on a hand-set table, beam 1 = greedy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding.conftest import init_params, tiny_config
from transformer.decoding import generate
from transformer.decoding.cache import model_logits_fn
from transformer.decoding.search import beam_search, length_penalty
from transformer.models.registry import build_model
from transformer.special_ids import BOS_ID, EOS_ID, PAD_ID

A, B = 4, 5  # two ordinary tokens of a 6-token vocabulary


def table_logits_fn(table: dict[int, dict[int, float]]):
  """A bigram 'model': next-token probabilities depend only on the current token.

  The cache counts each row's steps, so beam search has a per-row leaf to reorder.
  """
  probs = np.full((6, 6), 1e-6)
  for current, nexts in table.items():
    for token, p in nexts.items():
      probs[current, token] = p
  logits = jnp.log(jnp.asarray(probs, jnp.float32))

  def logits_fn(tokens, cache):
    return logits[tokens[:, 0]], cache + 1

  return logits_fn


def run_table_search(table, beam_size, alpha, num_new=4):
  """Beam search over `table` for one example with an empty prompt: (tokens [num_new], score)."""
  search = jax.jit(functools.partial(beam_search, table_logits_fn(table), num_new=num_new,
                                     beam_size=beam_size))
  tokens, scores = search(jnp.zeros(beam_size, jnp.int32), jnp.zeros((1, 0), jnp.int32),
                          jnp.array([num_new]), alpha=alpha)
  return np.asarray(tokens[0]).tolist(), float(scores[0])


def test_length_penalty_matches_gnmt_formula():
  for length in (1, 2, 7, 50):
    for alpha in (0.0, 0.6, 1.0):
      expected = (5 + length) ** alpha / 6 ** alpha
      np.testing.assert_allclose(length_penalty(length, alpha), expected, rtol=1e-6)


def test_beam_finds_the_best_sequence_greedy_misses():
  # Greedy takes A (0.6) then EOS: P = 0.24. B (0.4) then EOS (0.9) has P = 0.36.
  table = {BOS_ID: {A: 0.6, B: 0.4}, A: {EOS_ID: 0.4, A: 0.3, B: 0.3}, B: {EOS_ID: 0.9, A: 0.1}}
  greedy_tokens, _ = run_table_search(table, beam_size=1, alpha=0.6)
  assert greedy_tokens == [A, EOS_ID, PAD_ID, PAD_ID]
  tokens, score = run_table_search(table, beam_size=2, alpha=0.6)
  assert tokens == [B, EOS_ID, PAD_ID, PAD_ID]
  np.testing.assert_allclose(score, np.log(0.4 * 0.9) / ((5 + 2) ** 0.6 / 6 ** 0.6), rtol=1e-5)


def test_length_penalty_decides_between_lengths():
  # [EOS] has P = 0.52, [A, EOS] has P = 0.48 * 0.9 = 0.432: alpha 0 prefers the short one,
  # alpha 2 the long one, by the hand-computed scores log P / ((5 + |Y|) / 6)^alpha.
  table = {BOS_ID: {EOS_ID: 0.52, A: 0.48}, A: {EOS_ID: 0.9, B: 0.1}}
  for alpha, best, p, length in ((0.0, [EOS_ID], 0.52, 1), (2.0, [A, EOS_ID], 0.432, 2)):
    tokens, score = run_table_search(table, beam_size=2, alpha=alpha)
    assert tokens[:length] == best and set(tokens[length:]) == {PAD_ID}
    np.testing.assert_allclose(score, np.log(p) / ((5 + length) / 6) ** alpha, rtol=1e-5)


def test_hypothesis_at_the_limit_finishes_without_eos():
  table = {BOS_ID: {A: 0.9, EOS_ID: 0.1}, A: {A: 0.9, EOS_ID: 0.1}}
  tokens, score = run_table_search(table, beam_size=3, alpha=0.6, num_new=3)
  assert tokens == [A, A, A]
  np.testing.assert_allclose(score, 3 * np.log(0.9) / ((5 + 3) / 6) ** 0.6, rtol=1e-4)


PROMPTS = {"encoder_decoder": [[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]],
           "decoder_only": [[5, 6, 7, 8, 9], [10, 11, 0, 0, 0]]}


@pytest.mark.parametrize("architecture", ["encoder_decoder", "decoder_only"])
def test_beam_size_1_equals_greedy(architecture):
  config = tiny_config(architecture, tie_output_embedding=False, position_encoding="rope")
  params = init_params(config, seed=2)
  prompts = jnp.array(PROMPTS[architecture], jnp.int32)
  greedy = generate(config, params, prompts, method="greedy", max_new_tokens=8)
  beam = generate(config, params, prompts, method="beam", beam_size=1, alpha=0.6,
                  max_new_tokens=8)
  np.testing.assert_array_equal(beam, greedy)
  assert len(np.unique(np.asarray(greedy))) > 2  # the model's outputs are not degenerate


@pytest.mark.parametrize("architecture", ["encoder_decoder", "decoder_only"])
def test_beam_score_equals_full_forward_score(architecture):
  """The cached, beam-reordered search scores its output as a full forward pass does."""
  config = tiny_config(architecture, tie_output_embedding=False, position_encoding="rope")
  params = init_params(config, seed=2)
  prompts = jnp.array(PROMPTS[architecture], jnp.int32)
  batch, beam_size, num_new, alpha = 2, 3, 6, 0.6
  encoder_inputs, prefixes = ((prompts, jnp.zeros((batch, 0), jnp.int32))
                              if architecture == "encoder_decoder" else (None, prompts))

  @jax.jit
  def search(params):
    logits_fn, prefill_fn, cache = model_logits_fn(config, params, encoder_inputs,
                                                   batch * beam_size, prefixes.shape[1] + num_new)
    return beam_search(logits_fn, cache, prefixes, jnp.full(batch, num_new), num_new,
                       beam_size, alpha, prefill_fn)

  tokens, scores = search(params)
  forward = jax.jit(build_model(config.eval()).apply)
  for row in range(batch):
    output = np.asarray(tokens[row])
    length = int(np.sum(output != PAD_ID))
    if architecture == "encoder_decoder":
      logits = forward({"params": params}, prompts[row:row + 1], tokens[row:row + 1])[0]
      start = 0
    else:
      prefix = np.asarray(prompts[row])[np.asarray(prompts[row]) != PAD_ID]
      sequence = np.concatenate([prefix, output[:length]])[None]
      logits = forward({"params": params}, jnp.asarray(sequence))[0]
      start = len(prefix)
    logits = np.asarray(logits, np.float64)
    logits[:, PAD_ID] = -np.inf  # decoding never emits PAD
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    total = sum(log_probs[start + i, output[i]] for i in range(length))
    np.testing.assert_allclose(scores[row], total / length_penalty(length, alpha), rtol=1e-4)
