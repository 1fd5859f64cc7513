"""Conversion between the unrolled and the scanned layout of the Transformer's layer stacks.

  unrolled (scan_layers=False)           scanned (scan_layers=True)
  encoder/layer_0/ffn/wi/kernel [d, f]   encoder/layers/ffn/wi/kernel [N, d, f]
  encoder/layer_1/ffn/wi/kernel [d, f]
  ...

Under each stack ('encoder', 'decoder') the N modules 'layer_<i>' become one module 'layers'
whose leaves are the layers' leaves stacked on a new leading axis (layer i at index i); every
other entry (embeddings, final norm, heads, the decoder's step counter) is left as it is. The
same functions serve any collection that the layers fill: 'params', 'cache' (a stacked
cache_index [N] becomes N scalars) and 'intermediates'. Models without these stacks (the
baselines) pass through unchanged. Both are pure and inverse to each other.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from transformer.models.config import ModelConfig
from transformer.models.transformer import SCANNED

STACKS = ("encoder", "decoder")


def _layer_counts(cfg: ModelConfig) -> dict[str, int]:
  return {"encoder": cfg.num_encoder_layers, "decoder": cfg.num_decoder_layers}


def stack_layers(tree: Mapping[str, Any], cfg: ModelConfig) -> dict[str, Any]:
  """The unrolled layout -> the scanned one (see the module docstring).

  Args:
    tree: a collection of an unrolled model, e.g. params {'encoder': {'layer_0': ...}, ...}.
    cfg: the model's config (its layer counts).

  Returns:
    The same tree with each stack's 'layer_<i>' entries replaced by SCANNED, leaves [N, ...].
  """
  out = dict(tree)
  for stack, count in _layer_counts(cfg).items():
    if stack not in tree or not count:
      continue
    names = [f"layer_{i}" for i in range(count)]
    missing = [name for name in names if name not in tree[stack]]
    if missing:
      raise ValueError(f"stack_layers: {stack} has no {', '.join(missing)} (unrolled layers "
                       f"expected for {stack} of {count} layers; already scanned?)")
    rest = {k: v for k, v in tree[stack].items() if k not in names}
    layers = [tree[stack][name] for name in names]
    out[stack] = {**rest, SCANNED: jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}
  return out


def unstack_layers(tree: Mapping[str, Any], cfg: ModelConfig) -> dict[str, Any]:
  """The scanned layout -> the unrolled one: the inverse of `stack_layers`.

  Args:
    tree: a collection of a scanned model, e.g. params {'encoder': {'layers': ...}, ...}.
    cfg: the model's config (its layer counts).

  Returns:
    The same tree with each stack's SCANNED entry split into 'layer_0' .. 'layer_<N-1>'.
  """
  out = dict(tree)
  for stack, count in _layer_counts(cfg).items():
    if stack not in tree or not count:
      continue
    if SCANNED not in tree[stack]:
      raise ValueError(f"unstack_layers: {stack} has no '{SCANNED}' (scanned layers expected; "
                       "already unrolled?)")
    stacked = tree[stack][SCANNED]
    sizes = {x.shape[0] for x in jax.tree.leaves(stacked)}
    if sizes != {count}:
      raise ValueError(f"unstack_layers: {stack}/{SCANNED} has leading axes {sorted(sizes)}, "
                       f"expected {count} layers")
    rest = {k: v for k, v in tree[stack].items() if k != SCANNED}
    out[stack] = {**rest, **{f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked)
                             for i in range(count)}}
  return out


def convert_layout(tree: Mapping[str, Any], cfg: ModelConfig, from_scanned: bool,
                   to_scanned: bool) -> dict[str, Any]:
  """`tree` from one layout to another (scanned if True): unchanged, stacked or unstacked."""
  if from_scanned == to_scanned:
    return dict(tree)
  return stack_layers(tree, cfg) if to_scanned else unstack_layers(tree, cfg)
