"""Beam search with the GNMT length penalty (Wu et al., 2016), as used by the Transformer paper.

Hypotheses are ranked by  score(Y) = log P(Y | X) / lp(Y),  lp(Y) = (5 + |Y|)^α / (5 + 1)^α,
where |Y| counts the generated tokens including EOS (the paper: beam 4, α = 0.6,
at most input length + 50 new tokens).

Each step extends the `beam_size` alive hypotheses of an example by every token
and keeps the 2 * beam_size best extensions by log-probability. Of those,
extensions ending in EOS that rank among the best beam_size become finished
(scored with the length penalty); the best beam_size that do not end stay alive.
Early stopping: an example stops once beam_size hypotheses have finished, or when
it reaches its limit of new tokens (then its best extensions finish as they
are). It returns its best finished hypothesis. With beam_size 1 this is exactly
greedy decoding.

The search only sees a `LogitsFn` (see `cache.py`), so the tests can drive it
with a hand-made table of logits.
"""

import jax
import jax.numpy as jnp
from jax import lax

from transformer.decoding.buffer import initial_buffer, new_tokens, prefill_prompts, step_log_probs
from transformer.decoding.cache import Cache, LogitsFn, PrefillFn, step_prefill
from transformer.special_ids import EOS_ID


def length_penalty(length: jnp.ndarray, alpha: float | jnp.ndarray) -> jnp.ndarray:
  """GNMT length penalty ((5 + length) / 6)^alpha, float32 of length's shape."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def gather_beams(cache: Cache, beams: jnp.ndarray) -> Cache:
  """Reorders cache rows: row (example e, beam j) takes the old row (e, beams[e, j]).

  Args:
    cache: pytree of [batch * beam_size, ...] leaves (scalar leaves are shared and kept).
    beams: int [batch, beam_size], the parent beam of each new beam.
  """
  batch, beam_size = beams.shape
  rows = (jnp.arange(batch)[:, None] * beam_size + beams).reshape(-1)
  return jax.tree.map(lambda x: x if x.ndim == 0 else x[rows], cache)


def beam_search(logits_fn: LogitsFn, cache: Cache, prompts: jnp.ndarray, max_new: jnp.ndarray,
                num_new: int, beam_size: int, alpha: float | jnp.ndarray,
                prefill_fn: PrefillFn | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The best hypothesis of each example under the length-penalised score.

  Args:
    logits_fn: the model's step function; its cache holds batch * beam_size rows, example-major.
    cache: the initial cache.
    prompts: int [batch, prompt_len] decoder prefixes, right-padded (prompt_len may be 0).
    max_new: int [batch], each example's limit of new tokens (1 <= max_new <= num_new).
    num_new: static width of the output.
    beam_size: hypotheses kept per example.
    alpha: length penalty exponent (0: plain log-probability).
    prefill_fn: feeds the inputs of the steps forced in every row before the search (see
      `buffer.prefill_prompts`); default `step_prefill(logits_fn)`, one call per token.

  Returns:
    (tokens int [batch, num_new]: new tokens, EOS included where generated, then PAD;
     scores float32 [batch]: log P / lp of each returned hypothesis).
  """
  batch, k = prompts.shape[0], beam_size
  buffer, prompt_lengths = initial_buffer(prompts, num_new)
  num_steps = prompts.shape[1] + num_new
  first_rank = jnp.arange(2 * k) < k  # [2k]: ranks that may finish

  def take(x: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """x [batch, n, ...] at index [batch, m] along axis 1 -> [batch, m, ...]."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

  def not_finished(state: tuple) -> jnp.ndarray:
    return (state[0] < num_steps) & ~jnp.all(state[-1])

  def step_fn(state: tuple) -> tuple:
    step, alive, alive_lp, finished, finished_scores, num_finished, cache, done = state
    logits, cache = logits_fn(alive[:, :, step].reshape(batch * k, 1), cache)
    forced = step + 1 <= prompt_lengths  # [batch]
    log_probs = step_log_probs(logits.reshape(batch, k, -1), alive[:, :, step + 1],
                               forced[:, None])
    vocab = log_probs.shape[-1]
    candidates_lp, index = lax.top_k((alive_lp[:, :, None] + log_probs).reshape(batch, -1), 2 * k)
    parents, tokens = index // vocab, index % vocab  # [batch, 2k]
    candidates = take(alive, parents).at[:, :, step + 1].set(tokens)  # [batch, 2k, T]

    length = step + 1 - prompt_lengths  # new tokens of each candidate, [batch]
    at_limit = (length >= max_new) & ~forced
    ends = ((tokens == EOS_ID) | at_limit[:, None]) & jnp.isfinite(candidates_lp)
    finishing = ends & first_rank & ~done[:, None]
    scores = jnp.where(finishing, candidates_lp / length_penalty(length, alpha)[:, None], -jnp.inf)
    finished_scores, best = lax.top_k(jnp.concatenate([finished_scores, scores], axis=1), k)
    finished = take(jnp.concatenate([finished, candidates], axis=1), best)
    num_finished = num_finished + jnp.sum(finishing, axis=1)
    done = done | (num_finished >= k) | at_limit

    alive_lp, survivors = lax.top_k(jnp.where(ends, -jnp.inf, candidates_lp), k)
    alive = take(candidates, survivors)
    cache = gather_beams(cache, take(parents, survivors))
    return (step + 1, alive, alive_lp, finished, finished_scores, num_finished, cache, done)

  alive = jnp.repeat(buffer[:, None], k, axis=1)  # [batch, k, T]
  start, cache = prefill_prompts(prefill_fn or step_prefill(logits_fn),
                                 alive[:, :, :prompts.shape[1]].reshape(batch * k, -1),
                                 prompt_lengths, cache)
  alive_lp = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf) * jnp.ones((batch, 1))
  state = (start, alive, alive_lp, alive, jnp.full((batch, k), -jnp.inf),
           jnp.zeros(batch, jnp.int32), cache, jnp.zeros(batch, bool))
  state = lax.while_loop(not_finished, step_fn, state)
  finished, finished_scores = state[3], state[4]
  return new_tokens(finished[:, 0], prompt_lengths, num_new), finished_scores[:, 0]
