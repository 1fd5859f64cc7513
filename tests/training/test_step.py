import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer.models.config import ModelConfig
from transformer.models.registry import build_model
from transformer.training.stages import get_stage
from transformer.training.state import create_train_state, init_params
from transformer.training.step import accumulate_gradients, make_eval_step, make_train_step

CFG = ModelConfig(architecture="decoder_only", vocab_size=50, d_model=16, num_heads=2, d_ff=32,
                  num_encoder_layers=0, num_decoder_layers=1, dropout_rate=0.0, max_len=16)


def random_batch(seed=0, size=8, length=12):
  rng = np.random.default_rng(seed)
  targets = rng.integers(4, CFG.vocab_size, size=(size, length)).astype(np.int32)
  # rows of different lengths: uneven microbatch weights
  lengths = rng.integers(3, length + 1, size=size)
  segmentation = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  targets = targets * segmentation
  return {"targets": jnp.asarray(targets), "targets_segmentation": jnp.asarray(segmentation),
          "targets_position": jnp.asarray(
              np.broadcast_to(np.arange(length), targets.shape).astype(np.int32))}


def setup(label_smoothing=0.1):
  model = build_model(CFG)
  loss_fn = get_stage("pretrain").make_loss(model, label_smoothing)
  params = init_params(model, jax.random.PRNGKey(0))
  return loss_fn, params


def test_gradient_accumulation_equals_the_big_batch_gradient():
  loss_fn, params = setup()
  batch, rng = random_batch(), jax.random.PRNGKey(1)
  big_grads, big_sums = accumulate_gradients(loss_fn, params, batch, rng, 1)
  acc_grads, acc_sums = accumulate_gradients(loss_fn, params, batch, rng, 4)
  for name in big_sums:
    np.testing.assert_allclose(acc_sums[name], big_sums[name], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               acc_grads, big_grads)
  # And the accumulated gradient is the gradient of the mean loss over all tokens of the batch.
  mean_loss = lambda p: loss_fn(p, batch, rng)[0] / loss_fn(p, batch, rng)[1]["tokens"]
  direct = jax.grad(mean_loss)(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a / big_sums["tokens"], b, rtol=1e-4,
                                                       atol=1e-6),
               acc_grads, direct)


def test_train_step_with_accumulation_matches_one_big_step():
  loss_fn, params = setup()
  # Adam's first step is sign(g): it would amplify float noise of near-zero grads
  tx = optax.sgd(0.5)
  batch, rng = random_batch(), jax.random.PRNGKey(2)
  results = []
  for accum in (1, 2):
    step = jax.jit(make_train_step(loss_fn, tx, "tokens", grad_accum_steps=accum))
    state, sums = step(create_train_state(params, tx), batch, rng)
    results.append((state, sums))
  (one, one_sums), (two, two_sums) = results
  assert int(one.step) == int(two.step) == 1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               one.params, two.params)
  np.testing.assert_allclose(one_sums["grad_norm"], two_sums["grad_norm"], rtol=1e-4)


def test_train_steps_reduce_the_loss_on_a_fixed_batch():
  loss_fn, params = setup(label_smoothing=0.0)
  tx = optax.adam(3e-3)
  step, evaluate = jax.jit(make_train_step(loss_fn, tx, "tokens")), jax.jit(make_eval_step(loss_fn))
  state, batch = create_train_state(params, tx), random_batch()
  before = evaluate(state.params, batch)
  for i in range(30):
    state, _ = step(state, batch, jax.random.PRNGKey(i))
  after = evaluate(state.params, batch)
  assert after["loss"] / after["tokens"] < 0.7 * before["loss"] / before["tokens"]
