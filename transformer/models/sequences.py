"""Sequence helpers shared by every language model: default segmentation and positions, the
decoder's shift right, and where packed segments start.

Packed rows carry `*_segmentation` ids (1, 2, ... per example, 0 = padding) and `*_position`
(restarting at 0 per example); without them, padding is wherever the token is PAD_ID and
positions are 0..length-1.
"""

import jax.numpy as jnp

from transformer.special_ids import BOS_ID, PAD_ID


def segmentation_or_default(tokens: jnp.ndarray, segmentation: jnp.ndarray | None) -> jnp.ndarray:
  """Segmentation ids [batch, length]: as given, else 1 for non-pad tokens and 0 for padding."""
  return (tokens != PAD_ID).astype(jnp.int32) if segmentation is None else segmentation


def positions_or_default(tokens: jnp.ndarray, positions: jnp.ndarray | None) -> jnp.ndarray:
  """Positions [batch, length]: as given, else 0..length-1 in every row."""
  if positions is not None:
    return positions
  return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def shift_right(targets: jnp.ndarray, segmentation: jnp.ndarray) -> jnp.ndarray:
  """Decoder inputs: each packed segment shifted right by one, starting with BOS.

  Args:
    targets: int [batch, length].
    segmentation: int [batch, length] (0 = padding).

  Returns:
    int [batch, length]: BOS at each segment start, then the previous target; PAD on padding.
  """
  previous = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  previous_segment = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
  shifted = jnp.where(segmentation == previous_segment, previous, BOS_ID)
  return jnp.where(segmentation > 0, shifted, PAD_ID)


def segment_starts(segmentation: jnp.ndarray) -> jnp.ndarray:
  """bool [batch, length]: True where a packed segment (or the padding after it) begins."""
  previous = jnp.pad(segmentation, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
  return segmentation != previous
