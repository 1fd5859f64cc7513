import jax
import jax.numpy as jnp
import numpy as np

from transformer.training.losses import token_cross_entropy


def reference_smoothed_kl(logits, targets, eps):
  """KL(q || softmax) with q from an explicit one-hot: 1 - eps on the target, eps / (V - 1)
  elsewhere."""
  vocab = logits.shape[-1]
  one_hot = np.eye(vocab)[targets]
  q = one_hot * (1 - eps) + (1 - one_hot) * eps / (vocab - 1)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  return (q * (np.log(q) - log_p)).sum(-1), -(one_hot * log_p).sum(-1)


def test_label_smoothing_matches_explicit_one_hot():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float64)
  targets = rng.integers(0, 11, size=(2, 5))
  loss, nll = token_cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(targets), 0.1)
  expected_loss, expected_nll = reference_smoothed_kl(logits, targets, 0.1)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(nll, expected_nll, rtol=1e-4, atol=1e-5)


def test_without_smoothing_loss_is_nll():
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 7)), jnp.float32)
  loss, nll = token_cross_entropy(logits[None], jnp.array([[0, 3, 6]]), 0.0)
  np.testing.assert_array_equal(loss, nll)


def test_gradient_is_softmax_minus_smoothed_targets():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 4, 9))
  targets = rng.integers(0, 9, size=(2, 4))
  eps = 0.1
  grad = jax.grad(lambda x: jnp.sum(token_cross_entropy(x, jnp.asarray(targets), eps)[0]))(
      jnp.asarray(logits, jnp.float32))
  one_hot = np.eye(9)[targets]
  q = one_hot * (1 - eps) + (1 - one_hot) * eps / 8
  softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(grad, softmax - q, rtol=1e-4, atol=1e-6)


def test_large_logits_stay_finite():
  logits = jnp.array([[[1000.0, 0.0, -1000.0]]])
  loss, nll = token_cross_entropy(logits, jnp.array([[0]]), 0.1)
  assert np.isfinite(loss).all() and float(nll[0, 0]) == 0.0
