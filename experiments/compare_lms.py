r"""The four language-model families on one budget: LSTM, gated CNN, Transformer, Kneser-Ney.

Command (resumable: a rerun skips what is done):
  python -m transformer.compare_lms --config=experiments/compare_lms.py --workdir=runs/compare_lms
  python -m transformer.compare_lms --config=experiments/compare_lms.py:large \
      --workdir=runs/compare_lms_large

Data: `stdlib_corpus/text` (this Python's standard library source), packed rows of 128 tokens,
SentencePiece unigram vocabulary of 1,000 trained once in the workdir and shared by every
model. Each network (presets.LM_FAMILIES: 2-layer LSTM, 4-block gated CNN with kernel 4,
4-layer pre-LN Transformer with rotary positions; d_model 128, no dropout, AdamW cosine 2e-3)
trains in `<workdir>/<name>` on the same batches (same data config, seed, batch and steps);
the Kneser-Ney n-grams of `ngram_orders` count exactly those batches' tokens. Every model is
scored on the whole validation split (`run.eval_steps = 0`).

Budgets (32 rows of 128 tokens a step):
  default   200 steps, 816,424 training tokens, eval every 50 steps
  large     1000 steps, 4,081,749 training tokens (about one pass over the train split), eval
            every 250 steps

Fields: `run` (the run config every network shares, docs/config.md), `models` (name -> model
fields over run.model), `ngram_orders` (the n-gram orders fitted).

Runtime on 2 CPU cores (measured, shared with other jobs, load average 6-9): default 9 min
50 s including the corpus build and the tokenizer; large: about 28 min (networks 10.4 + 6.7 +
10.2 min).
Expected result (measured, whole validation split, perplexity per token): default:
Kneser-Ney 5-gram 17.0, 4-gram 18.3, 3-gram 22.7, gated_cnn 32.4, 2-gram 40.9, transformer
42.3, lstm 93.1; large: 5-gram 11.9, 4-gram 13.1, gated_cnn 16.2, 3-gram 17.3, transformer
18.4, lstm 28.3, 2-gram 35.7 (why the n-grams win: README.md, "Language models compared").

Tiny variant (seconds, the tests): `--config=experiments/compare_lms.py:tiny`.
"""

import ml_collections

from transformer.training.presets import LM_FAMILIES, embedded_corpus_run, parse_arg, shrink

BUDGETS = {"default": dict(num_train_steps=200, eval_every_steps=50),
           "large": dict(num_train_steps=1000, eval_every_steps=250)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The comparison at budget `arg` in BUDGETS (default 'default'); ',tiny' shrinks it."""
  arg, tiny = parse_arg(arg, "compare_lms", tuple(BUDGETS), default="default")
  run = embedded_corpus_run("pretrain", "stdlib_corpus/text", "lm", num_train_steps=1)
  run.update(**BUDGETS[arg], eval_steps=0, num_samples=0)
  run.checkpoint_every_steps = run.eval_every_steps
  run.model.num_encoder_layers = 0
  if tiny:
    shrink(run)
    run.update(eval_steps=0, num_samples=0)
  c = ml_collections.ConfigDict()
  c.run = run
  c.models = {name: dict(fields, **(dict(num_decoder_layers=1) if tiny else {}))
              for name, fields in LM_FAMILIES.items()}
  c.ngram_orders = (2, 3, 4, 5)
  return c
