"""Parameter counts of the paper's sizes (derived from the formula) and config validation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from transformer.models.config import ModelConfig, named_size
from transformer.models.registry import build_model


def expected_count(vocab: int, d: int, d_ff: int, n_enc: int, n_dec: int) -> int:
  """Shared embeddings (tied output, no output bias), biases on every projection, LN gain + bias."""
  attention = 4 * (d * d + d)
  ffn = d * d_ff + d_ff + d_ff * d + d
  norm = 2 * d
  encoder_layer = attention + ffn + 2 * norm
  decoder_layer = 2 * attention + ffn + 3 * norm
  return vocab * d + n_enc * encoder_layer + n_dec * decoder_layer


def count(config: ModelConfig) -> int:
  model = build_model(config)
  tokens = jnp.ones((1, 4), jnp.int32)
  args = (tokens, tokens) if config.architecture == "encoder_decoder" else (tokens,)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args))
  return sum(x.size for x in jax.tree_util.tree_leaves(nn.meta.unbox(shapes["params"])))


def test_base_has_the_formula_count():
  assert expected_count(37000, 512, 2048, 6, 6) == 63_082_496
  assert count(named_size("base", vocab_size=37000)) == 63_082_496


def test_big_is_within_one_percent_of_213m():
  n = count(named_size("big", vocab_size=37000))
  assert n == expected_count(37000, 1024, 4096, 6, 6)
  assert abs(n - 213e6) / 213e6 < 0.01


def test_decoder_only_count():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=100, d_model=16, num_heads=2, d_ff=32,
                    num_decoder_layers=3)
  d, ff = 16, 32
  layer = 4 * (d * d + d) + (d * ff + ff + ff * d + d) + 2 * 2 * d
  assert count(cfg) == 100 * d + 3 * layer


@pytest.mark.parametrize("field, value, message", [
    ("num_heads", 3, "divisible by ModelConfig.num_heads"),
    ("position_encoding", "alibi", "ModelConfig.position_encoding"),
    ("norm_placement", "middle", "ModelConfig.norm_placement"),
    ("architecture", 3, "ModelConfig.architecture"),
    ("dropout_rate", 1.5, "ModelConfig.dropout_rate"),
    ("vocab_size", 0, "ModelConfig.vocab_size"),
    ("dtype", "int8", "ModelConfig.dtype"),
])
def test_invalid_fields_are_named(field, value, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig(**{field: value})


def test_an_unknown_architecture_is_named_when_the_model_is_built():
  with pytest.raises(ValueError,
                     match=r"ModelConfig.architecture must be one of \('encoder_decoder'"):
    build_model(ModelConfig(architecture="encoder_only"))


def test_variants_differ_only_in_mode():
  cfg = named_size("base", vocab_size=100)
  assert not cfg.train().deterministic and cfg.eval().deterministic
  assert cfg.decoding().decode and not cfg.eval().decode
  assert cfg.eval().d_model == cfg.train().d_model == 512
