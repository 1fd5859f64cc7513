"""Reward models: any architecture of the registry with a scalar head instead of its logits.

    model = reward_model(config)                      # config.architecture: any registered
    rewards = model.apply({"params": p}, *model.batch_args(batch))   # float32 [batch, length]
    scores, valid = score_at_eos(rewards, weights)                  # [batch] each

The module is the architecture's own class with one change: `__call__` asks the backbone for
its final hidden states (`return_hidden=True`, before the output projection) and applies
`reward_head`, a Dense(d_model -> 1), at every target position. The score of a sequence is
read at its end-of-sequence token: the last position whose response weight is on (never a
padding slot, never inside the prompt). For a decoder-only model that position's hidden
state has seen the prompt and the whole response; for an encoder-decoder the prompt is the
encoder input and the response the decoder's targets.

Params: the backbone's, at the same paths as the language model of the same config, plus
`reward_head/kernel` [d_model, 1] and `reward_head/bias` [1]. So `init_from` a fine-tuned
run restores every backbone param and initialises only the head, and an untied output
projection is left behind (it is never built). Head init (Stiennon et al. 2020): kernel
N(0, 1/(d_model + 1)), bias 0.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from transformer.models.config import ModelConfig
from transformer.models.registry import architecture

HEAD = "reward_head"


def head_init(d_model: int) -> Any:
  """The head kernel's initialiser: normal with variance 1 / (d_model + 1)."""
  return nn.initializers.normal(stddev=(d_model + 1) ** -0.5)


@functools.cache
def reward_class(backbone: type[nn.Module]) -> type[nn.Module]:
  """The reward-model class of an architecture class (made once per class)."""

  class RewardModel(backbone):  # pytype: disable=invalid-base-class
    """`backbone` with a scalar head on its final hidden states (see the module docstring)."""

    def setup(self):
      super().setup()
      cfg = self.config
      self.reward_head = nn.Dense(
          1, dtype=jnp.float32, param_dtype=cfg.jnp_param_dtype, name=HEAD,
          kernel_init=nn.with_logical_partitioning(head_init(cfg.d_model), ("embed", None)),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)))

    def __call__(self, *args: Any) -> jnp.ndarray:
      """The backbone's `__call__` arguments -> rewards float32 [batch, target_len]."""
      hidden = super().__call__(*args, return_hidden=True)
      return self.reward_head(hidden)[..., 0]

  RewardModel.__name__ = RewardModel.__qualname__ = f"Reward{backbone.__name__}"
  return RewardModel


def reward_model(config: ModelConfig) -> nn.Module:
  """The reward model of `config.architecture` (in the config's variant: train or eval)."""
  return reward_class(architecture(config.architecture))(config)


def score_at_eos(rewards: jnp.ndarray, weights: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Each row's reward at its last weighted position (the response's EOS).

  Args:
    rewards: float [batch, length], the head at every position.
    weights: [batch, length], > 0 on the response and its EOS (right-padded rows).

  Returns:
    (scores float32 [batch], valid bool [batch]); a row without weights (a filler row, a
    missing response) is not valid and scores 0.
  """
  positions = jnp.arange(weights.shape[-1])
  last = jnp.max(jnp.where(weights > 0, positions, -1), axis=-1)
  valid = last >= 0
  score = jnp.take_along_axis(rewards, jnp.maximum(last, 0)[:, None], axis=-1)[:, 0]
  return jnp.where(valid, score, 0.0).astype(jnp.float32), valid
