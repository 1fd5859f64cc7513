"""Analytic FLOPs of a train step, the device peak they are compared against, and MFU.

Counts matmul FLOPs only (2 per multiply-add), as in the PaLM/nanoGPT MFU convention: a
training step is 3 forward passes' worth (forward + backward at twice the forward). The
multiply-adds of one forward pass over one example are the architecture's
(`forward_macs` of its class in `models/registry.py`, with the formulas in their
docstrings), over padded lengths since padding is computed too; a data task's batch may
feed the model more than once per row (`Task.model_calls`: K ranked responses are K decoder
passes over one encoder pass, as `EncoderDecoder` runs its encoder once for K target rows).
A reward model's scalar head replaces the output projection: its V·d per target token is not
counted (`logits=False`); a stage that also runs frozen models forward on the batch counts
their passes (`passes`: dpo's 4 = the policy's forward and backward + the reference's forward).

MFU = step FLOPs of the global batch × steps per second / (peak per device × device count),
the same definition on one device, on a mesh of many, and across processes.
"""

import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from transformer.data.tasks import Task
from transformer.models.config import ModelConfig
from transformer.models.registry import architecture


def train_flops_per_step(cfg: ModelConfig, task: Task,
                         batch_shapes: Mapping[str, tuple[int, ...]], *, logits: bool = True,
                         passes: float = 3.0) -> float:
  """Matmul FLOPs of one train step (forward + backward) on a batch with these shapes.

  Args:
    cfg: the model config.
    task: the data task of the batch (which features feed the model, and how often).
    batch_shapes: name -> shape [batch, length] of each batch feature.
    logits: the model computes its output projection (False: a reward model's scalar head).
    passes: forward passes' worth of one step (3: forward + backward; `Stage.forward_passes`).
  """
  model = architecture(cfg.architecture)
  logits_per_token = 0 if logits else cfg.vocab_size * cfg.d_model
  macs = 0
  for call in task.model_calls:
    pattern = call["targets"]
    names = ([n for n in batch_shapes if n.startswith(pattern[:-1]) and not n.endswith("_weights")]
             if pattern.endswith("*") else [pattern])
    inputs_len = batch_shapes[call["inputs"]][1] if "inputs" in call else 0
    encoder = model.encoder_macs(cfg, inputs_len) if model.has_encoder else 0
    for name in names:
      rows, targets_len = batch_shapes[name]
      macs += rows * (model.forward_macs(cfg, inputs_len, targets_len) - encoder
                      - targets_len * logits_per_token)
    if encoder:  # once per input row, whatever the number of target rows it feeds
      macs += batch_shapes[call["inputs"]][0] * encoder
  return passes * 2.0 * macs


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


def peak_flops_per_device(configured: float) -> float:
  """Peak FLOP/s of one device: `configured` if > 0, else a measured matmul peak."""
  return configured if configured > 0 else measure_matmul_peak()


def mfu(step_flops: float, steps_per_second: float, peak_per_device: float,
        device_count: int) -> float:
  """Model FLOPs utilisation of a run over `device_count` devices (see the module docstring)."""
  return step_flops * steps_per_second / (peak_per_device * device_count)
