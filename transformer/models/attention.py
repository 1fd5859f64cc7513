"""Multi-head scaled dot-product attention (paper §3.2) and its masks.

  Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
  MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
      head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Masks are boolean, True where a query may attend to a key. Padding and packing
are both expressed through segmentation ids: tokens of one packed example share
an id >= 1, padding has id 0 and neither attends nor is attended to.

Every intermediate (Q, K, V, scores, weights, ...) is sown into the
'intermediates' collection, so `transformer.explain` can print the model's own
numbers; sowing is free unless that collection is requested as mutable.

Incremental decoding (`config.decode`) keeps keys and values in the 'cache'
collection, following flax's attention: a first call with the full decode
length creates the cache (see `transformer.decoding.cache`), then each call
processes one new token.
- decoder self-attention (`decode_cache='append'`): cached_key / cached_value
  [batch, heads, d_k, max_decode_len] and cache_index; each step writes its key
  and value at cache_index and attends to positions <= cache_index.
- cross-attention (`decode_cache='fixed'`): cached_key / cached_value
  [batch, heads, d_k, input_len], projected from the encoder output once, when
  the cache is created, and reused by every step.
Cached keys and values are stored heads-major with the length last, the layout the
two attention products read them in: stored [batch, length, heads, d_k], XLA on CPU
copied every layer's cache into that layout at every step, 45% of a decoding step
(docs/performance.md).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from transformer.models.config import ModelConfig
from transformer.models.dropout import Dropout
from transformer.models.embeddings import apply_rope


def make_attention_mask(query_segmentation: jnp.ndarray, key_segmentation: jnp.ndarray,
                        causal: bool) -> jnp.ndarray:
  """Boolean attention mask from segmentation ids (0 = padding).

  Args:
    query_segmentation: int [batch, q_len].
    key_segmentation: int [batch, kv_len].
    causal: also forbid key index > query index (decoder self-attention; needs q_len == kv_len).

  Returns:
    bool [batch, 1, q_len, kv_len]: True where the query may attend to the key.
  """
  q = query_segmentation[:, :, None]
  k = key_segmentation[:, None, :]
  mask = (q == k) & (q > 0) & (k > 0)
  if causal:
    q_len, kv_len = query_segmentation.shape[1], key_segmentation.shape[1]
    mask &= jnp.arange(q_len)[:, None] >= jnp.arange(kv_len)[None, :]
  return mask[:, None]


class HeadProjection(nn.Module):
  """The params of one of Q, K, V: kernel [d_model, heads, d_k] and bias [heads, d_k].

  Named and initialised as `nn.DenseGeneral(features=(heads, d_k))`'s (Xavier-uniform over
  the kernel flattened to [d_model, heads * d_k], zero bias), so checkpoints are those of a
  DenseGeneral; returned rather than applied, so `project` can run Q, K and V as one matmul.
  """

  config: ModelConfig

  @nn.compact
  def __call__(self) -> tuple[jnp.ndarray, jnp.ndarray]:
    cfg = self.config
    axes = ("embed", "heads", "kv")

    def xavier_flat(rng: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype) -> jnp.ndarray:
      flat = (shape[0], math.prod(shape[1:]))
      return nn.initializers.xavier_uniform()(rng, flat, dtype).reshape(shape)

    kernel = self.param("kernel", nn.with_logical_partitioning(xavier_flat, axes),
                        (cfg.d_model, cfg.num_heads, cfg.head_dim), cfg.jnp_param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
                      (cfg.num_heads, cfg.head_dim), cfg.jnp_param_dtype)
    return kernel, bias


def project(x: jnp.ndarray, params: list[tuple[jnp.ndarray, jnp.ndarray]],
            dtype: jnp.dtype) -> list[jnp.ndarray]:
  """x W_i + b_i for each (W_i [d_model, heads, d_k], b_i [heads, d_k]) as one matmul.

  Args:
    x: [batch, len, d_model].
    params: n (kernel, bias) pairs.
    dtype: the computation dtype.

  Returns:
    n arrays [batch, len, heads, d_k]. (One [d_model, n * heads * d_k] matmul instead of n
    runs ~15% faster, gradient included, on CPU at d_model 256: docs/performance.md.)
  """
  kernels = jnp.concatenate([jnp.asarray(k, dtype) for k, _ in params], axis=1)
  biases = jnp.concatenate([jnp.asarray(b, dtype) for _, b in params], axis=0)
  y = jnp.einsum("bld,dhk->blhk", jnp.asarray(x, dtype), kernels) + biases
  return jnp.split(y, len(params), axis=2)


def heads_major(x: jnp.ndarray) -> jnp.ndarray:
  """Keys or values [batch, length, heads, d] -> [batch, heads, d, length], the layout
  `attention_weights` and `MultiHeadAttention`'s weighted sum read them in."""
  return jnp.transpose(x, (0, 2, 3, 1))


