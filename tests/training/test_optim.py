import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from transformer.training.config import default_config
from transformer.training.optim import make_optimizer, make_schedule


def paper_optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """The default optimizer section (Adam 0.9 / 0.98 / 1e-9, paper schedule) with overrides."""
  opt = default_config().optimizer
  opt.update(**overrides)
  return opt


def test_paper_schedule_literal_values():
  # d_model 512, warmup 4000: d^-0.5 · min(s^-0.5, s · w^-1.5) with s = count + 1, worked out by
  # hand.
  expected = {0: 1.7469e-7, 3999: 6.9877e-4, 99_999: 1.3975e-4}
  for multiplier in (1.0, 2.0):
    schedule = make_schedule(paper_optimizer_config(learning_rate=multiplier, warmup_steps=4000),
                             d_model=512, num_train_steps=100_000)
    for count, rate in expected.items():
      assert math.isclose(float(schedule(count)), multiplier * rate, rel_tol=1e-4), (
          multiplier, count)


def test_cosine_warms_up_then_decays_to_the_end_fraction():
  opt = default_config().optimizer
  opt.update(schedule="cosine", learning_rate=1e-3, warmup_steps=10, end_learning_rate_fraction=0.1)
  schedule = make_schedule(opt, d_model=64, num_train_steps=100)
  assert float(schedule(0)) == 0.0
  assert math.isclose(float(schedule(10)), 1e-3, rel_tol=1e-5)
  assert math.isclose(float(schedule(100)), 1e-4, rel_tol=1e-4)
  assert float(schedule(50)) < float(schedule(20))
  np.testing.assert_allclose([float(schedule(c)) for c in (1, 5, 9)], [1e-4, 5e-4, 9e-4], rtol=1e-5)


def test_constant_schedule_warms_up_linearly_then_stays():
  opt = paper_optimizer_config(schedule="constant", learning_rate=1e-3, warmup_steps=4)
  schedule = make_schedule(opt, d_model=64, num_train_steps=100)
  np.testing.assert_allclose([float(schedule(c)) for c in (0, 1, 2, 3, 4, 50)],
                             [0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3], rtol=1e-6)
  opt.warmup_steps = 0
  assert float(make_schedule(opt, d_model=64, num_train_steps=100)(0)) == 1e-3


def hand_adam(gradients, lr, b1, b2, eps):
  """The updates of Adam (Kingma & Ba, Algorithm 1) for a list of gradients, in float64."""
  m = v = 0.0
  updates = []
  for t, g in enumerate(gradients, start=1):
    g = np.asarray(g, np.float64)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    updates.append(-lr * m_hat / (np.sqrt(v_hat) + eps))
  return updates


def optimizer_updates(opt, gradients):
  """make_optimizer's updates for a sequence of gradients of one parameter vector."""
  tx, _ = make_optimizer(opt, d_model=64, num_train_steps=10)
  params = {"w": jnp.zeros(len(gradients[0]))}
  state, updates = tx.init(params), []
  for g in gradients:
    update, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    updates.append(np.asarray(update["w"]))
  return updates


# Two steps whose gradients differ in direction and size, so that β1 and β2 both move the
# second update; the last coordinate (|g| ~ 1e-9) is where ε = 1e-9 halves the update.
GRADIENTS = [[3.0, -4.0, 0.5, 1e-9], [-1.0, 2.0, 0.5, 1e-9]]


def test_adam_two_steps_match_a_hand_written_adam_with_the_papers_betas_and_eps():
  opt = paper_optimizer_config(schedule="constant", learning_rate=1.0, warmup_steps=0)
  assert (opt.b1, opt.b2, opt.eps, opt.grad_clip_norm) == (0.9, 0.98, 1e-9, 0.0)
  updates = optimizer_updates(opt, GRADIENTS)
  expected = hand_adam(GRADIENTS, lr=1.0, b1=0.9, b2=0.98, eps=1e-9)
  for got, want in zip(updates, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(updates[0][3], -0.5, rtol=1e-5)  # g / (|g| + ε) with |g| = ε
  # The second step is where the betas show: other betas move it far beyond the tolerance.
  for b1, b2 in ((0.0, 0.5), (0.9, 0.999), (0.8, 0.98)):
    other = hand_adam(GRADIENTS, lr=1.0, b1=b1, b2=b2, eps=1e-9)[1]
    assert np.abs(other[:3] - expected[1][:3]).max() > 1e-3, (b1, b2)


def test_clipping_bounds_the_gradient_that_enters_the_first_moment():
  opt = paper_optimizer_config(schedule="constant", learning_rate=1.0, warmup_steps=0,
                               grad_clip_norm=1.0)
  gradients = [[300.0, -400.0, 0.0], [0.3, 0.4, 0.0]]  # norm 500 (clipped to 1), then 0.5 (kept)
  updates = optimizer_updates(opt, gradients)
  clipped = [[0.6, -0.8, 0.0], [0.3, 0.4, 0.0]]
  expected = hand_adam(clipped, lr=1.0, b1=0.9, b2=0.98, eps=1e-9)
  for got, want in zip(updates, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # Unclipped, the first gradient dominates the moments and the second update is another one.
  unclipped = hand_adam(gradients, lr=1.0, b1=0.9, b2=0.98, eps=1e-9)[1]
  assert np.abs(unclipped - expected[1]).max() > 0.1


def test_adamw_decays_weights():
  opt = default_config().optimizer
  opt.update(name="adamw", schedule="constant", learning_rate=0.1, warmup_steps=0, weight_decay=0.5)
  tx, _ = make_optimizer(opt, d_model=64, num_train_steps=10)
  params = {"w": jnp.ones(2)}
  updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones(2), rtol=1e-6)


def test_frozen_params_get_no_update_no_decay_and_no_share_of_the_clipping_norm():
  opt = default_config().optimizer
  opt.update(name="adamw", schedule="constant", learning_rate=0.1, warmup_steps=0,
             weight_decay=0.5, grad_clip_norm=1.0, frozen_params="embedding, head")
  tx, _ = make_optimizer(opt, d_model=64, num_train_steps=10)
  params = {"embedding": {"table": jnp.ones(2)}, "head": jnp.ones(1), "w": jnp.ones(2)}
  grads = {"embedding": {"table": jnp.array([300.0, 400.0])}, "head": jnp.array([5.0]),
           "w": jnp.array([0.3, 0.4])}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(updates["embedding"]["table"], [0.0, 0.0])
  np.testing.assert_array_equal(updates["head"], [0.0])
  # w alone: norm 0.5, not clipped; AdamW's first step is -lr (g/|g| + decay · w)
  np.testing.assert_allclose(updates["w"], -0.1 * (np.sign([0.3, 0.4]) + 0.5), rtol=1e-5)
  opt.frozen_params = "embeddings"
  tx, _ = make_optimizer(opt, d_model=64, num_train_steps=10)
  with pytest.raises(ValueError, match=r"config.optimizer.frozen_params: 'embeddings' is not a "
                                       r"top-level param of the model; expected some of "
                                       r"\['embedding', 'head', 'w'\]"):
    tx.init(params)
