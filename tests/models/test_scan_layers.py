"""scan_layers and remat: the scanned stacks compute what the unrolled ones do, converted
params round-trip, decoding and every architecture work scanned, remat changes no number."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.decoding.cache import model_logits_fn
from transformer.decoding.generation import generate
from transformer.models.config import ModelConfig
from transformer.models.registry import build_model, dummy_batch
from transformer.models.reward import reward_model
from transformer.models.scan_conversion import convert_layout, stack_layers, unstack_layers
from transformer.models.sequences import shift_right
from transformer.training.losses import token_cross_entropy

ARCHITECTURES = ("encoder_decoder", "decoder_only")


def tiny(architecture: str, **overrides) -> ModelConfig:
  fields = dict(architecture=architecture, vocab_size=31, d_model=16, num_heads=2, d_ff=32,
                num_encoder_layers=2, num_decoder_layers=3, max_len=16, dropout_rate=0.1,
                attention_dropout_rate=0.1)
  return ModelConfig(**{**fields, **overrides})


def scanned(cfg: ModelConfig) -> ModelConfig:
  return dataclasses.replace(cfg, scan_layers=True)


def init(model: nn.Module, seed: int = 0):
  return nn.meta.unbox(model.init(jax.random.key(seed), *model.batch_args(dummy_batch()))
                       ["params"])


def batch(seed: int = 0) -> dict[str, jnp.ndarray]:
  rng = np.random.default_rng(seed)
  inputs = rng.integers(4, 31, (2, 6)).astype(np.int32)
  inputs[1, 4:] = 0
  targets = rng.integers(4, 31, (2, 7)).astype(np.int32)
  targets[0, 5:] = 0
  return {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(targets)}


def test_remat_and_scan_layers_are_validated():
  with pytest.raises(ValueError, match=r"ModelConfig.remat must be one of \('none', 'full', "
                                       r"'dots'\), got 'some'"):
    ModelConfig(remat="some")
  with pytest.raises(ValueError, match="ModelConfig.scan_layers must be a bool"):
    ModelConfig(scan_layers="yes")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_scanned_params_are_the_unrolled_ones_stacked(architecture):
  cfg = tiny(architecture)
  unrolled = init(build_model(cfg))
  stacked = init(build_model(scanned(cfg)))
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
  assert shapes(stack_layers(unrolled, cfg)) == shapes(stacked)
  assert list(stacked["decoder"]["layers"]["ffn"]["wi"]["kernel"].shape) == [3, 16, 32]
  jax.tree.map(np.testing.assert_array_equal, unstack_layers(stack_layers(unrolled, cfg), cfg),
               unrolled)
  jax.tree.map(np.testing.assert_array_equal, stack_layers(unstack_layers(stacked, cfg), cfg),
               stacked)
  # each scanned layer drew its own init keys
  kernel = stacked["decoder"]["layers"]["ffn"]["wi"]["kernel"]
  assert not np.allclose(kernel[0], kernel[1])


def test_conversion_names_a_wrong_layout():
  cfg = tiny("decoder_only")
  unrolled = init(build_model(cfg))
  with pytest.raises(ValueError, match="unstack_layers: decoder has no 'layers'"):
    unstack_layers(unrolled, cfg)
  with pytest.raises(ValueError, match="stack_layers: decoder has no layer_3"):
    stack_layers(unrolled, dataclasses.replace(cfg, num_decoder_layers=4))
  assert convert_layout(unrolled, cfg, False, False) == unrolled


def unrolled_and_scanned(make_model, cfg, seed, **apply_kwargs):
  """(output of make_model(cfg), output of its scanned variant with the same params stacked)."""
  params = init(make_model(cfg), seed=seed)
  args = make_model(cfg).batch_args(batch())
  expected = make_model(cfg).apply({"params": params}, *args, **apply_kwargs)
  got = make_model(scanned(cfg)).apply({"params": stack_layers(params, cfg)}, *args,
                                       **apply_kwargs)
  return expected, got


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("norm_placement", ["post", "pre"])
def test_scanned_logits_equal_unrolled(architecture, norm_placement):
  cfg = tiny(architecture, norm_placement=norm_placement).eval()
  expected, got = unrolled_and_scanned(build_model, cfg, seed=1)
  np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_scanned_intermediates_are_the_unrolled_ones_stacked(architecture):
  cfg = tiny(architecture).eval()
  (_, expected), (_, got) = unrolled_and_scanned(build_model, cfg, seed=2,
                                                 mutable=["intermediates"])
  got = unstack_layers(got["intermediates"], cfg)
  assert jax.tree.structure(got) == jax.tree.structure(expected["intermediates"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), got,
               expected["intermediates"])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_scanned_reward_model_equals_unrolled(architecture):
  expected, got = unrolled_and_scanned(reward_model, tiny(architecture).eval(), seed=3)
  np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_scanned_cached_decoding_equals_unrolled_forward(architecture):
  cfg = tiny(architecture, dropout_rate=0.0, attention_dropout_rate=0.0)
  params = init(build_model(cfg), seed=4)
  data = batch(5)
  targets = data["targets"].at[0, 5:].set(7)
  model = build_model(cfg.eval())
  full_args = (data["inputs"], targets) if architecture == "encoder_decoder" else (targets,)
  full = model.apply({"params": params}, *full_args)
  inputs = data["inputs"] if architecture == "encoder_decoder" else None

  @jax.jit
  def step_by_step(params):  # -> logits [batch, length, vocab]
    logits_fn, _, cache = model_logits_fn(scanned(cfg), params, inputs, num_rows=2,
                                          max_decode_len=9)
    step = lambda cache, tokens: logits_fn(tokens[:, None], cache)[::-1]  # noqa: E731
    decoder_inputs = shift_right(targets, jnp.ones_like(targets))
    return jax.lax.scan(step, cache, decoder_inputs.T)[1].transpose(1, 0, 2)

  np.testing.assert_allclose(step_by_step(stack_layers(params, cfg)), full, atol=1e-5,
                             rtol=1e-5)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_scanned_generation_equals_unrolled(method):
  cfg = tiny("encoder_decoder", dropout_rate=0.0, attention_dropout_rate=0.0)
  params = jax.tree.map(lambda x: 3 * x, init(build_model(cfg), seed=6))
  prompts = batch(7)["inputs"]
  kwargs = dict(method=method, max_new_tokens=6, beam_size=3)
  expected = generate(cfg, params, prompts, **kwargs)
  got = generate(scanned(cfg), stack_layers(params, cfg), prompts, **kwargs)
  jax.tree.map(np.testing.assert_array_equal, got, expected)


@pytest.mark.parametrize("architecture, scan", [("encoder_decoder", False),
                                                ("decoder_only", True)])
def test_remat_gives_the_same_loss_and_gradients(architecture, scan):
  """With dropout on: remat recomputes the forward pass with the same masks."""
  cfg = tiny(architecture, scan_layers=scan)
  data = batch(8)
  params = init(build_model(cfg), seed=9)

  def loss_and_grads(remat):
    model = build_model(dataclasses.replace(cfg, remat=remat))

    def loss(params):
      logits = model.apply({"params": params}, *model.batch_args(data),
                           rngs={"dropout": jax.random.key(10)})
      weights = (data["targets"] > 0).astype(jnp.float32)
      return jnp.sum(token_cross_entropy(logits, data["targets"], 0.1)[0] * weights)
    return jax.jit(jax.value_and_grad(loss))(params)

  expected = loss_and_grads("none")
  for remat in ("full", "dots"):
    got = loss_and_grads(remat)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), got,
                 expected)
