"""The classic neural language models beside the Transformer: an LSTM and a gated CNN.

Both have the call signature and the shift-right semantics of `DecoderOnly`:

  targets [b, l] --shift right per segment (BOS first)--> embed * sqrt(d_model), dropout
      --> num_decoder_layers x (LSTM layer | gated convolution block), dropout
      --> tied projection (embedding^T) --> logits [b, l, vocab]

so logits at position i depend on targets[:i] of the same packed segment only.
Neither uses positions (order comes from the recurrence or the convolution taps), so
`targets_position` is accepted and ignored. Packing: the LSTM's state is reset at each
segment start, and a convolution tap that would reach into the previous segment reads
zeros, so a packed row gives exactly the logits of its segments run separately.

- `LSTMLanguageModel`: Zaremba et al. (2014) style: stacked LSTM layers of width
  d_model, dropout between layers (not on the recurrence). The input projection of all
  steps is one matmul; `jax.lax.scan` runs only the recurrent part (`lstm_step`).
- `GatedConvLanguageModel`: Dauphin et al. (2017), "Language Modeling with Gated
  Convolutional Networks": residual blocks h + A ⊗ σ(B), where [A, B] is a causal 1-D
  convolution of width k = conv_kernel_size (position t sees t-k+1..t). L blocks see
  L(k-1)+1 tokens back.

With `config.decode` both run one token per call against a 'cache' collection, like the
Transformer's KV cache (`transformer.decoding` drives it; a first call with the full decode
length creates the cache and returns the full-sequence logits):
- LSTM: each layer's recurrent state, `cell` and `hidden` [batch, d_model], carried from step
  to step (one step costs one `lstm_step`, not a scan over the prefix);
- gated CNN: each block's receptive field, `window` [batch, k - 1, d_model], the block's last
  k - 1 inputs (zeros before the sequence starts, as the taps of the full pass read).

The n-gram baseline is count-based, not a Flax module: see `transformer/models/ngram.py`.
"""

import functools
from collections.abc import Mapping
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer.models.config import ModelConfig
from transformer.models.dropout import Dropout
from transformer.models.embeddings import TokenEmbedding
from transformer.models.sequences import segment_starts, segmentation_or_default, shift_right


