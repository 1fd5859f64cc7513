r"""The classic language models beside the Transformer, on the same pretraining task.

Data: `stdlib_corpus/text` (this Python's standard library source), packed rows of 128
tokens, SentencePiece unigram vocabulary of 1,000 (as `pretrain_lm.py`). Models, all with
d_model 128, tied output, no dropout, and the same optimizer (AdamW, cosine, peak 2e-3,
50 warmup steps), 200 steps of 32 rows (~0.8M tokens):
  :lstm        2 LSTM layers (~0.39M params)
  :gated_cnn   4 gated convolution blocks, kernel width 4, receptive field 13 tokens (~0.65M)
  :transformer 4 pre-LN decoder layers, 4 heads, d_ff 512, rotary positions (~0.92M)
The four families on one matched budget, whole validation split, one table:
`python -m transformer.compare_lms` (experiments/compare_lms.py; README.md, "Language models
compared").

Command:
  python -m transformer.train --config=experiments/baselines.py:lstm --workdir=runs/baselines_lstm
  (likewise :gated_cnn and :transformer)

Runtime on 2 CPU cores: corpus and tokenizer ~1 min once; training ~1.5 (lstm), ~2
(gated_cnn), ~3.5 (transformer) minutes.
Expected result (eval perplexity on the 10 validation batches after 200 steps, measured):
transformer ~101, gated_cnn ~119, lstm ~172. These 10 batches are a hard sample; on the
whole validation split (compare_lms.py, same 200 steps): gated_cnn 32.4, transformer 42.3,
lstm 93.1.

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/baselines.py:lstm,tiny
"""

from transformer.training.presets import LM_FAMILIES, embedded_corpus_run, parse_arg, shrink


def get_config(arg: str | None = None):
  """The causal-LM pretraining config for model `arg` in presets.LM_FAMILIES (default 'lstm');
  ',tiny' shrinks it."""
  arg, tiny = parse_arg(arg, "baselines", tuple(LM_FAMILIES), default="lstm")
  c = embedded_corpus_run("pretrain", "stdlib_corpus/text", "lm", num_train_steps=200)
  c.model.update(num_encoder_layers=0, **LM_FAMILIES[arg])
  return shrink(c) if tiny else c
