r"""T5-style span-corruption pretraining of an encoder-decoder on C4 (English).

Model: T5-small-like: 6 + 6 pre-LN layers, d_model 512, 8 heads, d_ff 2048, tied embeddings,
SentencePiece vocabulary of 32,000 with 100 sentinels (60,524,544 params: `--dry_run`).
Inputs of 512 tokens with 15% noise in spans of mean length 3 (targets hold the sentinels
and the dropped spans); 128 rows per step (~65k input tokens); AdamW, 10k warmup steps,
cosine decay; 100k steps.

Data: prepare once where TensorFlow and the network are available:
  tfds build c4/en --file_format=array_record --data_dir=DIR   (large: ~800 GB)

Command:
  python -m transformer.train --config=experiments/c4.py --workdir=runs/c4 \
      --config.data.data_dir=DIR

Runtime: on 2 CPU cores only `--dry_run` (measured 28 s, load average 5); the full run needs
an accelerator pod
slice (about a day on a TPU v3-8).
Expected result: span-corruption validation loss falling below ~2.0 nats per target token
within the run, in line with T5-small pretraining curves (not measured in this repository).
Fine-tune the result with `--config.init_from=runs/c4` in a finetune experiment.

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/c4.py:tiny   (catalog data: tests run it under tfds.testing.mock_data)
"""

from transformer.training.config import default_config
from transformer.training.presets import parse_arg, shrink


def get_config(arg: str | None = None):
  """The C4 span-corruption run config; `arg` 'tiny' gives the seconds-long variant (mock data
  in tests)."""
  _, tiny = parse_arg(arg, "c4")
  c = default_config()
  c.stage = "pretrain"
  c.data.update(source="tfds", name="c4/en", task="span_corruption", seq_len=512, vocab_size=32_000,
                num_sentinels=100)
  c.model.update(architecture="encoder_decoder", d_model=512, num_heads=8, d_ff=2048,
                 num_encoder_layers=6, num_decoder_layers=6, dropout_rate=0.1,
                 norm_placement="pre", max_len=512)
  c.global_batch_size = 128
  c.num_train_steps = 100_000
  c.optimizer.update(name="adamw", schedule="cosine", learning_rate=1e-3, warmup_steps=10_000,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.log_every_steps = 100
  c.eval_every_steps = 5000
  c.eval_steps = 50
  c.checkpoint_every_steps = 5000
  c.max_decode_length = 64
  return shrink(c) if tiny else c
