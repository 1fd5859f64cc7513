from transformer.data.tasks import TASKS
from transformer.models.config import ModelConfig
from transformer.training import flops


def test_flops_of_a_decoder_only_step_by_hand():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=100, d_model=8, num_heads=2, d_ff=16,
                    num_encoder_layers=0, num_decoder_layers=2)
  # layers x (proj + ffn + attention) + logits
  per_token = 2 * (4 * 64 + 2 * 8 * 16 + 2 * 10 * 8) + 100 * 8
  assert (flops.train_flops_per_step(cfg, TASKS["lm"], {"targets": (3, 10)})
          == 6 * 3 * 10 * per_token)


def test_a_preference_pair_is_two_forward_passes():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=100, d_model=8, num_heads=2, d_ff=16,
                    num_encoder_layers=0, num_decoder_layers=2)
  one = flops.train_flops_per_step(cfg, TASKS["lm"], {"targets": (3, 10)})
  pair = flops.train_flops_per_step(cfg, TASKS["preference"],
                                    {"chosen": (3, 10), "rejected": (3, 10)})
  assert pair == 2 * one


def test_mfu_divides_by_the_peak_of_every_device():
  assert flops.mfu(8e9, 2.0, 1e9, 8) == 2.0
  assert flops.mfu(8e9, 2.0, 1e9, 1) == 16.0
