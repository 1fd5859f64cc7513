"""Greedy decoding and sampling (temperature, top-k, top-p): one hypothesis per row.

Both run `decode_loop`: a `PrefillFn` feeds the prompt positions every row has in one
pass, then a jit-compatible `lax.while_loop` feeds one token per step through a
`LogitsFn` (see `cache.py`) and lets a `Chooser` pick the next
token from the step's log-probabilities: `greedy` takes the argmax, `sampler`
draws from the temperature-scaled distribution restricted to the top k tokens
and to the nucleus (top p). A row stops at EOS or after its own limit of new
tokens; the loop stops when every row has. With each token the loop returns its
log-probability under the model itself (untempered, unfiltered: log π, as
`models.logprobs` computes it teacher-forced), so a policy's samples come with the
log π that its KL and policy-gradient estimates need.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from transformer.decoding.buffer import initial_buffer, new_tokens, prefill_prompts, step_log_probs
from transformer.decoding.cache import Cache, LogitsFn, PrefillFn, step_prefill
from transformer.models.logprobs import first_argmax
from transformer.special_ids import EOS_ID, PAD_ID

Chooser = Callable[[jnp.ndarray, jax.Array], jnp.ndarray]  # (log_probs [n, vocab], rng) -> [n]


def greedy(log_probs: jnp.ndarray, rng: jax.Array) -> jnp.ndarray:
  """The most likely token of each row: [n, vocab] -> int [n] (rng unused)."""
  del rng
  return first_argmax(log_probs)


def top_k_filter(logits: jnp.ndarray, k: int | jnp.ndarray) -> jnp.ndarray:
  """Keeps the k largest logits of each row (ties at the k-th kept), others -inf; k = 0: all.

  k may be traced (it indexes the sorted logits), so changing it does not recompile.
  """
  vocab = logits.shape[-1]
  kth = jnp.take(jnp.sort(logits, axis=-1), vocab - jnp.clip(k, 1, vocab), axis=-1)[..., None]
  return jnp.where((logits >= kth) | (k == 0), logits, -jnp.inf)


def top_p_filter(logits: jnp.ndarray, p: float | jnp.ndarray) -> jnp.ndarray:
  """Nucleus filter: keeps the smallest set of most likely tokens with total probability >= p.

  Args:
    logits: float [..., vocab].
    p: in (0, 1]; 1 keeps every token.

  Returns:
    [..., vocab]: logits of the kept tokens, -inf elsewhere (ties at the threshold kept;
    p = 1 keeps all even where float32 cumulative sums reach 1 early).
  """
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above
  kept = jnp.sum(before < p, axis=-1, keepdims=True)  # >= 1: the top token always stays
  threshold = jnp.take_along_axis(sorted_logits, kept - 1, axis=-1)
  return jnp.where((logits >= threshold) | (p >= 1.0), logits, -jnp.inf)


def sampler(temperature: float | jnp.ndarray, top_k: int | jnp.ndarray,
            top_p: float | jnp.ndarray) -> Chooser:
  """A chooser drawing from softmax(log_probs / temperature) after the top-k and top-p filters."""

  def choose(log_probs: jnp.ndarray, rng: jax.Array) -> jnp.ndarray:
    # Each filter sorts the vocabulary: run only where it is on (a traced switch, so
    # changing top_k or top_p does not recompile).
    logits = lax.cond(jnp.asarray(top_k) > 0, top_k_filter, lambda x, _: x,
                      log_probs / temperature, top_k)
    logits = lax.cond(jnp.asarray(top_p) < 1, top_p_filter, lambda x, _: x, logits, top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)

  return choose


def decode_loop(logits_fn: LogitsFn, cache: Cache, prompts: jnp.ndarray, max_new: jnp.ndarray,
                num_new: int, choose: Chooser, rng: jax.Array,
                prefill_fn: PrefillFn | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Decodes one hypothesis per row.

  Args:
    logits_fn: the model's step function; its cache holds `batch` rows.
    cache: the initial cache.
    prompts: int [batch, prompt_len] decoder prefixes, right-padded (prompt_len may be 0).
    max_new: int [batch], each row's limit of new tokens (1 <= max_new <= num_new).
    num_new: static width of the output.
    choose: picks the next token from the step's log-probabilities.
    rng: key; step t uses fold_in(rng, t).
    prefill_fn: feeds the inputs of the steps forced in every row before the loop (see
      `buffer.prefill_prompts`); default `step_prefill(logits_fn)`, one call per token.

  Returns:
    (int [batch, num_new]: new tokens, EOS included where generated, then PAD;
    float32 [batch, num_new]: the log-probability of each new token under the model, 0 on
    PAD). The log-probabilities are the model's own (`models.logprobs.next_token_logprobs`
    of the untempered, unfiltered logits), not those of the distribution `choose` drew from:
    they equal the teacher-forced `models.logprobs.sequence_logprobs` of the same tokens.
  """
  buffer, prompt_lengths = initial_buffer(prompts, num_new)
  num_steps = prompts.shape[1] + num_new
  start, cache = prefill_prompts(prefill_fn or step_prefill(logits_fn),
                                 buffer[:, :prompts.shape[1]], prompt_lengths, cache)

  def not_finished(state: tuple) -> jnp.ndarray:
    step, _, _, _, done = state
    return (step < num_steps) & ~jnp.all(done)

  def step_fn(state: tuple) -> tuple:
    step, buffer, scores, cache, done = state
    logits, cache = logits_fn(lax.dynamic_slice_in_dim(buffer, step, 1, axis=1), cache)
    forced = step + 1 <= prompt_lengths
    log_probs = step_log_probs(logits, buffer[:, step + 1], forced)
    token = jnp.where(done, PAD_ID, choose(log_probs, jax.random.fold_in(rng, step)))
    score = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
    scores = scores.at[:, step + 1].set(jnp.where(done | forced, 0.0, score))
    buffer = buffer.at[:, step + 1].set(token)
    at_limit = step + 1 - prompt_lengths >= max_new
    done = done | (~forced & ((token == EOS_ID) | at_limit))
    return step + 1, buffer, scores, cache, done

  done = jnp.zeros(prompts.shape[0], bool)
  scores = jnp.zeros(buffer.shape, jnp.float32)
  _, buffer, scores, _, _ = lax.while_loop(not_finished, step_fn,
                                           (start, buffer, scores, cache, done))
  return (new_tokens(buffer, prompt_lengths, num_new),
          new_tokens(scores, prompt_lengths, num_new))
