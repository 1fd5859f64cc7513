"""The Transformer (paper §3): `Encoder`, `Decoder`, `EncoderDecoder` and `DecoderOnly`.

Data flow of the encoder-decoder, read top to bottom:

  inputs [b, s] --embed * sqrt(d_model) + positions, dropout--> N x EncoderLayer
      --> encoded [b, s, d]
  targets [b, t] --shift right (BOS first)--> embed + positions, dropout
      --> N x DecoderLayer(masked self-attention, cross-attention on encoded, FFN)
      --> tied projection (embedding^T) --> logits [b, t, vocab]  (softmax lives in the loss)

Sequences may be packed: `*_segmentation` ids (1, 2, ... per example, 0 = padding) keep
examples from attending to each other, `*_position` restarts at 0 for each example.
Without them, padding is wherever the token is PAD_ID and positions are 0..length-1.

With `config.decode` the decoder runs the next token (or the next n tokens, to prefill a
prompt) per call against a 'cache' collection (keys/values per layer, see `attention.py`,
and the step counter that gives the tokens' positions); `transformer.decoding` drives it.

The N layers of a stack are modules 'layer_0' .. 'layer_<N-1>', or with `config.scan_layers`
one module 'layers' run by `nn.scan`, its params stacked [N, ...] (`_Stack.layers`;
`scan_conversion.py` converts params between the two layouts).
"""

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer.models.attention import make_attention_mask
from transformer.models.config import ModelConfig
from transformer.models.dropout import Dropout
from transformer.models.embeddings import AddPositions, TokenEmbedding
from transformer.models.layers import DecoderLayer, EncoderLayer, layer_norm
from transformer.models.sequences import positions_or_default, segmentation_or_default, shift_right

