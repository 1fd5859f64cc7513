r"""Pretraining a small causal (decoder-only) language model on the embedded corpus.

Data: `stdlib_corpus/text`, the raw source files of this Python's standard library (code
and docstrings), cut into packed rows of 128 tokens; SentencePiece unigram vocabulary of
1,000 trained on first use. Model: 4 pre-LN decoder layers, d_model 128, 4 heads, d_ff 512,
rotary positions (~0.9M params). AdamW, 50 warmup steps, cosine decay; 400 steps of 32 rows.

Command:
  python -m transformer.train --config=experiments/pretrain_lm.py --workdir=runs/pretrain_lm

Runtime on 2 CPU cores: ~6 minutes (corpus and tokenizer ~1.5 min, training ~4 min).
Expected result: validation token loss from ~7 (untrained) to ~2.5 (perplexity ~12): Python
code is very predictable; the samples at the end continue validation code plausibly.
Fine-tune from it with `--config.init_from=runs/pretrain_lm` in a decoder-only finetune run.

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/pretrain_lm.py:tiny
"""

from transformer.training.presets import DECODER_ONLY, embedded_corpus_run, parse_arg, shrink


def get_config(arg: str | None = None):
  """The embedded-corpus causal-LM pretraining config; `arg` 'tiny' gives the seconds-long
  variant."""
  _, tiny = parse_arg(arg, "pretrain_lm")
  c = embedded_corpus_run("pretrain", "stdlib_corpus/text", "lm", num_train_steps=400)
  c.model.update(**DECODER_ONLY)
  return shrink(c) if tiny else c
