"""Multi-head attention and masks against the plain-NumPy reference."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref

from transformer.models.attention import MultiHeadAttention, make_attention_mask
from transformer.models.config import ModelConfig


def test_mask_padding_causal_and_segments():
  segmentation = jnp.array([[1, 1, 2, 2, 0]])
  mask = np.asarray(make_attention_mask(segmentation, segmentation, causal=True))[0, 0]
  expected = np.array([[1, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0],
                       [0, 0, 1, 0, 0],
                       [0, 0, 1, 1, 0],
                       [0, 0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(mask, expected)
  full = np.asarray(make_attention_mask(segmentation, segmentation, causal=False))[0, 0]
  np.testing.assert_array_equal(full, np.array([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0],
                                                [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]], bool))


def test_multi_head_attention_matches_numpy():
  cfg = ModelConfig(vocab_size=10, d_model=12, num_heads=3).eval()
  rng = np.random.default_rng(0)
  xq = rng.normal(size=(2, 5, 12)).astype(np.float32)
  xkv = rng.normal(size=(2, 7, 12)).astype(np.float32)
  q_seg = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
  kv_seg = np.array([[1, 1, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0, 0]])
  mask = make_attention_mask(jnp.asarray(q_seg), jnp.asarray(kv_seg), causal=False)
  module = MultiHeadAttention(cfg)
  params = nn.meta.unbox(module.init(jax.random.PRNGKey(1), xq, xkv, mask))
  out = np.asarray(module.apply(params, xq, xkv, mask))
  for b in range(2):
    allowed = (q_seg[b][:, None] > 0) & (kv_seg[b][None, :] > 0)
    expected = ref.attention(xq[b].astype(np.float64), xkv[b].astype(np.float64), allowed,
                             params["params"])
    valid = q_seg[b] > 0
    np.testing.assert_allclose(out[b][valid], expected[valid], atol=1e-5)
