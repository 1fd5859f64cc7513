"""Analytic FLOPs of a train step and the device peak they are compared against (MFU).

Counts matmul FLOPs only (2 per multiply-add), as in the PaLM/nanoGPT MFU convention:
a training step is 3 forward passes' worth (forward + backward at twice the forward).
Per token, with d = d_model, f = d_ff, L layers, S input and T target length (padded,
since padding is computed too), V vocabulary:

  encoder token:  L (4 d² + 2 d f) + L (2 S d)                       [projections, FFN; QKᵀ and AV]
  decoder token:  L (4 d² + 2 d f + 2 T d) + V d                     [self-attention, FFN, logits]
                  + L (2 d² + 2 S d) with an encoder                   [cross-attention q, o; QKᵀ, AV]
  per input token with an encoder: L (2 d²)                            [cross-attention k, v]

The baselines (`models/baselines.py`), per target token, with k = conv_kernel_size:

  lstm:       L (8 d²) + V d                                         [input and recurrent kernels, logits]
  gated_cnn:  L (2 k d²) + V d                                       [convolution to A and B, logits]
"""

import time
from typing import Mapping

import jax
import jax.numpy as jnp

from transformer.models.config import ModelConfig


def train_flops_per_step(cfg: ModelConfig, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
  """Matmul FLOPs of one train step (forward + backward) on a batch with these shapes.

  Args:
    cfg: the model config.
    batch_shapes: name -> shape of each batch array: 'targets' [batch, T] and, for an
      encoder-decoder, 'inputs' [batch, S]; preference batches use 'chosen' and 'rejected'.
  """
  d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
  if "chosen" in batch_shapes:  # a preference pair is two decoder-only sequences
    return sum(train_flops_per_step(cfg, {"targets": batch_shapes[k]}) for k in ("chosen", "rejected"))
  batch, t = batch_shapes["targets"]
  dec_layers, enc_layers = cfg.num_decoder_layers, cfg.num_encoder_layers
  layer_macs = {"lstm": 8 * d * d, "gated_cnn": 2 * cfg.conv_kernel_size * d * d}.get(
      cfg.architecture, 4 * d * d + 2 * d * f + 2 * t * d)
  macs = batch * t * (dec_layers * layer_macs + v * d)
  if cfg.architecture == "encoder_decoder":
    s = batch_shapes["inputs"][1]
    macs += batch * s * enc_layers * (4 * d * d + 2 * d * f + 2 * s * d)
    macs += batch * t * dec_layers * (2 * d * d + 2 * s * d) + batch * s * dec_layers * 2 * d * d
  return 3.0 * 2.0 * macs


def measure_matmul_peak(size: int = 1024, repeats: int = 5) -> float:
  """Best observed FLOP/s of a float32 [size, size] matmul on the default device."""
  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def peak_flops(configured: float) -> float:
  """Peak FLOP/s of all devices: `configured` per device if > 0, else a measured matmul peak."""
  per_device = configured if configured > 0 else measure_matmul_peak()
  return per_device * jax.device_count()
