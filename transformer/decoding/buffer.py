"""The token buffer a decoding loop fills, and the prompt tokens it forces.

Every loop decodes row by row into a buffer int [batch, 1 + prompt_len + num_new]:

    position 0            BOS (the first decoder input)
    positions 1 .. P_b    the row's prompt (decoder-only prefix; none for encoder-decoder)
    positions P_b + 1 ..  new tokens: EOS ends a row, PAD follows

Step t feeds position t and chooses position t + 1. While t + 1 <= P_b the choice
is forced to the prompt token and scores nothing, so prompts of different
lengths share one loop and one cache. Steps 0 .. min_b P_b - 1 are forced in
every row: `prefill_prompts` feeds their inputs in one `PrefillFn` call and the
loop starts at step min_b P_b; each prompt token past the shortest prompt costs
one step. Prompts are right-padded with PAD; a row's prompt length is its number
of non-PAD tokens.
"""

import jax.numpy as jnp

from transformer.decoding.cache import Cache, PrefillFn
from transformer.models.logprobs import next_token_logprobs
from transformer.special_ids import BOS_ID, PAD_ID


def initial_buffer(prompts: jnp.ndarray, num_new: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """BOS, the prompt and room for num_new tokens.

  Args:
    prompts: int [batch, prompt_len], right-padded with PAD (prompt_len may be 0).
    num_new: the most tokens any row may generate.

  Returns:
    (buffer int [batch, 1 + prompt_len + num_new], prompt lengths int [batch]).
  """
  batch = prompts.shape[0]
  buffer = jnp.concatenate([jnp.full((batch, 1), BOS_ID, jnp.int32), prompts.astype(jnp.int32),
                            jnp.full((batch, num_new), PAD_ID, jnp.int32)], axis=1)
  return buffer, jnp.sum(prompts != PAD_ID, axis=1).astype(jnp.int32)


def prefill_prompts(prefill_fn: PrefillFn, inputs: jnp.ndarray, prompt_lengths: jnp.ndarray,
                    cache: Cache) -> tuple[jnp.ndarray, Cache]:
  """Feeds the decoder inputs of the steps forced in every row, in one prefill call.

  Args:
    prefill_fn: the model's prefill function.
    inputs: int [rows, prompt_len], each row's buffer positions 0 .. prompt_len - 1 (BOS and
      all but the last prompt token); rows = batch * copies, example-major.
    prompt_lengths: int [batch].
    cache: the initial cache.

  Returns:
    (the loop's first step int []: the shortest prompt length, the cache after positions
     0 .. that step - 1).
  """
  if inputs.shape[1] == 0:  # no decoder prefix (an encoder-decoder's prompts)
    return jnp.int32(0), cache
  start = jnp.min(prompt_lengths).astype(jnp.int32)
  return start, prefill_fn(inputs, start, cache)


def step_log_probs(logits: jnp.ndarray, forced_tokens: jnp.ndarray,
                   forced: jnp.ndarray) -> jnp.ndarray:
  """Next-token log-probabilities with PAD forbidden and forced rows fixed to their token.

  Args:
    logits: float [..., vocab] of one step.
    forced_tokens: int [...], the prompt token each row must take where forced.
    forced: bool, broadcastable to forced_tokens: the row is still inside its prompt.

  Returns:
    float32 [..., vocab]: the model's next-token log-probabilities
    (`models.logprobs.next_token_logprobs`: PAD excluded); on forced rows 0 at the forced
    token and -inf elsewhere (the prompt adds nothing to a hypothesis' score).
  """
  vocab = jnp.arange(logits.shape[-1])
  log_probs = next_token_logprobs(logits)
  prompt = jnp.where(vocab == forced_tokens[..., None], 0.0, -jnp.inf)
  return jnp.where(jnp.asarray(forced)[..., None], prompt, log_probs)


def new_tokens(buffer: jnp.ndarray, prompt_lengths: jnp.ndarray, num_new: int) -> jnp.ndarray:
  """The generated part of each row: [batch, ..., T] -> [batch, ..., num_new] (the tokens, or
  anything recorded per buffer position)."""
  start = prompt_lengths.reshape(prompt_lengths.shape + (1,) * (buffer.ndim - 1)) + 1
  return jnp.take_along_axis(buffer, start + jnp.arange(num_new), axis=-1)
