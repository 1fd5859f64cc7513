import os

from transformer.models.config import ModelConfig
from transformer.training import flops, metrics


def test_progress_line_shows_step_loss_lr_throughput_mfu_eta():
  line = metrics.progress_line(120, 600, 3.21012, 1.2e-3, 5412.4, 0.3123, 130)
  assert line == "step 120/600 | loss 3.2101 | lr 1.20e-03 | 5,412 tok/s | MFU 31.2% | ETA 2m10s"


def test_writer_appends_jsonl_and_events_and_plots(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  for step in (1, 2):
    writer.write(step, "train", {"loss": 3.0 / step, "learning_rate": 1e-3})
  writer.write(2, "eval", {"loss": 2.0, "accuracy": 0.1})
  writer.close()
  records = metrics.read_jsonl(str(tmp_path))
  assert [r["split"] for r in records] == ["train", "train", "eval"] and records[1]["loss"] == 1.5
  assert os.listdir(tmp_path / "tensorboard")
  assert os.path.getsize(metrics.plot_curves(str(tmp_path))) > 0


def test_flops_of_a_decoder_only_step_by_hand():
  cfg = ModelConfig(architecture="decoder_only", vocab_size=100, d_model=8, num_heads=2, d_ff=16,
                    num_encoder_layers=0, num_decoder_layers=2)
  per_token = 2 * (4 * 64 + 2 * 8 * 16 + 2 * 10 * 8) + 100 * 8  # layers x (proj + ffn + attention) + logits
  assert flops.train_flops_per_step(cfg, {"targets": (3, 10)}) == 6 * 3 * 10 * per_token


def test_flops_of_an_encoder_decoder_step_by_hand():
  cfg = ModelConfig(architecture="encoder_decoder", vocab_size=100, d_model=8, num_heads=2, d_ff=16,
                    num_encoder_layers=2, num_decoder_layers=3)
  # Multiply-adds for 2 examples of S = 6 input and T = 5 target tokens (d 8, d_ff 16, V 100):
  encoder = 2 * 6 * 2 * (256 + 256 + 96)  # rows·S · layers · (4d² Q/K/V/O + 2·d·d_ff FFN + 2·S·d QKᵀ, AV)
  decoder = 2 * 5 * (3 * (256 + 256 + 80    # rows·T · (layers · (self-attention 4d², FFN, 2·T·d QKᵀ, AV
                          + 128 + 96)       #   + cross-attention q, o 2d² and 2·S·d QKᵀ, AV)
                     + 800)                 #   + logits V·d)
  cross_keys_values = 2 * 6 * 3 * 128  # rows·S · decoder layers · 2d² (cross-attention k, v)
  assert (encoder, decoder, cross_keys_values) == (14_592, 32_480, 4_608)
  shapes = {"inputs": (2, 6), "targets": (2, 5)}
  # 2 FLOPs per multiply-add, 3 passes (forward, backward at twice the forward).
  assert flops.train_flops_per_step(cfg, shapes) == 6 * (encoder + decoder + cross_keys_values) == 310_080
