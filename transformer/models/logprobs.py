"""Log-probabilities of response tokens under a model: the one definition of π(token | context).

    per_token, total = sequence_logprobs(model, params, prompts, responses)  # [b, R], [b]

A model's next-token distribution is the softmax of its logits with PAD removed
(`next_token_logprobs`): a response never holds PAD, and the decoding loops never emit it, so
this is the distribution a policy samples from at temperature 1. Everything that needs
log π(y | x) reads it from here: the sampler (the log-probability of each token it draws,
`decoding/sampling.py`), the likelihood baseline of a reward model, DPO's policy and
reference, and the KL estimates of policy optimisation. Nothing here is tempered, smoothed or
dropped out: pass the eval variant of the model.

Two forms of the same computation:
- `target_logprobs`: a model batch ('targets', and 'inputs' for an encoder) and weights on
  the response positions of `targets` (a preference batch's `response_k` and its weights);
- `sequence_logprobs`: prompts and responses as two token arrays (what the sampler takes and
  returns). Decoder-only: each row's prompt and response are joined into one sequence;
  encoder-decoder: the prompt is the encoder input, the response the decoder's targets.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer.special_ids import PAD_ID


def next_token_logprobs(logits: jnp.ndarray) -> jnp.ndarray:
  """float32 [..., vocab]: log_softmax(logits) over every token but PAD (PAD at -inf)."""
  vocab = jnp.arange(logits.shape[-1])
  return jax.nn.log_softmax(jnp.where(vocab == PAD_ID, -jnp.inf, logits.astype(jnp.float32)))


def first_argmax(logits: jnp.ndarray) -> jnp.ndarray:
  """float [..., vocab] -> int32 [...]: jnp.argmax's answer (the first maximal index; NaN
  counts as maximal, so a row with a NaN gives its first NaN, never an index past the vocab).

  Two fused reductions (max, then the least index attaining it), ~10x faster than
  jnp.argmax's variadic reduction on CPU.
  """
  vocab = logits.shape[-1]
  top = jnp.max(logits, axis=-1, keepdims=True)  # NaN where the row has one
  indices = jnp.arange(vocab, dtype=jnp.int32)
  hit = (logits == top) | jnp.isnan(logits)
  return jnp.min(jnp.where(hit, indices, vocab), axis=-1)


def target_logprobs(model: nn.Module, params: Any, batch: Mapping[str, jnp.ndarray],
                    weights: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Teacher-forced log-probabilities of the weighted target tokens.

  Args:
    model: a deterministic module of the registry (`build_model(cfg.eval())`).
    params: its params.
    batch: {'targets' int [b, t]} (and 'inputs' int [b', s] for an encoder; b = k b' rows
      read input i // k).
    weights: [b, t], > 0 on the tokens scored (the response and its EOS).

  Returns:
    (per-token log π float32 [b, t], 0 where the weight is 0; their sum float32 [b]).
  """
  logits = model.apply({"params": params}, *model.batch_args(batch))
  targets = batch["targets"]
  picked = jnp.take_along_axis(next_token_logprobs(logits), targets[..., None], axis=-1)[..., 0]
  per_token = jnp.where(weights > 0, picked, 0.0)
  return per_token, jnp.sum(per_token, axis=-1)


def joined_sequences(prompts: jnp.ndarray, responses: jnp.ndarray
                     ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Each row's prompt followed by its response, for a decoder-only model.

  Args:
    prompts: int [b, P], right-padded with PAD.
    responses: int [b, R], right-padded with PAD.

  Returns:
    (targets int [b, P + R]: prompt, response, then PAD; weights float32 [b, P + R], 1 on the
    response tokens; response starts int [b], the position of each row's first response
    token).
  """
  width = prompts.shape[1] + responses.shape[1]
  starts = jnp.sum(prompts != PAD_ID, axis=1).astype(jnp.int32)
  positions = jnp.arange(width)[None, :]
  offset = positions - starts[:, None]  # index into the response
  from_response = jnp.take_along_axis(responses, jnp.clip(offset, 0, responses.shape[1] - 1),
                                      axis=1)
  padded_prompts = jnp.pad(prompts, ((0, 0), (0, responses.shape[1])))
  in_response = (offset >= 0) & (offset < responses.shape[1])
  targets = jnp.where(offset < 0, padded_prompts, jnp.where(in_response, from_response, PAD_ID))
  weights = (in_response & (targets != PAD_ID)).astype(jnp.float32)
  return targets.astype(jnp.int32), weights, starts


def sequence_logprobs(model: nn.Module, params: Any, prompts: jnp.ndarray,
                      responses: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """log π(response | prompt), per token and summed, for both kinds of architecture.

  Args:
    model: a deterministic module of the registry (`build_model(cfg.eval())`).
    params: its params.
    prompts: int [b', P], right-padded with PAD: the encoder input of an encoder-decoder (as
      the model was trained on it, e.g. with its EOS), else the decoder prefix.
    responses: int [b, R], b = k b', right-padded with PAD: the response tokens (EOS included
      where there is one), as `decoding.generate` returns them; rows i k .. i k + k - 1 answer
      prompt i (an encoder encodes it once).

  Returns:
    (per-token log π float32 [b, R], 0 on PAD; their sum float32 [b]).
  """
  mask = (responses != PAD_ID).astype(jnp.float32)
  if model.has_encoder:
    return target_logprobs(model, params, {"inputs": prompts, "targets": responses}, mask)
  prompts = jnp.repeat(prompts, responses.shape[0] // prompts.shape[0], axis=0)
  targets, weights, starts = joined_sequences(prompts, responses)
  joined, total = target_logprobs(model, params, {"targets": targets}, weights)
  index = starts[:, None] + jnp.arange(responses.shape[1])[None, :]
  return jnp.take_along_axis(joined, index, axis=1) * mask, total
