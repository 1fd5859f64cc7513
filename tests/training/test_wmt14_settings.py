"""experiments/wmt14_ende.py holds the paper's training settings (§5.3, §5.4, Table 3), exactly."""

import importlib.util
import os

import pytest

from transformer.training.config import model_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wmt14_config(size: str):
  spec = importlib.util.spec_from_file_location(
      "wmt14_ende", os.path.join(ROOT, "experiments", "wmt14_ende.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(size)


@pytest.mark.parametrize("size, dropout, steps, kept",
                         [("base", 0.1, 100_000, 5), ("big", 0.3, 300_000, 20)])
def test_wmt14_ende_has_the_papers_settings(size, dropout, steps, kept):
  config = wmt14_config(size)
  validate(config)
  opt = config.optimizer
  assert (opt.name, opt.b1, opt.b2, opt.eps) == ("adam", 0.9, 0.98, 1e-9)  # §5.3
  assert (opt.schedule, opt.learning_rate, opt.warmup_steps) == ("paper", 1.0, 4000)
  assert (opt.grad_clip_norm, opt.weight_decay) == (0.0, 0.0)
  assert config.label_smoothing == 0.1  # §5.4
  assert config.num_train_steps == steps
  # The last 5 / 20 are averaged.
  assert (config.keep_checkpoints, config.best_metric) == (kept, "loss")
  assert config.eval_steps == 0  # the whole validation split
  cfg = model_config(config)
  width = {"base": (512, 8, 2048), "big": (1024, 16, 4096)}[size]
  assert (cfg.d_model, cfg.num_heads, cfg.d_ff) == width  # Table 3
  assert (cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.dropout_rate) == (6, 6, dropout)
  assert (cfg.architecture, cfg.norm_placement, cfg.position_encoding) == (
      "encoder_decoder", "post", "sinusoidal")
  assert cfg.share_embeddings and cfg.tie_output_embedding and cfg.vocab_size == 37_000
  data = config.data
  assert (data.source, data.name, data.task) == ("tfds", "wmt14_translate/de-en", "seq2seq")
  assert (data.seq_len, data.targets_len, data.spm_model_type) == (256, 256, "bpe")
