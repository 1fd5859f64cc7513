r"""A decoder-only Transformer language model on the One Billion Word benchmark (lm1b).

Model: 6 pre-LN decoder layers, d_model 512, 8 heads, d_ff 2048, rotary positions, tied
embeddings, SentencePiece unigram vocabulary of 32,000 (35,299,328 params: `--dry_run`).
Sentences are packed into rows of 128 tokens; 256 rows per step (~33k tokens); AdamW with
1,000 warmup steps and cosine decay to 10%; 100k steps.

Data: prepare once where TensorFlow and the network are available:
  tfds build lm1b --file_format=array_record --data_dir=DIR

Command:
  python -m transformer.train --config=experiments/lm1b.py --workdir=runs/lm1b \
      --config.data.data_dir=DIR

Runtime: on 2 CPU cores only `--dry_run` (measured 21 s, load average 9) or a few steps for a
check; the full run is sized for one accelerator (a few hours on one modern GPU or TPU host).
Expected result: validation token perplexity falling steadily through the run, to the
30s-40s per SentencePiece token range, as reported for models of this size on lm1b
(not measured in this repository).

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/lm1b.py:tiny   (catalog data: tests run it under tfds.testing.mock_data)
"""

from transformer.training.config import default_config
from transformer.training.presets import parse_arg, shrink


def get_config(arg: str | None = None):
  """The lm1b run config; `arg` 'tiny' gives the seconds-long variant (mock data in tests)."""
  _, tiny = parse_arg(arg, "lm1b")
  c = default_config()
  c.stage = "pretrain"
  c.data.update(source="tfds", name="lm1b", task="lm", seq_len=128, vocab_size=32_000,
                num_sentinels=0)
  c.model.update(architecture="decoder_only", d_model=512, num_heads=8, d_ff=2048,
                 num_encoder_layers=0, num_decoder_layers=6, dropout_rate=0.1,
                 norm_placement="pre", position_encoding="rope", max_len=128)
  c.global_batch_size = 256
  c.num_train_steps = 100_000
  c.optimizer.update(name="adamw", schedule="cosine", learning_rate=1e-3, warmup_steps=1000,
                     weight_decay=0.1, grad_clip_norm=1.0)
  c.log_every_steps = 100
  c.eval_every_steps = 2000
  c.eval_steps = 50
  c.checkpoint_every_steps = 2000
  c.max_decode_length = 64
  return shrink(c) if tiny else c
