"""The architectures by name: `ModelConfig.architecture` -> the Flax module that implements it.

Every architecture class carries what the rest of the code needs to know about it (the
`Architecture` protocol), so that no other file branches on an architecture's name:

  has_encoder    prompts and `inputs` go to an encoder (else: one sequence, `targets`, with the
                 prompt as its prefix); data tasks and decoding read it;
  kv_cache       decoding can run one token per step against a 'cache' collection
                 (`config.decode`: keys/values, or the LSTM's state, or the gated CNN's
                 receptive field); else decoding recomputes the prefix every step;
  prefill        with kv_cache: one decode-mode call can take several tokens (a prompt is
                 prefilled in one pass); else the prompt is fed one token per step;
  batch_args     the positional `__call__` arguments taken from a data batch;
  forward_macs   matmul multiply-adds of one forward pass over one example (FLOPs and MFU);
  encoder_macs   with an encoder: the encoder's share of forward_macs (run once for the K
                 responses of a preference row).

Adding an architecture: write its module (in `transformer/models/`) with these members and
list it in ARCHITECTURES below.
"""

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import flax.linen as nn
import jax.numpy as jnp

from transformer.models.baselines import GatedConvLanguageModel, LSTMLanguageModel
from transformer.models.config import ModelConfig
from transformer.models.transformer import DecoderOnly, EncoderDecoder


class Architecture(Protocol):
  """What a model class tells the rest of the code (see the module docstring)."""

  has_encoder: ClassVar[bool]
  kv_cache: ClassVar[bool]
  prefill: ClassVar[bool]

  def __call__(self, *args: Any) -> jnp.ndarray: ...

  @staticmethod
  def batch_args(batch: Mapping[str, jnp.ndarray]) -> tuple[jnp.ndarray | None, ...]: ...

  @staticmethod
  def forward_macs(cfg: ModelConfig, inputs_len: int, targets_len: int) -> int: ...


ARCHITECTURES: Mapping[str, type[nn.Module]] = {
    "encoder_decoder": EncoderDecoder,
    "decoder_only": DecoderOnly,
    "lstm": LSTMLanguageModel,
    "gated_cnn": GatedConvLanguageModel,
}


def architecture(name: str) -> type[nn.Module]:
  """The model class called `name`; ValueError naming the choices otherwise."""
  if name not in ARCHITECTURES:
    raise ValueError(f"ModelConfig.architecture must be one of {tuple(ARCHITECTURES)}, "
                     f"got {name!r}")
  return ARCHITECTURES[name]


def build_model(config: ModelConfig) -> nn.Module:
  """The module of `config.architecture` (in the variant the config is: train, eval or decode)."""
  return architecture(config.architecture)(config)


def dummy_batch(length: int = 8) -> dict[str, jnp.ndarray]:
  """The smallest batch that builds every parameter of any architecture: int32 [1, length]."""
  tokens = jnp.ones((1, length), jnp.int32)
  return {"inputs": tokens, "targets": tokens}
