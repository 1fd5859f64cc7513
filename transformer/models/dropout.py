"""Dropout (paper §5.4) with its keep-mask drawn from a counter-based hash.

Dropout(x) = x / (1 - rate) where a uniform draw u >= rate, else 0, elementwise.

The draws are 32-bit: u = H(H(i ^ k0) ^ k1) / 2^32 for the flat index i of each element,
where (k0, k1) are the two 32-bit words of the call's 'dropout' key (flax's `make_rng`
folds each call site's path into the stream, so every call has its own) and H is the
"lowbias32" integer hash (C. Wellons, 2018; a bijection of uint32 with near-ideal
avalanche). Each element costs a few integer multiplies and shifts that vectorise, where
threefry's bits for the same mask cost ~50x as much on CPU (docs/performance.md): the
attention weights alone need batch * heads * len^2 draws per layer. The masks of two calls
are as unrelated as their keys; the keep probability is exact to 2^-32.
`nn.Dropout`'s interface: `Dropout(rate)(x, deterministic)`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_M1, _M2 = 0x7FEB352D, 0x846CA68B  # lowbias32's multipliers


def lowbias32(x: jnp.ndarray) -> jnp.ndarray:
  """The lowbias32 hash of uint32 x, elementwise (a bijection of uint32)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(_M1)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(_M2)
  return x ^ (x >> 16)


def uniform_bits(key: jax.Array, shape: tuple[int, ...]) -> jnp.ndarray:
  """uint32 [*shape]: one hashed 32-bit word per element, keyed by `key`."""
  if int(np.prod(shape)) > 2**32:
    raise ValueError(f"dropout over {shape}: more than 2^32 elements per call")
  words = jax.random.key_data(key).ravel()  # a threefry key's 2 words (or rbg's first 2 of 4)
  k0, k1 = words[0], words[1]
  counter = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
  return lowbias32(lowbias32(counter ^ k0) ^ k1)


class Dropout(nn.Module):
  """Zeroes each element with probability `rate` and scales the rest by 1 / (1 - rate).

  Attributes:
    rate: drop probability in [0, 1).
  """

  rate: float

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
    """x: any shape -> same; the identity when deterministic or rate == 0."""
    if deterministic or self.rate == 0.0:
      return x
    threshold = jnp.uint32(min(round(self.rate * 2**32), 2**32 - 1))
    keep = uniform_bits(self.make_rng("dropout"), x.shape) >= threshold
    return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros_like(x))
