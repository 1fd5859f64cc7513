"""The whole Transformer: NumPy equivalence, causality, padding, packing, and learning."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest

from transformer.models.config import ModelConfig
from transformer.models.registry import build_model
from transformer.models.sequences import shift_right
from transformer.training.losses import token_cross_entropy

TINY = ModelConfig(vocab_size=23, d_model=16, num_heads=4, d_ff=32, num_encoder_layers=2,
                   num_decoder_layers=2, max_len=32)


def tokens(shape, seed, low=4):
  return jnp.asarray(np.random.default_rng(seed).integers(low, TINY.vocab_size, size=shape),
                     jnp.int32)


def init(cfg, *args):
  variables = build_model(cfg).init(jax.random.PRNGKey(0), *args)
  return nn.meta.unbox(variables["params"])


def forward(cfg, params, *args, **kwargs):
  return jax.jit(build_model(cfg.eval()).apply)({"params": params}, *args, **kwargs)


def test_shift_right_restarts_each_segment():
  targets = jnp.array([[5, 6, 7, 8, 9, 0]])
  segmentation = jnp.array([[1, 1, 1, 2, 2, 0]])
  np.testing.assert_array_equal(shift_right(targets, segmentation), [[2, 5, 6, 2, 8, 0]])


def test_encoder_decoder_matches_numpy():
  inputs = np.array(tokens((2, 7), 1))
  inputs[0, 5:] = 0
  targets = np.array(tokens((2, 6), 2))
  targets[1, 4:] = 0
  params = init(TINY, inputs, targets)
  logits = np.asarray(forward(TINY, params, inputs, targets))
  for b in range(2):
    expected = ref.encoder_decoder(params, inputs[b], targets[b])
    valid = targets[b] != 0
    np.testing.assert_allclose(logits[b][valid], expected[valid], atol=1e-5, rtol=1e-5)


def test_k_targets_per_input_equal_the_input_repeated():
  """Targets of k * b rows read input i in rows i*k .. i*k + k-1 (encoded once), exactly as
  the k-times repeated inputs would."""
  inputs = np.array(tokens((2, 7), 3))
  inputs[1, 4:] = 0
  targets = np.array(tokens((6, 5), 4))
  targets[2, 3:] = 0
  params = init(TINY, inputs, targets[:2])
  shared = forward(TINY, params, inputs, targets)
  repeated = forward(TINY, params, np.repeat(inputs, 3, axis=0), targets)
  np.testing.assert_allclose(shared, repeated, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("architecture", ["encoder_decoder", "decoder_only"])
def test_causality_gradient_is_exactly_zero(architecture):
  cfg = dataclasses.replace(TINY, architecture=architecture).eval()
  model = build_model(cfg)
  inputs, targets = tokens((1, 5), 3), tokens((1, 6), 4)
  args = (inputs, targets) if architecture == "encoder_decoder" else (targets,)
  variables = nn.meta.unbox(model.init(jax.random.PRNGKey(0), *args))
  perturbations = variables["perturbations"]

  def outputs(perturbation):  # [target_len]: each position's summed logits
    logits = model.apply({"params": variables["params"], "perturbations": perturbation}, *args)
    return logits[0].sum(-1)

  # [t, 1, t, d_model]
  jacobian = jax.jit(jax.jacrev(outputs))(perturbations)["decoder"]["embedded"]
  # g[i, p]: sensitivity of output i to decoder input p, which holds target p - 1.
  g = np.abs(np.asarray(jacobian[:, 0])).sum(-1)
  assert np.all(np.triu(g, k=1) == 0.0), g
  assert np.all(np.diag(g) > 0)


def test_padding_changes_no_real_output():
  inputs = np.array(tokens((2, 8), 5))
  inputs[:, 6:] = 0
  targets = np.array(tokens((2, 7), 6))
  targets[:, 5:] = 0
  params = init(TINY, inputs, targets)
  segs = dict(inputs_segmentation=jnp.asarray(inputs != 0, jnp.int32),
              targets_segmentation=jnp.asarray(targets != 0, jnp.int32))
  base = np.asarray(forward(TINY, params, inputs, targets, **segs))
  noisy_inputs, noisy_targets = inputs.copy(), targets.copy()
  noisy_inputs[:, 6:] = np.asarray(tokens((2, 2), 7))
  noisy_targets[:, 5:] = np.asarray(tokens((2, 2), 8))
  noisy = np.asarray(forward(TINY, params, noisy_inputs, noisy_targets, **segs))
  np.testing.assert_allclose(noisy[:, :5], base[:, :5], atol=1e-6)


@pytest.mark.parametrize("position_encoding", ["sinusoidal", "learned", "rope"])
@pytest.mark.parametrize("norm_placement", ["post", "pre"])
def test_packed_segments_never_attend_to_each_other(position_encoding, norm_placement):
  cfg = dataclasses.replace(TINY, position_encoding=position_encoding,
                            norm_placement=norm_placement)
  a_in, a_tg, b_in, b_tg = (tokens((1, 4), 9), tokens((1, 3), 10), tokens((1, 3), 11),
                            tokens((1, 4), 12))
  packed_inputs = jnp.concatenate([a_in, b_in, jnp.zeros((1, 1), jnp.int32)], axis=1)
  packed_targets = jnp.concatenate([a_tg, b_tg, jnp.zeros((1, 1), jnp.int32)], axis=1)
  packing = dict(
      inputs_segmentation=jnp.array([[1, 1, 1, 1, 2, 2, 2, 0]]),
      targets_segmentation=jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]]),
      inputs_position=jnp.array([[0, 1, 2, 3, 0, 1, 2, 0]]),
      targets_position=jnp.array([[0, 1, 2, 0, 1, 2, 3, 0]]))
  params = init(cfg, packed_inputs, packed_targets)
  packed = np.asarray(forward(cfg, params, packed_inputs, packed_targets, **packing))
  alone_a = np.asarray(forward(cfg, params, a_in, a_tg))
  alone_b = np.asarray(forward(cfg, params, b_in, b_tg))
  np.testing.assert_allclose(packed[0, :3], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(packed[0, 3:7], alone_b[0], atol=1e-5)


def test_decoder_only_packing_matches_separate_runs():
  cfg = dataclasses.replace(TINY, architecture="decoder_only")
  a, b = tokens((1, 3), 13), tokens((1, 4), 14)
  packed = jnp.concatenate([a, b], axis=1)
  params = init(cfg, packed)
  out = np.asarray(forward(cfg, params, packed,
                           targets_segmentation=jnp.array([[1, 1, 1, 2, 2, 2, 2]]),
                           targets_position=jnp.array([[0, 1, 2, 0, 1, 2, 3]])))
  np.testing.assert_allclose(out[0, :3], np.asarray(forward(cfg, params, a))[0], atol=1e-5)
  np.testing.assert_allclose(out[0, 3:], np.asarray(forward(cfg, params, b))[0], atol=1e-5)


def test_tiny_model_overfits_a_fixed_batch():
  cfg = dataclasses.replace(TINY, dropout_rate=0.0, d_model=32, d_ff=64)
  inputs, targets = tokens((8, 6), 20), tokens((8, 6), 21)
  model = build_model(cfg.train())
  params = init(cfg, inputs, targets)
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  def loss_fn(p):
    loss, _ = token_cross_entropy(model.apply({"params": p}, inputs, targets), targets)
    return loss.mean()

  @jax.jit
  def step(p, s):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, s = optimizer.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  first = None
  for _ in range(300):
    params, opt_state, loss = step(params, opt_state)
    first = float(loss) if first is None else first
  assert first > 2.5  # ~log(23) at the start
  assert float(loss) < 0.1
