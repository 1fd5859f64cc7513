"""Token-level cross-entropy with label smoothing (paper §5.4), without one-hot targets.

With smoothing ε over a vocabulary of V, the target distribution q puts 1 - ε on the
true token and ε / (V - 1) on every other token. The loss is the KL divergence from
that distribution to the model's softmax, i.e. the cross-entropy minus the target
distribution's own entropy, so a perfect model scores 0 whatever ε is.

Computed from three reductions over the vocabulary and no [.., V] intermediate kept for the
backward pass: with lse = logsumexp(logits), the cross-entropy is
  -Σ_v q_v log p_v = lse - (1 - ε) x_t - ε/(V-1) (Σ_v x_v - x_t),
and its gradient, softmax - q, is one elementwise pass (a materialised log_softmax costs
several more passes over [tokens, vocab]: docs/performance.md).
"""

import math

import jax
import jax.numpy as jnp


def target_logits(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """float [..., vocab], int [...] -> [...]: each row's logit of its target.

  A masked sum rather than a gather, so its gradient is elementwise (no scatter).
  """
  hit = jnp.arange(logits.shape[-1]) == targets[..., None]
  return jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)


def token_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                        label_smoothing: float = 0.0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-token smoothed loss and plain negative log-likelihood.

  Args:
    logits: float [batch, length, vocab].
    targets: int [batch, length].
    label_smoothing: ε in [0, 1).

  Returns:
    (loss [batch, length], nll [batch, length]) in float32; nll = -log p(target).
  """
  vocab = logits.shape[-1]
  logits = logits.astype(jnp.float32)
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))  # lse does not depend on it
  lse = jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1)) + top[..., 0]
  target = target_logits(logits, targets)
  nll = lse - target
  if label_smoothing == 0.0:
    return nll, nll
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  entropy = -(confidence * math.log(confidence) + (vocab - 1) * low * math.log(low))
  cross_entropy = lse - confidence * target - low * (jnp.sum(logits, axis=-1) - target)
  return cross_entropy - entropy, nll
