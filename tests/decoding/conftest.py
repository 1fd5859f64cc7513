"""Tiny models shared by the decoding tests."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer.models.config import ModelConfig
from transformer.models.registry import build_model


def tiny_config(architecture: str = "encoder_decoder", **overrides) -> ModelConfig:
  """A 1-layer, d_model 16 model: decode loops over it compile in a few seconds on CPU."""
  fields = dict(architecture=architecture, vocab_size=40, d_model=16, num_heads=2, d_ff=32,
                num_encoder_layers=1, num_decoder_layers=1, max_len=32, dropout_rate=0.0)
  return ModelConfig(**{**fields, **overrides})


def init_params(config: ModelConfig, seed: int = 0, scale: float = 1.0):
  """Random params of `config`'s model, multiplied by `scale` (> 1 makes the logits peaked)."""
  model = build_model(config.eval())
  tokens = jnp.ones((1, 4), jnp.int32)
  args = (tokens, tokens) if config.architecture == "encoder_decoder" else (tokens,)
  init = jax.jit(lambda rng: jax.tree.map(lambda x: scale * x,
                                          nn.meta.unbox(model.init(rng, *args)["params"])))
  return init(jax.random.key(seed))