# The scanned stack's module name and the logical axis of its stacked params and cache.
SCANNED = "layers"
# ModelConfig.remat -> what jax.checkpoint saves for the backward pass (None: nothing).
_REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class _Stack(nn.Module):
  """Embedding + positions + dropout, then the layers, then (pre-LN only) a final LayerNorm."""

  config: ModelConfig
  embedding: TokenEmbedding

  def layers(self, layer: type[nn.Module], count: int, x: jnp.ndarray, *args: Any) -> jnp.ndarray:
    """Applies `count` layers, layer(config)(x, *args) each: [batch, length, d_model] -> same.

    Unrolled (default): modules 'layer_0' .. 'layer_<count-1>'. With `config.scan_layers`: one
    module SCANNED under `nn.scan` (compiled once), its params, 'cache' and 'intermediates'
    stacked on a leading [count] axis (logical axis SCANNED, split over no mesh axis), each
    layer drawing its own init and dropout keys; `args` are shared by every layer. With
    `config.remat` != 'none', each layer is rematerialised in the backward pass.
    """
    cfg = self.config
    if cfg.remat != "none":
      layer = nn.remat(layer, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if not cfg.scan_layers:
      for i in range(count):
        x = layer(cfg, name=f"layer_{i}")(x, *args)
      return x
    scan = nn.scan(lambda module, carry, *shared: (module(carry, *shared), None),
                   variable_axes={"params": 0, "cache": 0, "intermediates": 0},
                   split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast,
                   length=count, metadata_params={nn.PARTITION_NAME: SCANNED})
    return scan(layer(cfg, name=SCANNED), x, *args)[0]

  def embed(self, tokens: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """int [batch, length] -> [batch, length, d_model]: sqrt(d_model) E[tokens] + PE, dropout."""
    cfg = self.config
    x = AddPositions(cfg, name="positions")(self.embedding(tokens), positions)
    x = self.perturb("embedded", x)  # lets tests take gradients with respect to each position
    self.sow("intermediates", "embedded", x)
    return Dropout(cfg.dropout_rate)(x, deterministic=cfg.deterministic)

  def final_norm(self, x: jnp.ndarray) -> jnp.ndarray:
    """LayerNorm on the stack's output for pre-LN (post-LN layers end normalized already)."""
    if self.config.norm_placement == "pre":
      x = layer_norm(self.config, "final_norm")(x).astype(self.config.jnp_dtype)
    return x


class Encoder(_Stack):
  """N encoder layers over the embedded inputs: int [batch, length] -> [batch, length, d_model]."""

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, inputs_segmentation: jnp.ndarray | None = None,
               inputs_position: jnp.ndarray | None = None) -> jnp.ndarray:
    segmentation = segmentation_or_default(inputs, inputs_segmentation)
    positions = positions_or_default(inputs, inputs_position)
    mask = make_attention_mask(segmentation, segmentation, causal=False)
    x = self.embed(inputs, positions)
    x = self.layers(EncoderLayer, self.config.num_encoder_layers, x, mask, positions)
    return self.final_norm(x)


class Decoder(_Stack):
  """N decoder layers and the output projection: decoder input tokens -> logits [b, t, vocab]."""

  @nn.compact
  def __call__(self, decoder_input_tokens: jnp.ndarray, targets_segmentation: jnp.ndarray,
               targets_position: jnp.ndarray, encoded: jnp.ndarray | None = None,
               inputs_segmentation: jnp.ndarray | None = None,
               return_hidden: bool = False) -> jnp.ndarray:
    """Computes next-token logits (or the final hidden states).

    Args:
      decoder_input_tokens: int [batch, target_len], the targets shifted right.
      targets_segmentation: int [batch, target_len] (0 = padding).
      targets_position: int [batch, target_len].
      encoded: [batch, input_len, d_model] encoder output; None for a decoder-only model.
      inputs_segmentation: int [batch, input_len], needed with `encoded`.
      return_hidden: return the final hidden states [batch, target_len, d_model] instead
        (before the output projection; a reward or value head reads them).

    Returns:
      float32 logits [batch, target_len, vocab].
    """
    cfg = self.config
    if cfg.decode:
      targets_position = self.decode_positions(targets_position)
    self_mask = make_attention_mask(targets_segmentation, targets_segmentation, causal=True)
    cross_mask = None
    if encoded is not None:
      cross_mask = make_attention_mask(targets_segmentation, inputs_segmentation, causal=False)
    x = self.embed(decoder_input_tokens, targets_position)
    x = self.layers(DecoderLayer, cfg.num_decoder_layers, x, self_mask, targets_position,
                    encoded, cross_mask)
    x = self.final_norm(x)
    if return_hidden:
      return x.astype(jnp.float32)
    if cfg.tie_output_embedding:
      logits = self.embedding.attend(x)
    else:
      logits = nn.Dense(cfg.vocab_size, use_bias=False, dtype=cfg.jnp_dtype,
                        param_dtype=cfg.jnp_param_dtype, name="output_projection",
                        kernel_init=nn.with_logical_partitioning(
                            nn.initializers.xavier_uniform(), ("embed", "vocab")))(x)
    return logits.astype(jnp.float32)

  def decode_positions(self, positions: jnp.ndarray) -> jnp.ndarray:
    """Decode mode: the positions of this call's n tokens, counted in the 'cache' collection.

    Args:
      positions: int [batch, n]; used as is by the first call (which creates the cache).

    Returns:
      int [batch, n]: p, p + 1, ..., p + n - 1, where p tokens were decoded before this call.
    """
    initialized = self.has_variable("cache", "position")
    step = self.variable("cache", "position", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return positions
    start = step.value
    step.value = start + positions.shape[1]
    return jnp.broadcast_to(start + jnp.arange(positions.shape[1], dtype=jnp.int32),
                            positions.shape)


def decoder_macs(cfg: ModelConfig, inputs_len: int, targets_len: int) -> int:
  """Matmul multiply-adds of the decoder stack and output projection for one example.

  Per target token: L (4 d² + 2 d f + 2 T d) + V d [self-attention projections, FFN, QKᵀ and
  AV; logits], and with an encoder (inputs_len S > 0) L (2 d² + 2 S d) [cross-attention q, o;
  QKᵀ, AV]; per input token L (2 d²) [cross-attention k, v].
  """
  d, f, t, s, layers = cfg.d_model, cfg.d_ff, targets_len, inputs_len, cfg.num_decoder_layers
  macs = t * (layers * (4 * d * d + 2 * d * f + 2 * t * d) + cfg.vocab_size * d)
  if s:
    macs += t * layers * (2 * d * d + 2 * s * d) + s * layers * 2 * d * d
  return macs


class EncoderDecoder(nn.Module):
  """The paper's Transformer; `encode` and `decode` are separately callable via `method=`.

  As an architecture (see `registry.py`): prompts go to the encoder, the decoder has a KV cache.
  """

  config: ModelConfig
  has_encoder: ClassVar[bool] = True
  kv_cache: ClassVar[bool] = True
  prefill: ClassVar[bool] = True

  @staticmethod
  def batch_args(batch: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray | None, ...]:
    """The positional arguments of `__call__` taken from a data batch."""
    return (batch["inputs"], batch["targets"], batch.get("inputs_segmentation"),
            batch.get("targets_segmentation"), batch.get("inputs_position"),
            batch.get("targets_position"))

  @staticmethod
  def encoder_macs(cfg: ModelConfig, inputs_len: int) -> int:
    """Matmul multiply-adds of the encoder over one example: per input token
    L (4 d² + 2 d f + 2 S d) [projections, FFN; QKᵀ and AV]."""
    d, f, s = cfg.d_model, cfg.d_ff, inputs_len
    return s * cfg.num_encoder_layers * (4 * d * d + 2 * d * f + 2 * s * d)

  @classmethod
  def forward_macs(cls, cfg: ModelConfig, inputs_len: int, targets_len: int) -> int:
    """Matmul multiply-adds of one forward pass over one example: `encoder_macs` then
    `decoder_macs`."""
    return cls.encoder_macs(cfg, inputs_len) + decoder_macs(cfg, inputs_len, targets_len)

  def setup(self):
    cfg = self.config
    if cfg.share_embeddings:
      input_embedding = target_embedding = TokenEmbedding(cfg, name="token_embedding")
    else:
      input_embedding = TokenEmbedding(cfg, name="input_embedding")
      target_embedding = TokenEmbedding(cfg, name="target_embedding")
    self.encoder = Encoder(cfg, input_embedding)
    self.decoder = Decoder(cfg, target_embedding)

  def encode(self, inputs: jnp.ndarray, inputs_segmentation: jnp.ndarray | None = None,
             inputs_position: jnp.ndarray | None = None) -> jnp.ndarray:
    """int [batch, input_len] -> encoded [batch, input_len, d_model]."""
    return self.encoder(inputs, inputs_segmentation, inputs_position)

  def decode(self, encoded: jnp.ndarray, inputs_segmentation: jnp.ndarray,
             decoder_input_tokens: jnp.ndarray, targets_segmentation: jnp.ndarray | None = None,
             targets_position: jnp.ndarray | None = None,
             return_hidden: bool = False) -> jnp.ndarray:
    """Logits [batch, target_len, vocab] for already shifted decoder input tokens.

    With config.decode: the next n tokens, decoder_input_tokens [batch, n] -> logits
    [batch, n, vocab] (n = 1 per step, more to prefill a prompt), reading and updating the
    'cache' collection (pass it as mutable).
    """
    return self.decoder(
        decoder_input_tokens,
        segmentation_or_default(decoder_input_tokens, targets_segmentation),
        positions_or_default(decoder_input_tokens, targets_position),
        encoded, inputs_segmentation, return_hidden)

  def __call__(self, inputs: jnp.ndarray, targets: jnp.ndarray,
               inputs_segmentation: jnp.ndarray | None = None,
               targets_segmentation: jnp.ndarray | None = None,
               inputs_position: jnp.ndarray | None = None,
               targets_position: jnp.ndarray | None = None,
               return_hidden: bool = False) -> jnp.ndarray:
    """Teacher-forced logits [batch, target_len, vocab] for inputs [b, s] and targets [b, t].

    Targets may have k * b rows (k responses to each input, e.g. a reward model's): rows
    i*k .. i*k + k-1 then read input i, encoded once.
    return_hidden: the decoder's final hidden states [batch, target_len, d_model] instead.
    """
    inputs_segmentation = segmentation_or_default(inputs, inputs_segmentation)
    targets_segmentation = segmentation_or_default(targets, targets_segmentation)
    encoded = self.encode(inputs, inputs_segmentation, inputs_position)
    if targets.shape[0] != inputs.shape[0]:
      k = targets.shape[0] // inputs.shape[0]
      encoded = jnp.repeat(encoded, k, axis=0)
      inputs_segmentation = jnp.repeat(inputs_segmentation, k, axis=0)
    return self.decode(encoded, inputs_segmentation,
                       shift_right(targets, targets_segmentation),
                       targets_segmentation, targets_position, return_hidden)


class DecoderOnly(nn.Module):
  """A causal language model: the decoder stack without cross-attention.

  As an architecture (see `registry.py`): prompts are a decoder prefix, with a KV cache.
  """

  config: ModelConfig
  has_encoder: ClassVar[bool] = False
  kv_cache: ClassVar[bool] = True
  prefill: ClassVar[bool] = True

  @staticmethod
  def batch_args(batch: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray | None, ...]:
    """The positional arguments of `__call__` taken from a data batch."""
    return batch["targets"], batch.get("targets_segmentation"), batch.get("targets_position")

  @staticmethod
  def forward_macs(cfg: ModelConfig, inputs_len: int, targets_len: int) -> int:
    """Matmul multiply-adds of one forward pass over one example (`decoder_macs`, no encoder)."""
    del inputs_len
    return decoder_macs(cfg, 0, targets_len)

  def setup(self):
    self.decoder = Decoder(self.config, TokenEmbedding(self.config, name="token_embedding"))

  def decode(self, decoder_input_tokens: jnp.ndarray,
             targets_segmentation: jnp.ndarray | None = None,
             targets_position: jnp.ndarray | None = None,
             return_hidden: bool = False) -> jnp.ndarray:
    """Logits [batch, length, vocab] for already shifted decoder input tokens (BOS first).

    return_hidden: the final hidden states [batch, length, d_model] instead.
    With config.decode: the next n tokens, decoder_input_tokens [batch, n] -> logits
    [batch, n, vocab] (n = 1 per step, more to prefill a prompt), reading and updating the
    'cache' collection (pass it as mutable).
    """
    return self.decoder(decoder_input_tokens,
                        segmentation_or_default(decoder_input_tokens, targets_segmentation),
                        positions_or_default(decoder_input_tokens, targets_position),
                        return_hidden=return_hidden)

  def __call__(self, targets: jnp.ndarray, targets_segmentation: jnp.ndarray | None = None,
               targets_position: jnp.ndarray | None = None,
               return_hidden: bool = False) -> jnp.ndarray:
    """Next-token logits [batch, length, vocab]; position i sees targets[:i] (after BOS).

    return_hidden: the final hidden states [batch, length, d_model] instead.
    """
    targets_segmentation = segmentation_or_default(targets, targets_segmentation)
    return self.decode(shift_right(targets, targets_segmentation), targets_segmentation,
                       positions_or_default(targets, targets_position), return_hidden)

