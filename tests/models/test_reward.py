"""The reward model: a scalar head on any architecture, read at each response's EOS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.models.config import ModelConfig
from transformer.models.registry import ARCHITECTURES, build_model
from transformer.models.reward import HEAD, reward_model, score_at_eos
from transformer.special_ids import EOS_ID
from transformer.training.state import init_params


def init(model, seed=0):
  """Unboxed params of `model`, from the smallest batch."""
  return init_params(model, jax.random.PRNGKey(seed))


def _config(architecture):
  return ModelConfig(architecture=architecture, vocab_size=40, d_model=16, num_heads=2, d_ff=32,
                     num_encoder_layers=1 if ARCHITECTURES[architecture].has_encoder else 0,
                     num_decoder_layers=2, max_len=32, dropout_rate=0.0,
                     tie_output_embedding=architecture != "decoder_only")


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_backbone_params_keep_the_language_models_paths(architecture):
  cfg = _config(architecture)
  names = lambda tree: {jax.tree_util.keystr(p, simple=True, separator="/")  # noqa: E731
                        for p, _ in jax.tree_util.tree_leaves_with_path(tree)}
  rm, lm = (names(init(m)) for m in (reward_model(cfg), build_model(cfg)))
  assert rm - lm == {f"{HEAD}/kernel", f"{HEAD}/bias"}
  assert lm - rm <= {"decoder/output_projection/kernel"}  # the replaced (untied) projection


def test_head_init_is_normal_with_variance_one_over_d_plus_one():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=40, d_model=255, num_heads=5, d_ff=8,
                    position_encoding="learned", num_encoder_layers=0, num_decoder_layers=1)
  params = init(reward_model(cfg))
  kernel = np.asarray(params[HEAD]["kernel"])
  assert kernel.shape == (255, 1)
  np.testing.assert_allclose(kernel.var(), 1 / 256, rtol=0.25)
  assert not np.asarray(params[HEAD]["bias"]).any()


def test_score_at_eos_reads_the_last_weighted_position():
  rewards = jnp.arange(12.0).reshape(3, 4)
  weights = jnp.array([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
  scores, valid = score_at_eos(rewards, weights)
  np.testing.assert_array_equal(scores, [2.0, 7.0, 0.0])
  np.testing.assert_array_equal(valid, [True, True, False])


@pytest.mark.parametrize("architecture", ["decoder_only", "encoder_decoder"])
def test_score_of_right_padded_rows_of_different_lengths_is_their_own(architecture):
  """Each row, padded to a common length in one batch, scores as it does alone (unpadded):
  the score is read at its EOS, not at a padding slot or inside the prompt."""
  cfg = _config(architecture)
  model = reward_model(cfg)
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape),
                        init(model, 1))
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
  responses = [[20, 21, 22, 23], [24]]
  encoder = ARCHITECTURES[architecture].has_encoder

  def row(prompt, response):  # (targets, weights, inputs)
    if encoder:
      return response + [EOS_ID], [1.0] * (len(response) + 1), prompt + [EOS_ID]
    return (prompt + response + [EOS_ID], [0.0] * len(prompt) + [1.0] * (len(response) + 1),
            None)

  def score(rows, length, inputs_length):
    targets = np.zeros((len(rows), length), np.int32)
    weights = np.zeros((len(rows), length), np.float32)
    inputs = np.zeros((len(rows), inputs_length), np.int32)
    for i, (t, w, x) in enumerate(rows):
      targets[i, :len(t)], weights[i, :len(w)] = t, w
      if x is not None:
        inputs[i, :len(x)] = x
    batch = {"targets": jnp.asarray(targets), "inputs": jnp.asarray(inputs)}
    rewards = model.apply({"params": params}, *model.batch_args(batch))
    return np.asarray(score_at_eos(rewards, jnp.asarray(weights))[0]), np.asarray(rewards)

  rows = [row(p, r) for p, r in zip(prompts, responses, strict=True)]
  together, _ = score(rows, 12, 8)
  for i, r in enumerate(rows):
    alone, rewards = score([r], len(r[0]), len(r[2]) if encoder else 1)
    np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone[0], rewards[0, -1], rtol=1e-6)  # the EOS is the last token
  assert together[0] != together[1]
