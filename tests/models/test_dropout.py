import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.models.dropout import Dropout, lowbias32, uniform_bits


def numpy_lowbias32(x: np.ndarray) -> np.ndarray:
  """The published lowbias32 in NumPy uint64 arithmetic, reduced mod 2^32 by hand."""
  x = x.astype(np.uint64)
  x ^= x >> 16
  x = (x * 0x7FEB352D) % 2**32
  x ^= x >> 15
  x = (x * 0x846CA68B) % 2**32
  x ^= x >> 16
  return x.astype(np.uint32)


def apply(rate, x, seed, deterministic=False):
  return Dropout(rate).apply({}, x, deterministic, rngs={"dropout": jax.random.key(seed)})


def test_hash_matches_numpy_reference():
  x = np.concatenate([np.arange(1000), [2**32 - 1, 2**31, 0x12345678]]).astype(np.uint32)
  np.testing.assert_array_equal(lowbias32(jnp.asarray(x)), numpy_lowbias32(x))
  assert int(numpy_lowbias32(np.array([1], np.uint32))[0]) != 1


def test_bits_are_the_keyed_hash_of_the_flat_index():
  key = jax.random.key(3)
  k0, k1 = np.asarray(jax.random.key_data(key))
  expected = numpy_lowbias32(numpy_lowbias32(np.arange(24, dtype=np.uint32) ^ k0) ^ k1)
  np.testing.assert_array_equal(uniform_bits(key, (2, 3, 4)), expected.reshape(2, 3, 4))


def test_keep_rate_and_scaling():
  x = jnp.ones((64, 128, 128))
  y = np.asarray(apply(0.1, x, 0))
  kept = y != 0
  assert abs(kept.mean() - 0.9) < 0.002  # 1M draws: std 0.0003
  np.testing.assert_allclose(y[kept], 1 / 0.9, rtol=1e-6)


def test_masks_of_different_keys_and_neighbours_are_independent():
  x = jnp.ones((256, 4096))
  a = np.asarray(apply(0.5, x, 0)) != 0
  b = np.asarray(apply(0.5, x, 1)) != 0
  assert abs((a == b).mean() - 0.5) < 0.003  # two keys agree as often as chance
  assert abs((a[:, 1:] == a[:, :-1]).mean() - 0.5) < 0.003  # neighbouring elements
  assert abs((a[1:] == a[:-1]).mean() - 0.5) < 0.003  # rows


@pytest.mark.parametrize("rate,deterministic", [(0.0, False), (0.3, True)])
def test_identity_without_dropout(rate, deterministic):
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(apply(rate, x, 0, deterministic), x)


def test_inside_a_module_each_call_draws_its_own_mask():
  class Twice(nn.Module):
    @nn.compact
    def __call__(self, x):
      return Dropout(0.5)(x, False), Dropout(0.5)(x, False)

  a, b = Twice().apply({}, jnp.ones((64, 64)), rngs={"dropout": jax.random.key(0)})
  assert (np.asarray(a) != np.asarray(b)).mean() > 0.4
