"""One model config for every Transformer in this project, with its train/eval/decode variants.

The defaults are the paper's base model (Vaswani et al., 2017, Table 3). `named_size`
gives the paper's `base` and `big`; `ModelConfig.train()`, `.eval()` and
`.decoding()` return the same architecture with dropout on, dropout off, and the
incremental-decoding cache on.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

POSITION_ENCODINGS = ("sinusoidal", "learned", "rope")
NORM_PLACEMENTS = ("post", "pre")
REMAT_POLICIES = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyperparameters of a Transformer; every field is validated on construction.

  Attributes:
    architecture: a name in `registry.ARCHITECTURES` (checked there): 'encoder_decoder' (the
      paper), 'decoder_only' (a causal LM), or the classic causal LM baselines 'lstm' and
      'gated_cnn' (`baselines.py`: d_model, num_decoder_layers, dropout_rate, conv_kernel_size;
      output always tied; attention/position fields unused).
    vocab_size: number of token ids (shared source/target vocabulary).
    d_model: width of embeddings and of every sublayer output.
    num_heads: attention heads h; d_k = d_v = d_model / h.
    d_ff: inner width of the position-wise feed-forward network.
    num_encoder_layers: N for the encoder stack (unused by 'decoder_only').
    num_decoder_layers: N for the decoder stack.
    dropout_rate: P_drop, applied to every sublayer output and to embeddings + positions.
    attention_dropout_rate: dropout on the attention weights (0 in the paper).
    max_len: longest sequence the position table (learned) or decode cache holds.
    position_encoding: 'sinusoidal' (paper §3.5), 'learned', or 'rope' (rotary, on q and k).
    share_embeddings: one token table for encoder input, decoder input (and output, if tied).
    tie_output_embedding: the pre-softmax projection is the (decoder) embedding transposed.
    norm_placement: 'post' (LayerNorm(x + Sublayer(x)), the paper) or 'pre'
      (x + Sublayer(LayerNorm(x)), with a final LayerNorm on each stack).
    layer_norm_epsilon: epsilon inside every LayerNorm.
    dtype: compute dtype name ('float32' or 'bfloat16'); softmax and norms stay float32
      (`jnp_dtype` is the jnp dtype).
    param_dtype: parameter dtype name (`jnp_param_dtype` is the jnp dtype).
    deterministic: disables dropout (eval and decode variants).
    decode: enables the incremental-decoding cache (decode variant).
    conv_kernel_size: width k of the causal convolutions of 'gated_cnn' (position t sees t-k+1..t).
    scan_layers: run each Transformer layer stack as one `nn.scan` over a layer axis (params,
      cache and intermediates stacked [layers, ...] under 'layers') instead of unrolled
      'layer_<i>' modules; `scan_conversion.py` converts params between the two.
    remat: rematerialisation of each Transformer layer in the backward pass: 'none', 'full'
      (nothing saved, everything recomputed) or 'dots' (matmuls without batch dims saved).
  """

  architecture: str = "encoder_decoder"
  vocab_size: int = 37000
  d_model: int = 512
  num_heads: int = 8
  d_ff: int = 2048
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  max_len: int = 512
  position_encoding: str = "sinusoidal"
  share_embeddings: bool = True
  tie_output_embedding: bool = True
  norm_placement: str = "post"
  layer_norm_epsilon: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  deterministic: bool = False
  decode: bool = False
  conv_kernel_size: int = 4
  scan_layers: bool = False
  remat: str = "none"

  def __post_init__(self):
    if not isinstance(self.architecture, str):
      raise ValueError(f"ModelConfig.architecture must be a name, got {self.architecture!r}")
    _check_choice("position_encoding", self.position_encoding, POSITION_ENCODINGS)
    _check_choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
    _check_choice("remat", self.remat, REMAT_POLICIES)
    if not isinstance(self.scan_layers, bool):
      raise ValueError(f"ModelConfig.scan_layers must be a bool, got {self.scan_layers!r}")
    for name in ("vocab_size", "d_model", "num_heads", "d_ff", "num_decoder_layers", "max_len",
                 "conv_kernel_size"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise ValueError(f"ModelConfig.{name} must be a positive int, got {getattr(self, name)!r}")
    if not isinstance(self.num_encoder_layers, int) or self.num_encoder_layers < 0:
      raise ValueError(
          f"ModelConfig.num_encoder_layers must be an int >= 0, got {self.num_encoder_layers!r}")
    if self.d_model % self.num_heads:
      raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by "
                       f"ModelConfig.num_heads ({self.num_heads})")
    if self.position_encoding == "rope" and self.head_dim % 2:
      raise ValueError(f"ModelConfig.position_encoding='rope' needs an even head dimension "
                       f"(d_model / num_heads), got {self.head_dim}")
    if self.position_encoding == "sinusoidal" and self.d_model % 2:
      raise ValueError(f"ModelConfig.d_model must be even for sinusoidal positions, "
                       f"got {self.d_model}")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"ModelConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
    for name in ("dtype", "param_dtype"):
      _check_choice(name, getattr(self, name), ("float32", "bfloat16", "float16"))

  @property
  def head_dim(self) -> int:
    """d_k = d_v = d_model / num_heads."""
    return self.d_model // self.num_heads

  @property
  def jnp_dtype(self) -> Any:
    """The compute dtype (`dtype`) as a jnp dtype."""
    return jnp.dtype(self.dtype)

  @property
  def jnp_param_dtype(self) -> Any:
    """The parameter dtype (`param_dtype`) as a jnp dtype."""
    return jnp.dtype(self.param_dtype)

  def train(self) -> "ModelConfig":
    """The training variant: dropout on, no decode cache."""
    return dataclasses.replace(self, deterministic=False, decode=False)

  def eval(self) -> "ModelConfig":
    """The evaluation variant: dropout off, no decode cache."""
    return dataclasses.replace(self, deterministic=True, decode=False)

  def decoding(self) -> "ModelConfig":
    """The incremental-decoding variant: dropout off, decode cache on."""
    return dataclasses.replace(self, deterministic=True, decode=True)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"ModelConfig.{name} must be one of {choices}, got {value!r}")


def named_size(name: str, **overrides: Any) -> ModelConfig:
  """The paper's model sizes (Table 3): 'base' (65M params) and 'big' (213M).

  Big uses P_drop 0.3 as for EN-DE (the paper used 0.1 for EN-FR).

  Args:
    name: 'base' or 'big'.
    **overrides: any other ModelConfig field, e.g. vocab_size.
  """
  sizes = {
      "base": dict(d_model=512, num_heads=8, d_ff=2048, num_encoder_layers=6,
                   num_decoder_layers=6, dropout_rate=0.1),
      "big": dict(d_model=1024, num_heads=16, d_ff=4096, num_encoder_layers=6,
                  num_decoder_layers=6, dropout_rate=0.3),
  }
  if name not in sizes:
    raise ValueError(f"model size must be one of {tuple(sizes)}, got {name!r}")
  return ModelConfig(**{**sizes[name], **overrides})
