"""Sinusoidal positions, rotary positions and the scaled, tied token embedding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from numpy_reference import sinusoid

from transformer.models.config import ModelConfig
from transformer.models.embeddings import TokenEmbedding, apply_rope, sinusoidal_positions


def test_sinusoidal_matches_the_papers_formula():
  positions = jnp.arange(50)[None]
  np.testing.assert_allclose(sinusoidal_positions(positions, 16)[0], sinusoid(50, 16), atol=1e-5)


def test_sinusoidal_at_packed_positions_restarts():
  positions = jnp.array([[0, 1, 2, 0, 1]])
  table = sinusoidal_positions(positions, 8)[0]
  np.testing.assert_allclose(table[3:], table[:2], atol=0)


def test_rope_matches_rotation_matrices_and_is_relative():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 5, 2, 8)).astype(np.float32)
  positions = jnp.arange(5)[None]
  out = np.asarray(apply_rope(jnp.asarray(x), positions))
  for pos in range(5):
    for i in range(4):
      theta = pos / 10000 ** (2 * i / 8)
      rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
      np.testing.assert_allclose(out[0, pos, :, 2 * i:2 * i + 2],
                                 x[0, pos, :, 2 * i:2 * i + 2] @ rotation.T, atol=1e-5)
  # <rope(q, m), rope(k, n)> depends on m - n only.
  q, k = x[:, :1], x[:, 1:2]
  def score(m, n):
    return float(jnp.sum(apply_rope(jnp.asarray(q), jnp.array([[m]]))
                         * apply_rope(jnp.asarray(k), jnp.array([[n]]))))
  np.testing.assert_allclose(score(7, 3), score(14, 10), rtol=1e-4)


def test_embedding_is_scaled_and_tied():
  cfg = ModelConfig(vocab_size=11, d_model=6, num_heads=2)
  module = TokenEmbedding(cfg)
  tokens = jnp.array([[1, 5, 10]])
  params = module.init(jax.random.PRNGKey(0), tokens)
  table = np.asarray(jax.tree_util.tree_leaves(params)[0])
  np.testing.assert_allclose(module.apply(params, tokens)[0], table[[1, 5, 10]] * math.sqrt(6),
                             rtol=1e-6)
  x = np.random.default_rng(0).normal(size=(1, 2, 6)).astype(np.float32)
  np.testing.assert_allclose(module.apply(params, jnp.asarray(x), method=module.attend)[0],
                             x[0] @ table.T, rtol=1e-5, atol=1e-6)