def attention_weights(query: jnp.ndarray, key: jnp.ndarray,
                      mask: jnp.ndarray | None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Scaled scores Q K^T / sqrt(d_k) and their softmax, per head, in float32.

  Args:
    query: [batch, q_len, heads, d_k].
    key: [batch, heads, d_k, kv_len] (`heads_major`).
    mask: bool [batch, 1, q_len, kv_len] or None.

  Returns:
    (scaled scores [batch, heads, q_len, kv_len] with masked entries at the dtype minimum,
     weights [batch, heads, q_len, kv_len] summing to 1 over kv_len).
  """
  d_k = query.shape[-1]
  scores = jnp.einsum("bqhd,bhdk->bhqk", query, key).astype(jnp.float32) / jnp.sqrt(
      jnp.float32(d_k))
  if mask is not None:
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  return scores, jax.nn.softmax(scores, axis=-1)


class MultiHeadAttention(nn.Module):
  """h parallel attention heads with Q/K/V/output projections (all with biases).

  Param names: query, key, value (kernels [d_model, heads, d_k]) and out ([heads, d_v, d_model]).

  Attributes:
    config: the model config; `config.decode` switches the cache on.
    use_rope: rotate queries and keys by their positions (rotary position encoding).
    decode_cache: what to cache in decode mode: 'none' (encoder), 'append'
      (decoder self-attention) or 'fixed' (cross-attention); see the module docstring.
  """

  config: ModelConfig
  use_rope: bool = False
  decode_cache: str = "none"

  @nn.compact
  def __call__(self, inputs_q: jnp.ndarray, inputs_kv: jnp.ndarray, mask: jnp.ndarray | None,
               positions_q: jnp.ndarray | None = None,
               positions_kv: jnp.ndarray | None = None) -> jnp.ndarray:
    """Attends from inputs_q to inputs_kv.

    Args:
      inputs_q: [batch, q_len, d_model] (the decoder state for cross-attention).
      inputs_kv: [batch, kv_len, d_model] (the encoder output for cross-attention).
      mask: bool [batch, 1, q_len, kv_len] or None.
      positions_q, positions_kv: int [batch, len], needed when use_rope.

    Returns:
      [batch, q_len, d_model].
    """
    cfg = self.config
    names = ("query", "key", "value")
    reuse_cache = (cfg.decode and self.decode_cache == "fixed"
                   and self.has_variable("cache", "cached_key"))
    if reuse_cache:  # cross-attention keys/values projected (heads-major) when the cache was made
      (query,) = project(inputs_q, [HeadProjection(cfg, name="query")()], cfg.jnp_dtype)
      key = self.get_variable("cache", "cached_key")
      value = self.get_variable("cache", "cached_value")
    elif inputs_q is inputs_kv:  # self-attention: Q, K and V as one matmul
      query, key, value = project(inputs_q, [HeadProjection(cfg, name=n)() for n in names],
                                  cfg.jnp_dtype)
    else:  # cross-attention: Q from the decoder, K and V (one matmul) from the encoder
      (query,) = project(inputs_q, [HeadProjection(cfg, name="query")()], cfg.jnp_dtype)
      key, value = project(inputs_kv, [HeadProjection(cfg, name=n)() for n in names[1:]],
                           cfg.jnp_dtype)
    if self.use_rope:
      query, key = apply_rope(query, positions_q), apply_rope(key, positions_kv)
    # "query" etc. name the projections' params
    self.sow("intermediates", "q", query)
    if not reuse_cache:
      self.sow("intermediates", "k", key)
      self.sow("intermediates", "v", value)
      key, value = heads_major(key), heads_major(value)
    if cfg.decode and self.decode_cache == "fixed" and not reuse_cache:
      self.put_variable("cache", "cached_key", key)
      self.put_variable("cache", "cached_value", value)
    if cfg.decode and self.decode_cache == "append":
      key, value, mask = self._append_to_cache(key, value, mask)

    scores, weights = attention_weights(query, key, mask)
    self.sow("intermediates", "scaled_scores", scores)
    self.sow("intermediates", "weights", weights)
    weights = Dropout(cfg.attention_dropout_rate)(weights, deterministic=cfg.deterministic)
    heads = jnp.einsum("bhqk,bhdk->bqhd", weights.astype(value.dtype), value)
    self.sow("intermediates", "weighted_values", heads)  # [batch, q_len, heads, d_v]

    return nn.DenseGeneral(
        features=cfg.d_model, axis=(-2, -1), dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype, name="out",
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                 ("heads", "kv", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(heads)

  def _append_to_cache(self, key: jnp.ndarray, value: jnp.ndarray, mask: jnp.ndarray | None
                       ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray | None]:
    """Decode-mode self-attention: stores this call's keys and values, returns the whole cache.

    The first call creates zero cached_key / cached_value shaped like its key and
    value, [batch, heads, d_k, max_decode_len], and returns its inputs unchanged.
    Every later call takes key and value [batch, heads, d_k, n] of n new tokens (one
    decoding step, or a prompt prefilled at once), writes them at cache_index ..
    cache_index + n - 1 and advances cache_index by n.

    Args:
      key, value: [batch, heads, d_k, n] of the new tokens (`heads_major`).
      mask: bool [batch, 1, n, n], the causal mask within the new tokens, or None.

    Returns:
      (keys [batch, heads, d_k, max_decode_len], values [batch, heads, d_v, max_decode_len],
       mask bool [batch, 1, n, max_decode_len]: new token i (at cache_index + i) sees the
       cached positions before cache_index, unless `mask` lets it see nothing (padding), and
       the new tokens as `mask` allows; never a position after its own).
    """
    initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    cache_index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return key, value, mask
    index, num_new, max_len = cache_index.value, key.shape[3], cached_key.value.shape[3]
    cached_key.value = lax.dynamic_update_slice(cached_key.value, key, (0, 0, 0, index))
    cached_value.value = lax.dynamic_update_slice(cached_value.value, value, (0, 0, 0, index))
    cache_index.value = index + num_new
    causal = jnp.arange(max_len)[None, :] <= index + jnp.arange(num_new)[:, None]  # [n, max_len]
    if mask is None:
      return cached_key.value, cached_value.value, causal[None, None]
    attends = jnp.any(mask, axis=-1, keepdims=True)  # [batch, 1, n, 1]: False for padding
    full = lax.dynamic_update_slice(jnp.broadcast_to(attends, mask.shape[:3] + (max_len,)), mask,
                                    (0, 0, 0, index))
    return cached_key.value, cached_value.value, full & causal
