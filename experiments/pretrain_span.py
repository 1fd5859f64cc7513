r"""T5-style span-corruption pretraining of a small encoder-decoder on the embedded corpus.

Data: `stdlib_corpus/text` (the standard library's source files) in chunks whose corrupted
inputs are 128 tokens: 15% of tokens dropped in spans of mean length 3, each span replaced
by a sentinel in the input and spelled out after it in the target. SentencePiece unigram
vocabulary of 1,000 with 32 sentinels, trained on first use. Model: 2 + 2 layers, d_model
128, 4 heads, d_ff 512 (~1M params). AdamW, 50 warmup steps, cosine decay; 300 steps of 32.

Command:
  python -m transformer.train --config=experiments/pretrain_span.py --workdir=runs/pretrain_span

Runtime on 2 CPU cores: ~5 minutes (corpus and tokenizer ~1.5 min, training ~3.5 min).
Expected result: validation token loss from ~7 (untrained) to ~3.5 (token accuracy ~0.35);
the samples show sentinel-delimited guesses of the dropped spans.
"""

from transformer.training.config import default_config


def get_config(arg: str | None = None):
  """The embedded-corpus span-corruption pretraining config (`arg` unused)."""
  del arg
  c = default_config()
  c.stage = "pretrain"
  c.data.update(source="stdlib", name="stdlib_corpus/text", task="span_corruption", seq_len=128,
                vocab_size=1000, num_sentinels=32, spm_input_sentence_size=100_000)
  c.model.update(architecture="encoder_decoder", d_model=128, num_heads=4, d_ff=512, num_encoder_layers=2,
                 num_decoder_layers=2, dropout_rate=0.0, max_len=128)
  c.global_batch_size = 32
  c.num_train_steps = 300
  c.optimizer.update(name="adamw", schedule="cosine", learning_rate=2e-3, warmup_steps=50,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.log_every_steps = 25
  c.eval_every_steps = 100
  c.eval_steps = 10
  c.checkpoint_every_steps = 100
  c.max_decode_length = 32
  return c
