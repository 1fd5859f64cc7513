"""The LSTM and gated-CNN language models against NumPy loops, causality, packing and learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer.data.tasks import TASKS
from transformer.decoding import generate
from transformer.models.config import ModelConfig
from transformer.models.registry import build_model
from transformer.special_ids import BOS_ID, PAD_ID
from transformer.training import flops, stages

ARCHITECTURES = ("lstm", "gated_cnn")
TINY = ModelConfig(architecture="lstm", vocab_size=13, d_model=8, num_heads=2, d_ff=16,
                   num_encoder_layers=0, num_decoder_layers=2, max_len=32, conv_kernel_size=3,
                   dropout_rate=0.1)


def tiny(architecture: str) -> ModelConfig:
  return dataclasses.replace(TINY, architecture=architecture).eval()


def init(cfg: ModelConfig, length: int = 8):
  model = build_model(cfg)
  params = model.init(jax.random.PRNGKey(0), jnp.ones((1, length), jnp.int32))["params"]
  return model, jax.tree_util.tree_map(np.asarray, jax.tree_util.tree_map(
      lambda x: x.value if hasattr(x, "value") else x, params,
      is_leaf=lambda x: hasattr(x, "value")))


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm_logits(params, tokens: np.ndarray, d: int) -> np.ndarray:
  """Step-by-step NumPy LSTM over one unpacked row of decoder inputs:
  [length] -> [length, vocab]."""
  table = params["token_embedding"]["embedding"]
  x = table[tokens] * np.sqrt(d)
  for name in sorted(k for k in params if k.startswith("layers_")):
    p = params[name]
    c, h, outputs = np.zeros(d), np.zeros(d), []
    for x_t in x:
      gates = x_t @ p["kernel"] + p["bias"] + h @ p["recurrent_kernel"]
      i, f, g, o = np.split(gates, 4)
      c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
      h = sigmoid(o) * np.tanh(c)
      outputs.append(h)
    x = np.stack(outputs)
  return x @ table.T


def numpy_gated_cnn_logits(params, tokens: np.ndarray, d: int) -> np.ndarray:
  """NumPy loop over positions and taps for one unpacked row: [length] -> [length, vocab]."""
  table = params["token_embedding"]["embedding"]
  x = table[tokens] * np.sqrt(d)
  for name in sorted(k for k in params if k.startswith("layers_")):
    kernel, bias = params[name]["kernel"], params[name]["bias"]
    out = np.zeros_like(x)
    for t in range(len(x)):
      ab = bias.copy()
      for j in range(kernel.shape[0]):
        if t - j >= 0:
          ab += x[t - j] @ kernel[j]
      out[t] = x[t] + ab[:d] * sigmoid(ab[d:])
    x = out
  return x @ table.T


@pytest.mark.parametrize("architecture, reference", [("lstm", numpy_lstm_logits),
                                                     ("gated_cnn", numpy_gated_cnn_logits)])
def test_matches_numpy_reference(architecture, reference):
  cfg = tiny(architecture)
  model, params = init(cfg)
  targets = np.array([[5, 7, 4, 9, 12, 6, 1, 8]], np.int32)
  logits = np.asarray(model.apply({"params": params}, targets))
  decoder_inputs = np.concatenate([[BOS_ID], targets[0, :-1]])
  np.testing.assert_allclose(logits[0], reference(params, decoder_inputs, cfg.d_model),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_causal_logits_at_i_depend_on_targets_before_i(architecture):
  model, params = init(tiny(architecture))
  targets = jnp.array([[5, 7, 4, 9, 12, 6, 11, 8]], jnp.int32)
  base = model.apply({"params": params}, targets)
  for j in range(targets.shape[1]):
    changed = model.apply({"params": params},
                          targets.at[0, j].set(10 if targets[0, j] != 10 else 9))
    np.testing.assert_array_equal(changed[:, :j + 1], base[:, :j + 1])
    if j + 1 < targets.shape[1]:
      assert np.abs(changed[:, j + 1] - base[:, j + 1]).max() > 1e-6


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_packed_row_equals_separate_runs(architecture):
  model, params = init(tiny(architecture))
  first, second = [5, 7, 4, 9, 12], [6, 11, 8, 4]
  packed = jnp.array([first + second + [PAD_ID] * 3], jnp.int32)
  segmentation = jnp.array([[1] * 5 + [2] * 4 + [0] * 3], jnp.int32)
  position = jnp.array([list(range(5)) + list(range(4)) + [0] * 3], jnp.int32)
  logits = model.apply({"params": params}, packed, segmentation, position)
  for tokens, start in ((first, 0), (second, 5)):
    alone = model.apply({"params": params}, jnp.array([tokens], jnp.int32))
    np.testing.assert_allclose(logits[0, start:start + len(tokens)], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_overfits_a_fixed_batch(architecture):
  cfg = dataclasses.replace(tiny(architecture), vocab_size=16, d_model=32, num_decoder_layers=1)
  model, params = init(cfg)
  targets = jax.random.randint(jax.random.PRNGKey(1), (4, 12), 4, 16)
  tx = optax.adam(1e-2)

  def loss_fn(p):
    logits = model.apply({"params": p}, targets)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @jax.jit
  def step(p, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(p, updates), opt_state, loss

  opt_state = tx.init(params)
  first = None
  for _ in range(150):
    params, opt_state, loss = step(params, opt_state)
    first = loss if first is None else first
  assert first > 2.0 and loss < 0.3, (first, loss)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_dropout_only_in_training(architecture):
  cfg = tiny(architecture)
  _, params = init(cfg)
  targets = jnp.array([[5, 7, 4, 9]], jnp.int32)
  train = build_model(cfg.train())
  a, b = (train.apply({"params": params}, targets, rngs={"dropout": jax.random.PRNGKey(s)})
          for s in (0, 1))
  assert np.abs(a - b).max() > 1e-6
  # The eval variant drops nothing: any dropout key (or none) gives the one deterministic output,
  # which is the training model's output with its dropout rate at 0.
  evaluated = build_model(cfg.eval())
  outputs = [evaluated.apply({"params": params}, targets, rngs={"dropout": jax.random.PRNGKey(s)})
             for s in (0, 1)] + [evaluated.apply({"params": params}, targets)]
  undropped = build_model(dataclasses.replace(cfg, dropout_rate=0.0).train()).apply(
      {"params": params}, targets, rngs={"dropout": jax.random.PRNGKey(0)})
  for output in outputs:
    np.testing.assert_array_equal(output, outputs[-1])
    np.testing.assert_allclose(output, undropped, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_generation_continues_the_prompt(architecture):
  cfg = tiny(architecture)
  model, params = init(cfg)
  prompt = [5, 7, 4]
  tokens = np.asarray(generate(cfg, params, jnp.array([prompt], jnp.int32), max_new_tokens=3))[0]
  expected = list(prompt)
  for _ in range(3):  # argmax of the full forward pass on the sequence so far
    expected.append(int(jnp.argmax(
        model.apply({"params": params}, jnp.array([expected + [4]]))[0, -1])))
  np.testing.assert_array_equal(tokens[:3], expected[3:])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_cached_generation_equals_recomputing_the_prefix(architecture, method):
  """The carried state (LSTM) or window (gated CNN) gives the uncached path's tokens, for
  prompts of different lengths and 20 new tokens (decoding continues past EOS: no EOS wins)."""
  cfg = dataclasses.replace(tiny(architecture), max_len=40)
  _, params = init(cfg)
  params = jax.tree.map(lambda x: 3.0 * x, params)  # peaked logits: no near-ties
  prompts = jnp.array([[5, 7, 4, 9], [6, 11, 0, 0], [12, 0, 0, 0]], jnp.int32)
  kwargs = dict(method=method, max_new_tokens=20, beam_size=3)
  cached = np.asarray(generate(cfg, params, prompts, **kwargs))
  uncached = np.asarray(generate(cfg, params, prompts, use_cache=False, **kwargs))
  np.testing.assert_array_equal(cached, uncached)
  assert np.count_nonzero(cached) > 10


def test_config_validates_conv_kernel_size():
  with pytest.raises(ValueError, match="ModelConfig.conv_kernel_size"):
    dataclasses.replace(TINY, conv_kernel_size=0)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_stages_train_baselines_on_causal_lm_tasks_only(architecture):
  assert stages.get_stage("pretrain").check("lm", architecture) is None
  assert stages.get_stage("finetune").check("prefix_lm", architecture) is None
  problem = stages.get_stage("finetune").check("seq2seq", architecture)
  assert "config.model.architecture='encoder_decoder'" in problem


def test_flops_per_architecture():
  d, v, b, t, layers = 8, 13, 2, 16, 2
  shapes = {"targets": (b, t)}
  assert (flops.train_flops_per_step(tiny("lstm"), TASKS["lm"], shapes)
          == 6 * b * t * (layers * 8 * d * d + v * d))
  assert (flops.train_flops_per_step(tiny("gated_cnn"), TASKS["lm"], shapes)
          == 6 * b * t * (layers * 2 * 3 * d * d + v * d))
