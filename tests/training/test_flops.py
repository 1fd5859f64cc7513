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


def test_k_ranked_responses_are_k_forward_passes_without_logits():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=100, d_model=8, num_heads=2, d_ff=16,
                    num_encoder_layers=0, num_decoder_layers=2)
  one = flops.train_flops_per_step(cfg, TASKS["lm"], {"targets": (3, 10)})
  logits = 6 * 3 * 10 * 100 * 8  # the reward model's scalar head replaces them
  shapes = {f"response_{k}{s}": (3, 10) for k in range(3) for s in ("", "_weights")}
  assert (flops.train_flops_per_step(cfg, TASKS["preference"], shapes, logits=False)
          == 3 * (one - logits))
  # dpo: the policy's logits, forward and backward, and the reference's forward
  assert (flops.train_flops_per_step(cfg, TASKS["preference"], shapes, passes=4.0)
          == 3 * one * 4 / 3)


def test_k_responses_to_one_input_run_the_encoder_once():
  cfg = ModelConfig(architecture="encoder_decoder", vocab_size=100, d_model=8, num_heads=2,
                    d_ff=16, num_encoder_layers=2, num_decoder_layers=3)
  encoder = 2 * 6 * 2 * (256 + 256 + 96)  # as in the hand count below: rows 2, S = 6
  seq2seq = flops.train_flops_per_step(cfg, TASKS["seq2seq"], {"inputs": (2, 6),
                                                               "targets": (2, 5)})
  logits = 6 * 2 * 5 * 800
  shapes = {"inputs": (2, 6), **{f"response_{k}{s}": (2, 5) for k in range(4)
                                 for s in ("", "_weights")}}
  assert (flops.train_flops_per_step(cfg, TASKS["preference_seq2seq"], shapes, logits=False)
          == 4 * (seq2seq - logits - 6 * encoder) + 6 * encoder)


def test_mfu_divides_by_the_peak_of_every_device():
  assert flops.mfu(8e9, 2.0, 1e9, 8) == 2.0
  assert flops.mfu(8e9, 2.0, 1e9, 1) == 16.0


def test_flops_of_an_encoder_decoder_step_by_hand():
  cfg = ModelConfig(architecture="encoder_decoder", vocab_size=100, d_model=8, num_heads=2,
                    d_ff=16, num_encoder_layers=2, num_decoder_layers=3)
  # Multiply-adds for 2 examples of S = 6 input and T = 5 target tokens (d 8, d_ff 16, V 100):
  # rows·S · layers · (4d² Q/K/V/O + 2·d·d_ff FFN + 2·S·d QKᵀ, AV)
  encoder = 2 * 6 * 2 * (256 + 256 + 96)
  # rows·T · (layers · (self-attention 4d², FFN, 2·T·d QKᵀ, AV
  #                     + cross-attention q, o 2d² and 2·S·d QKᵀ, AV) + logits V·d)
  decoder = 2 * 5 * (3 * (256 + 256 + 80 + 128 + 96) + 800)
  cross_keys_values = 2 * 6 * 3 * 128  # rows·S · decoder layers · 2d² (cross-attention k, v)
  assert (encoder, decoder, cross_keys_values) == (14_592, 32_480, 4_608)
  shapes = {"inputs": (2, 6), "targets": (2, 5)}
  # 2 FLOPs per multiply-add, 3 passes (forward, backward at twice the forward).
  assert (flops.train_flops_per_step(cfg, TASKS["seq2seq"], shapes)
          == 6 * (encoder + decoder + cross_keys_values) == 310_080)
