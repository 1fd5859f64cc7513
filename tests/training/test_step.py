"""The pure step: gradient accumulation as a unit, and the assembled step (training/assembly.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from transformer.models.config import ModelConfig
from transformer.models.registry import build_model
from transformer.training.assembly import assemble
from transformer.training.config import default_config, model_section
from transformer.training.stages import get_stage
from transformer.training.state import init_params
from transformer.training.step import accumulate_gradients

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
  big_grads, big_sums = accumulate_gradients(loss_fn, params, {}, batch, rng, 1)
  acc_grads, acc_sums = accumulate_gradients(loss_fn, params, {}, batch, rng, 4)
  for name in big_sums:
    np.testing.assert_allclose(acc_sums[name], big_sums[name], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               acc_grads, big_grads)
  # And the accumulated gradient is the gradient of the mean loss over all tokens of the batch.
  mean_loss = lambda p: loss_fn(p, batch, rng, {})[0] / loss_fn(p, batch, rng, {})[1]["tokens"]
  direct = jax.grad(mean_loss)(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a / big_sums["tokens"], b, rtol=1e-4,
                                                       atol=1e-6),
               acc_grads, direct)


def run_config(**fields):
  """A run config of CFG's decoder-only LM (pretrain, lm, 8 rows of 12 tokens, no clipping)."""
  config = default_config()
  config.data.update(seq_len=12, vocab_size=300, num_sentinels=0)
  config.model.update(model_section(CFG))
  config.global_batch_size = 8
  config.label_smoothing = 0.1
  config.optimizer.update(grad_clip_norm=0.0, warmup_steps=0, schedule="constant")
  config.num_samples = 0  # max_len 16 holds no decoded sample (validate checks what a run decodes)
  config.update(fields)
  return config


def test_train_step_with_accumulation_matches_one_big_step():
  # SGD: Adam's first step is sign(g), which would amplify float noise of near-zero grads.
  batch = random_batch()
  results = []
  for accum in (1, 2):
    config = run_config(grad_accum_steps=accum)
    config.optimizer.update(name="sgd", learning_rate=0.5)
    parts = assemble(config, jax.devices()[:1])
    state, rng = parts.init()
    results.append(parts.train_step(state, parts.put_batch(batch), rng))
  (one, one_sums), (two, two_sums) = results
  assert int(one.step) == int(two.step) == 1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               one.params, two.params)
  np.testing.assert_allclose(one_sums["grad_norm"], two_sums["grad_norm"], rtol=1e-4)


def test_train_steps_reduce_the_loss_on_a_fixed_batch():
  config = run_config(label_smoothing=0.0)
  config.optimizer.update(learning_rate=3e-3)
  parts = assemble(config, jax.devices()[:1])
  state, _ = parts.init()
  batch = parts.put_batch(random_batch())
  before = parts.eval_step(state.params, batch, state.frozen)
  for i in range(30):
    state, _ = parts.train_step(state, batch, jax.random.PRNGKey(i))
  after = parts.eval_step(state.params, batch, state.frozen)
  assert after["loss"] / after["tokens"] < 0.7 * before["loss"] / before["tokens"]
