"""The Transformer's layers (paper §3.1, §3.3): FFN, encoder layer, decoder layer.

Each sublayer is wrapped as "add & norm" with residual dropout (§5.4):
  post-LN (the paper):  x <- LayerNorm(x + Dropout(Sublayer(x)))
  pre-LN:               x <- x + Dropout(Sublayer(LayerNorm(x)))
"""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from transformer.models.attention import MultiHeadAttention
from transformer.models.config import ModelConfig
from transformer.models.dropout import Dropout


def layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
  """LayerNorm with gain and bias, computed in float32."""
  return nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=jnp.float32,
                      param_dtype=config.jnp_param_dtype, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class FeedForward(nn.Module):
  """FFN(x) = max(0, x W1 + b1) W2 + b2, applied at every position: [b, l, d_model] -> same."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cfg = self.config

    def dense(features: int, axes: tuple[str, str], name: str) -> nn.Dense:
      return nn.Dense(features, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype, name=name,
                      kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                               axes),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]))

    hidden = nn.relu(dense(cfg.d_ff, ("embed", "mlp"), "wi")(x))  # [batch, length, d_ff]
    return dense(cfg.d_model, ("mlp", "embed"), "wo")(hidden)


class _Layer(nn.Module):
  """Shared add & norm wrapper of the encoder and decoder layers."""

  config: ModelConfig

  def residual(self, x: jnp.ndarray, sublayer: Callable[[jnp.ndarray], jnp.ndarray],
               name: str) -> jnp.ndarray:
    """Wraps sublayer (param scope `name`) in residual dropout and LayerNorm `name`_norm."""
    cfg = self.config
    norm = layer_norm(cfg, f"{name}_norm")
    pre = cfg.norm_placement == "pre"
    y = sublayer(norm(x).astype(cfg.jnp_dtype) if pre else x)
    x = x + Dropout(cfg.dropout_rate)(y, deterministic=cfg.deterministic)
    out = x if pre else norm(x)
    self.sow("intermediates", f"{name}_add_norm", out)
    return out.astype(cfg.jnp_dtype)


class EncoderLayer(_Layer):
  """Self-attention then FFN, each with add & norm: [batch, length, d_model] -> same."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, length, d_model]; mask: bool [batch, 1, length, length]; positions int [b, l]."""
    cfg = self.config
    attention = MultiHeadAttention(cfg, use_rope=cfg.position_encoding == "rope",
                                   name="self_attention")
    x = self.residual(x, lambda h: attention(h, h, mask, positions, positions), "self_attention")
    return self.residual(x, FeedForward(cfg, name="ffn"), "ffn")


class DecoderLayer(_Layer):
  """Masked self-attention, cross-attention over the encoder output (if any), then FFN."""

  @nn.compact
  def __call__(self, x: jnp.ndarray, self_mask: jnp.ndarray, positions: jnp.ndarray,
               encoded: jnp.ndarray | None = None,
               cross_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """Runs one decoder layer.

    Args:
      x: [batch, target_len, d_model] decoder state.
      self_mask: bool [batch, 1, target_len, target_len], causal.
      positions: int [batch, target_len].
      encoded: [batch, input_len, d_model] encoder output; None for a decoder-only model.
      cross_mask: bool [batch, 1, target_len, input_len].

    Returns:
      [batch, target_len, d_model].
    """
    cfg = self.config
    self_attention = MultiHeadAttention(cfg, use_rope=cfg.position_encoding == "rope",
                                        decode_cache="append", name="self_attention")
    x = self.residual(x, lambda h: self_attention(h, h, self_mask, positions, positions),
                      "self_attention")
    if encoded is not None:
      cross_attention = MultiHeadAttention(  # Q: decoder, K, V: encoder
          cfg, decode_cache="fixed", name="cross_attention")
      x = self.residual(x, lambda h: cross_attention(h, encoded, cross_mask), "cross_attention")
    return self.residual(x, FeedForward(cfg, name="ffn"), "ffn")
