import math

import jax.numpy as jnp
import numpy as np
import optax

from transformer.training.config import default_config
from transformer.training.optim import make_optimizer, make_schedule, paper_schedule


def test_paper_schedule_matches_hand_computation():
  schedule = paper_schedule(d_model=512, warmup_steps=4000)
  for count in (0, 1, 999, 3999, 4000, 99_999):
    step = count + 1  # the paper's step_num starts at 1
    expected = 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
    assert math.isclose(float(schedule(count)), expected, rel_tol=1e-5)
  # Peak at the end of warmup: d_model^-0.5 * warmup^-0.5.
  assert math.isclose(float(schedule(3999)), (512 * 4000) ** -0.5, rel_tol=1e-5)


def test_cosine_warms_up_then_decays_to_the_end_fraction():
  opt = default_config().optimizer
  opt.update(schedule="cosine", learning_rate=1e-3, warmup_steps=10, end_learning_rate_fraction=0.1)
  schedule = make_schedule(opt, d_model=64, num_train_steps=100)
  assert float(schedule(0)) == 0.0
  assert math.isclose(float(schedule(10)), 1e-3, rel_tol=1e-5)
  assert math.isclose(float(schedule(100)), 1e-4, rel_tol=1e-4)
  assert float(schedule(50)) < float(schedule(20))


def test_adam_uses_the_papers_betas_and_clipping_bounds_the_update():
  opt = default_config().optimizer
  opt.update(schedule="constant", learning_rate=1.0, warmup_steps=0, grad_clip_norm=1.0)
  tx, _ = make_optimizer(opt, d_model=64, num_train_steps=10)
  params = {"w": jnp.zeros(3)}
  grads = {"w": jnp.array([300.0, 400.0, 0.0])}
  state = tx.init(params)
  updates, _ = tx.update(grads, state, params)
  # First Adam step: m/(sqrt(v)+eps) = g/|g| elementwise whatever the clipping; check via an
  # explicit chain.
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adam(1.0, b1=0.9, b2=0.98, eps=1e-9))
  expected, _ = reference.update(grads, reference.init(params), params)
  np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)


def test_adamw_decays_weights():
  opt = default_config().optimizer
  opt.update(name="adamw", schedule="constant", learning_rate=0.1, warmup_steps=0, weight_decay=0.5)
  tx, _ = make_optimizer(opt, d_model=64, num_train_steps=10)
  params = {"w": jnp.ones(2)}
  updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * 0.5 * np.ones(2), rtol=1e-6)