def lstm_step(recurrent_kernel: jnp.ndarray, carry: tuple[jnp.ndarray, jnp.ndarray],
              inputs: tuple[jnp.ndarray, jnp.ndarray]
              ) -> tuple[tuple[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
  """One LSTM step, the state zeroed first where a segment starts.

  Gates in the order input, forget, cell, output:
    i, f, g, o = split(x W + b + h U);  c' = σ(f) c + σ(i) tanh(g);  h' = σ(o) tanh(c').

  Args:
    recurrent_kernel: U [hidden, 4 * hidden].
    carry: (c, h), each [batch, hidden].
    inputs: (x W + b [batch, 4 * hidden], reset bool [batch]).

  Returns:
    ((c', h'), h'), the new state and the step's output [batch, hidden].
  """
  projected, reset = inputs
  c, h = (jnp.where(reset[:, None], 0.0, s).astype(s.dtype) for s in carry)
  i, f, g, o = jnp.split(projected + h @ recurrent_kernel, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), h


def _forget_bias_one(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jnp.ndarray:
  """LSTM bias [4 * hidden]: 1 on the forget gate, 0 elsewhere (Jozefowicz et al., 2015)."""
  del key
  hidden = shape[0] // 4
  return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)


class LSTMLayer(nn.Module):
  """An LSTM of width d_model over a packed sequence: [batch, length, d_model] -> same shape."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray, segmentation: jnp.ndarray) -> jnp.ndarray:
    """Runs the recurrence left to right, resetting (c, h) to zero at each segment start.

    Args:
      x: [batch, length, d_model] inputs.
      segmentation: int [batch, length] segment ids (0 = padding).

    Returns:
      [batch, length, d_model]: the hidden state h after each step, dropout applied.
    """
    cfg = self.config
    d, dtype = cfg.d_model, cfg.jnp_dtype
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", "mlp")), (d, 4 * d), cfg.jnp_param_dtype)
    recurrent_kernel = self.param("recurrent_kernel", nn.with_logical_partitioning(
        nn.initializers.orthogonal(), ("embed", "mlp")), (d, 4 * d), cfg.jnp_param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(_forget_bias_one, ("mlp",)),
                      (4 * d,), cfg.jnp_param_dtype)
    # [b, l, 4d]
    projected = x.astype(dtype) @ jnp.asarray(kernel, dtype) + jnp.asarray(bias, dtype)
    batch = x.shape[0]
    step = functools.partial(lstm_step, jnp.asarray(recurrent_kernel, dtype))
    if cfg.decode and self.has_variable("cache", "cell"):
      h = self._step_from_cache(step, projected)
    else:
      zeros = jnp.zeros((batch, d), dtype)
      if cfg.decode:  # the first call creates the state: zeros, as at a segment start
        self.variable("cache", "cell", lambda: zeros)
        self.variable("cache", "hidden", lambda: zeros)
      _, h = jax.lax.scan(step, (zeros, zeros), (projected.swapaxes(0, 1),
                                                 segment_starts(segmentation).swapaxes(0, 1)))
      h = h.swapaxes(0, 1)
    return Dropout(cfg.dropout_rate)(h, deterministic=cfg.deterministic)

  def _step_from_cache(self, step, projected: jnp.ndarray) -> jnp.ndarray:
    """Decode mode: one `lstm_step` from the cached (cell, hidden), which it then replaces.

    Args:
      step: `lstm_step` with the recurrent kernel bound.
      projected: x W + b [batch, 1, 4 * d_model] of this call's one token.

    Returns:
      [batch, 1, d_model]: the new hidden state.
    """
    if projected.shape[1] != 1:
      raise ValueError(f"decode mode takes one token per call, got {projected.shape[1]}")
    cell, hidden = self.variable("cache", "cell"), self.variable("cache", "hidden")
    no_reset = jnp.zeros(projected.shape[:1], bool)
    (cell.value, hidden.value), h = step((cell.value, hidden.value), (projected[:, 0], no_reset))
    return h[:, None]


def causal_taps(x: jnp.ndarray, segmentation: jnp.ndarray, width: int) -> jnp.ndarray:
  """The inputs a causal convolution sees, zero where a tap leaves the sequence or segment.

  Args:
    x: [batch, length, d].
    segmentation: int [batch, length].
    width: kernel width k.

  Returns:
    [batch, length, k, d]: taps[:, t, j] = x[:, t - j] if t - j >= 0 and in t's segment, else 0.
  """
  length = x.shape[1]
  taps = []
  for j in range(width):
    shifted = jnp.pad(x, ((0, 0), (j, 0), (0, 0)))[:, :length]
    shifted_segment = jnp.pad(segmentation, ((0, 0), (j, 0)), constant_values=-1)[:, :length]
    taps.append(jnp.where((shifted_segment == segmentation)[..., None], shifted, 0).astype(x.dtype))
  return jnp.stack(taps, axis=2)


class GatedConvBlock(nn.Module):
  """A residual gated convolution block: x + dropout(A ⊗ σ(B)), [A, B] = causal_conv(x)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray, segmentation: jnp.ndarray) -> jnp.ndarray:
    """x: [batch, length, d_model], segmentation: int [batch, length]
    -> [batch, length, d_model]."""
    cfg = self.config
    d, k, dtype = cfg.d_model, cfg.conv_kernel_size, cfg.jnp_dtype
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, "embed", "mlp")), (k, d, 2 * d), cfg.jnp_param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                      (2 * d,), cfg.jnp_param_dtype)
    if cfg.decode and self.has_variable("cache", "window"):
      taps = self._taps_from_cache(x.astype(dtype))  # [b, 1, k, d]
    else:
      if cfg.decode:  # the first call creates the window: zeros, as before a sequence starts
        self.variable("cache", "window", jnp.zeros, (x.shape[0], k - 1, d), dtype)
      taps = causal_taps(x.astype(dtype), segmentation, k)  # [b, l, k, d]
    a, b = jnp.split(jnp.einsum("blkd,kde->ble", taps, jnp.asarray(kernel, dtype))
                     + jnp.asarray(bias, dtype), 2, axis=-1)
    gated = Dropout(cfg.dropout_rate)(a * jax.nn.sigmoid(b), deterministic=cfg.deterministic)
    return x + gated

  def _taps_from_cache(self, x: jnp.ndarray) -> jnp.ndarray:
    """Decode mode: this token's taps from the cached window, which then shifts by one.

    Args:
      x: [batch, 1, d_model], this call's one input.

    Returns:
      [batch, 1, k, d_model]: taps[:, 0, j] = the input j steps back (as `causal_taps`).
    """
    if x.shape[1] != 1:
      raise ValueError(f"decode mode takes one token per call, got {x.shape[1]}")
    window = self.variable("cache", "window")
    seen = jnp.concatenate([window.value, x], axis=1)  # [b, k, d], oldest first
    window.value = seen[:, 1:]
    return seen[:, ::-1][:, None]


