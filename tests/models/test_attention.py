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


def test_decode_cache_takes_several_tokens_per_call():
  """Chunks of 3, 1 and 2 tokens through the cache give the full causal self-attention's outputs
  (at the non-padding queries; padding attends to nothing, its output is meaningless)."""
  cfg = ModelConfig(vocab_size=10, d_model=12, num_heads=3, max_len=8)
  x = np.random.default_rng(2).normal(size=(2, 6, 12)).astype(np.float32)
  segmentation = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
  full_mask = make_attention_mask(segmentation, segmentation, causal=True)
  module = MultiHeadAttention(cfg.eval())
  params = nn.meta.unbox(module.init(jax.random.PRNGKey(1), x, x, full_mask))
  expected = np.asarray(module.apply(params, x, x, full_mask))

  cached = MultiHeadAttention(cfg.decoding(), decode_cache="append")
  blank = jnp.zeros((2, cfg.max_len, 12))
  cache = cached.apply(params, blank, blank, None, mutable=["cache"])[1]["cache"]
  outputs = []
  for start, stop in ((0, 3), (3, 4), (4, 6)):
    chunk, chunk_segmentation = x[:, start:stop], segmentation[:, start:stop]
    mask = make_attention_mask(chunk_segmentation, chunk_segmentation, causal=True)
    out, updated = cached.apply({**params, "cache": cache}, chunk, chunk, mask,
                                mutable=["cache"])
    cache = updated["cache"]
    assert int(cache["cache_index"]) == stop
    outputs.append(np.asarray(out))
  valid = np.asarray(segmentation) > 0
  np.testing.assert_allclose(np.concatenate(outputs, axis=1)[valid], expected[valid], atol=1e-5)
