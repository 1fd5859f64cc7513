"""Token-level cross-entropy with label smoothing (paper §5.4), without one-hot targets.

With smoothing ε over a vocabulary of V, the target distribution puts 1 - ε on the
true token and ε / (V - 1) on every other token. The loss is the KL divergence from
that distribution to the model's softmax, i.e. the cross-entropy minus the target
distribution's own entropy, so a perfect model scores 0 whatever ε is.
"""

import jax
import jax.numpy as jnp


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
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  if label_smoothing == 0.0:
    return nll, nll
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low))
  cross_entropy = confidence * nll - low * (jnp.sum(log_probs, axis=-1) + nll)
  return cross_entropy - entropy, nll