class _BaselineLM(nn.Module):
  """Embedding, a stack of `block`s, tied output; subclasses set `block` and `block_macs`.

  As an architecture (see `registry.py`): a causal LM over targets alone, prompts as a decoder
  prefix, with a decode cache (the LSTM's state, the gated CNN's receptive field).
  """

  config: ModelConfig
  has_encoder: ClassVar[bool] = False
  kv_cache: ClassVar[bool] = True
  prefill: ClassVar[bool] = False

  @staticmethod
  def batch_args(batch: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray | None, ...]:
    """The positional arguments of `__call__` taken from a data batch."""
    return batch["targets"], batch.get("targets_segmentation"), batch.get("targets_position")

  @classmethod
  def forward_macs(cls, cfg: ModelConfig, inputs_len: int, targets_len: int) -> int:
    """Matmul multiply-adds of one forward pass: per token L·block_macs + V d [blocks, logits]."""
    del inputs_len
    return targets_len * (cfg.num_decoder_layers * cls.block_macs(cfg)
                          + cfg.vocab_size * cfg.d_model)

  def setup(self):
    self.embedding = TokenEmbedding(self.config, name="token_embedding")
    self.layers = [self.block(self.config) for _ in range(self.config.num_decoder_layers)]
    self.embedding_dropout = Dropout(self.config.dropout_rate)

  def decode(self, decoder_input_tokens: jnp.ndarray,
             targets_segmentation: jnp.ndarray | None = None,
             targets_position: jnp.ndarray | None = None,
             return_hidden: bool = False) -> jnp.ndarray:
    """Logits [batch, length, vocab] for already shifted decoder input tokens (BOS first).

    With config.decode: one step, decoder_input_tokens [batch, 1] -> logits [batch, 1, vocab],
    reading and updating the 'cache' collection (pass it as mutable).

    Args:
      decoder_input_tokens: int [batch, length].
      targets_segmentation: int [batch, length] (0 = padding); default: 1 on non-pad tokens.
      targets_position: ignored (accepted for the DecoderOnly signature).
      return_hidden: return the last block's output [batch, length, d_model] instead.
    """
    del targets_position
    cfg = self.config
    segmentation = segmentation_or_default(decoder_input_tokens, targets_segmentation)
    x = self.embedding_dropout(self.embedding(decoder_input_tokens),
                               deterministic=cfg.deterministic)
    for layer in self.layers:
      x = layer(x, segmentation)
    if return_hidden:
      return x.astype(jnp.float32)
    return self.embedding.attend(x).astype(jnp.float32)

  def __call__(self, targets: jnp.ndarray, targets_segmentation: jnp.ndarray | None = None,
               targets_position: jnp.ndarray | None = None,
               return_hidden: bool = False) -> jnp.ndarray:
    """Next-token logits [batch, length, vocab]; position i sees targets[:i] of its segment.

    return_hidden: the last block's output [batch, length, d_model] instead.
    """
    segmentation = segmentation_or_default(targets, targets_segmentation)
    return self.decode(shift_right(targets, segmentation), segmentation, targets_position,
                       return_hidden)


class LSTMLanguageModel(_BaselineLM):
  """Stacked LSTM language model (see the module docstring)."""
  block = LSTMLayer

  @staticmethod
  def block_macs(cfg: ModelConfig) -> int:
    """Per token and layer: 8 d² [input and recurrent kernels, 4 gates each]."""
    return 8 * cfg.d_model ** 2


class GatedConvLanguageModel(_BaselineLM):
  """Gated convolutional language model, GCNN (see the module docstring)."""
  block = GatedConvBlock

  @staticmethod
  def block_macs(cfg: ModelConfig) -> int:
    """Per token and layer: 2 k d² [the width-k convolution to A and B]."""
    return 2 * cfg.conv_kernel_size * cfg.d_model ** 2
