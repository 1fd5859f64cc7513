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

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/pretrain_span.py:tiny
"""

from transformer.training.presets import ENCODER_DECODER, embedded_corpus_run, parse_arg, shrink


def get_config(arg: str | None = None):
  """The embedded-corpus span-corruption pretraining config; `arg` 'tiny' gives the
  seconds-long variant."""
  _, tiny = parse_arg(arg, "pretrain_span")
  c = embedded_corpus_run("pretrain", "stdlib_corpus/text", "span_corruption", num_train_steps=300)
  c.data.num_sentinels = 32
  c.model.update(**ENCODER_DECODER)
  return shrink(c) if tiny else c
