"""Token embeddings and position information (paper §3.4 and §3.5).

- `TokenEmbedding`: a [vocab, d_model] table; lookups are multiplied by sqrt(d_model),
  and `attend` reuses the table as the pre-softmax projection (weight tying).
- `sinusoidal_positions`: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),
  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)), at arbitrary (packed) positions.
- `AddPositions`: adds sinusoidal or learned encodings to the scaled embeddings
  (rotary positions are applied inside attention instead, see `apply_rope`).
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from transformer.models.config import ModelConfig


def _angles(positions: jnp.ndarray, dim: int) -> jnp.ndarray:
  """pos / 10000^(2i/dim) for i < dim/2: int [..., length] -> float32 [..., length, dim/2]."""
  inv_freq = jnp.exp(-math.log(10000.0) * 2.0 * jnp.arange(dim // 2, dtype=jnp.float32) / dim)
  return positions[..., None].astype(jnp.float32) * inv_freq


def sinusoidal_positions(positions: jnp.ndarray, d_model: int) -> jnp.ndarray:
  """The paper's sinusoidal encodings, sin on even and cos on odd dimensions.

  Args:
    positions: int [..., length], position of each token (restarting per packed segment).
    d_model: encoding width (even).

  Returns:
    float32 [..., length, d_model].
  """
  angles = _angles(positions, d_model)  # [..., length, d_model/2]
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], d_model)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
  """Rotary position embedding (Su et al., 2021): rotates each (even, odd) pair of features.

  Args:
    x: [batch, length, heads, head_dim] queries or keys (head_dim even).
    positions: int [batch, length].

  Returns:
    [batch, length, heads, head_dim], x rotated by angle position * 10000^(-2i/head_dim).
  """
  head_dim = x.shape[-1]
  angles = _angles(positions, head_dim)[:, :, None, :]  # [batch, length, 1, head_dim/2]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], head_dim // 2, 2)
  even, odd = pairs[..., 0], pairs[..., 1]
  rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
  return rotated.reshape(x.shape).astype(x.dtype)


OUTPUT_TABLE = "output_table"  # the decode-mode cache entry of the transposed token table


class TokenEmbedding(nn.Module):
  """A token table used for lookups (scaled by sqrt(d_model)) and, tied, for output logits."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=cfg.d_model**-0.5),
                                     ("vocab", "embed")),
        (cfg.vocab_size, cfg.d_model), cfg.jnp_param_dtype)

  def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
    """int [batch, length] -> [batch, length, d_model], multiplied by sqrt(d_model)."""
    cfg = self.config
    vectors = jnp.take(jnp.asarray(self.embedding, cfg.jnp_dtype), tokens, axis=0)
    return vectors * jnp.asarray(math.sqrt(cfg.d_model), cfg.jnp_dtype)

  def attend(self, x: jnp.ndarray) -> jnp.ndarray:
    """[batch, length, d_model] -> logits [batch, length, vocab] = x @ embedding^T.

    As one 2-D matmul: written as an einsum over [b, l, d], XLA lays the logits' gradient out
    transposed for the embedding's gradient, a copy of all [b * l, vocab] of it (on CPU a
    tenth of the train step; docs/performance.md).
    """
    table = jnp.asarray(self.embedding, self.config.jnp_dtype)
    logits = x.reshape(-1, x.shape[-1]) @ self._output_table(table)
    return logits.reshape(*x.shape[:-1], table.shape[0])

  def _output_table(self, table: jnp.ndarray) -> jnp.ndarray:
    """table^T [d_model, vocab]; in decode mode transposed once, when the cache is created,
    and read from the 'cache' collection (`OUTPUT_TABLE`) by every decoding step: transposed
    inside the decoding loop, XLA on CPU re-laid the table out at every step, a third of the
    step's output projection (docs/performance.md)."""
    if not self.config.decode:
      return table.T
    if not self.has_variable("cache", OUTPUT_TABLE):
      self.put_variable("cache", OUTPUT_TABLE, table.T)
    return self.get_variable("cache", OUTPUT_TABLE)


class AddPositions(nn.Module):
  """Adds sinusoidal or learned position encodings; identity for rotary positions."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, length, d_model], positions: int [batch, length] -> [batch, length, d_model]."""
    cfg = self.config
    if cfg.position_encoding == "sinusoidal":
      table = sinusoidal_positions(positions, cfg.d_model)
    elif cfg.position_encoding == "learned":
      table = nn.Embed(cfg.max_len, cfg.d_model, dtype=cfg.jnp_dtype,
                       param_dtype=cfg.jnp_param_dtype,
                       embedding_init=nn.with_logical_partitioning(
                           nn.initializers.normal(stddev=0.02), (None, "embed")),
                       name="position_embedding")(positions)
    else:  # rope: positions enter through the attention queries and keys
      return x
    return x + table.astype(x.dtype)
