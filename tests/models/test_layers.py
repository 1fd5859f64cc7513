"""LayerNorm, FFN and a whole encoder layer against the plain-NumPy reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref

from transformer.models.attention import make_attention_mask
from transformer.models.config import ModelConfig
from transformer.models.layers import EncoderLayer, FeedForward, layer_norm

CFG = ModelConfig(vocab_size=10, d_model=8, num_heads=2, d_ff=16).eval()


def random(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_layer_norm_matches_numpy():
  x = random((3, 4, 8)) * 5 + 2
  module = layer_norm(CFG, "norm")
  params = nn.meta.unbox(module.init(jax.random.PRNGKey(0), x))
  # non-trivial gain, bias
  params = jax.tree_util.tree_map(lambda p: p + random(p.shape, 1), params)
  np.testing.assert_allclose(module.apply(params, x),
                             ref.layer_norm(x.astype(np.float64), params["params"]), atol=1e-5)


def test_ffn_matches_numpy():
  x = random((2, 3, 8))
  module = FeedForward(CFG)
  params = nn.meta.unbox(module.init(jax.random.PRNGKey(0), x))
  np.testing.assert_allclose(module.apply(params, x),
                             ref.ffn(x.astype(np.float64), params["params"]), atol=1e-5)


def test_encoder_layer_matches_numpy():
  x = random((1, 6, 8))
  segmentation = jnp.array([[1, 1, 1, 1, 0, 0]])
  mask = make_attention_mask(segmentation, segmentation, causal=False)
  positions = jnp.arange(6)[None]
  module = EncoderLayer(CFG)
  params = nn.meta.unbox(module.init(jax.random.PRNGKey(0), x, mask, positions))["params"]
  out = np.asarray(module.apply({"params": params}, x, mask, positions))
  valid = np.array([1, 1, 1, 1, 0, 0], bool)
  h = x[0].astype(np.float64)
  h = ref.add_norm(h,
                   ref.attention(h, h, valid[:, None] & valid[None, :], params["self_attention"]),
                   params["self_attention_norm"])
  h = ref.add_norm(h, ref.ffn(h, params["ffn"]), params["ffn_norm"])
  np.testing.assert_allclose(out[0][valid], h[valid], atol=1e-5)
