"""Shared pieces of the experiment files: the embedded-corpus run, the LM families, the
argument, the tiny variant.

The embedded-corpus experiments (quickstart, pretrain_lm, pretrain_span, baselines) differ
only in stage, task and model; `embedded_corpus_run` holds everything else in one place, and
`preference_run` what the preference stages (reward, dpo, policy) share.
Every experiment takes its argument through `parse_arg`, which accepts 'tiny' (alone or after
a variant: `--config=experiments/wmt14_ende.py:base,tiny`) to `shrink` the run to seconds.
"""

import ml_collections

from transformer.training.config import default_config


def embedded_corpus_run(stage: str, name: str, task: str,
                        num_train_steps: int) -> ml_collections.ConfigDict:
  """A run config on the embedded corpus sized for 2 CPU cores.

  SentencePiece vocabulary of 1,000 trained on first use, rows of 128 tokens, 32 rows a step,
  AdamW (lr 2e-3, 50 warmup steps, cosine decay, weight decay 0.01, clipping at 1.0), a
  progress line every 25 steps, eval (10 batches) and a checkpoint every 100 steps.

  Args:
    stage: a `config.stage` value, e.g. 'pretrain'.
    name: the builder config, e.g. 'stdlib_corpus/text'.
    task: the data task, e.g. 'lm', 'span_corruption', 'seq2seq'.
    num_train_steps: optimizer steps.
  """
  c = default_config()
  c.stage = stage
  c.data.update(source="stdlib", name=name, task=task, seq_len=128, vocab_size=1000,
                num_sentinels=0, spm_input_sentence_size=100_000)
  c.model.update(d_model=128, max_len=128, dropout_rate=0.0)
  c.global_batch_size = 32
  c.num_train_steps = num_train_steps
  c.optimizer.update(name="adamw", schedule="cosine", learning_rate=2e-3, warmup_steps=50,
                     weight_decay=0.01, grad_clip_norm=1.0)
  c.log_every_steps = 25
  c.eval_every_steps = 100
  c.eval_steps = 10
  c.checkpoint_every_steps = 100
  c.max_decode_length = 32
  return c


ENCODER_DECODER = dict(  # the embedded-corpus encoder-decoder (~1M params): 2 + 2 post-LN layers
    architecture="encoder_decoder", num_heads=4, d_ff=512, num_encoder_layers=2,
    num_decoder_layers=2)
DECODER_ONLY = dict(  # the embedded-corpus causal LM (~0.9M params): 4 pre-LN layers, rotary
    architecture="decoder_only", num_heads=4, d_ff=512, num_encoder_layers=0,
    num_decoder_layers=4, norm_placement="pre", position_encoding="rope")
EMBEDDED_MODELS = {"encoder_decoder": ENCODER_DECODER, "decoder_only": DECODER_ONLY}

# The causal-LM families of experiments/baselines.py and experiments/compare_lms.py: model
# fields over embedded_corpus_run's (d_model 128, no dropout).
LM_FAMILIES = {
    "lstm": dict(architecture="lstm", num_decoder_layers=2),
    "gated_cnn": dict(architecture="gated_cnn", num_decoder_layers=4, conv_kernel_size=4),
    "transformer": DECODER_ONLY,
}


def preference_run(stage: str, architecture: str, tiny: bool, *, num_train_steps: int,
                   global_batch_size: int, learning_rate: float, warmup_steps: int,
                   weight_decay: float = 0.01, eval_steps: int = 0) -> ml_collections.ConfigDict:
  """A run on `stdlib_corpus/preferences` with the embedded model of `architecture` (the
  reward, dpo and policy experiments; `tiny`: `shrink`, then lengths that fit its summaries).

  Encoder-decoder: the code's first 96 tokens (its signature and first lines) to the encoder,
  responses of up to 32 tokens to the decoder; decoder-only: prompt + response in rows of 64.
  Dropout off, validation over `eval_steps` batches (0: the whole split), the best checkpoint
  by accuracy, no decoded samples. `global_batch_size` counts prompts (each with its
  `data.num_responses` responses).
  """
  encoder = architecture == "encoder_decoder"
  c = embedded_corpus_run(stage, "stdlib_corpus/preferences",
                          "preference_seq2seq" if encoder else "preference", num_train_steps)
  c.model.update(**EMBEDDED_MODELS[architecture])
  if encoder:
    c.data.update(seq_len=96, targets_len=32, num_sentinels=32)
  else:
    c.data.seq_len = 64
  c.global_batch_size = global_batch_size
  c.optimizer.update(learning_rate=learning_rate, warmup_steps=warmup_steps,
                     weight_decay=weight_decay)
  c.update(eval_steps=eval_steps, best_metric="accuracy", best_mode="max", num_samples=0)
  if tiny:
    shrink(c)
    if encoder:  # a 400-piece vocabulary: long summaries
      c.data.update(seq_len=48, targets_len=64)
    else:  # summaries of a 400-piece vocabulary need more than 32 tokens
      c.data.seq_len = 96
  return c


TINY = "tiny"
TINY_PACKAGES = ("email", "json", "http")  # the slice of the embedded corpus a tiny run reads


def parse_arg(arg: str | None, experiment: str, variants: tuple[str, ...] = (),
              default: str | None = None) -> tuple[str | None, bool]:
  """(variant, tiny) of an experiment file's argument, e.g. 'base,tiny' -> ('base', True).

  The argument is comma-separated words: at most one of `variants` (else `default`), and
  optionally 'tiny' (`shrink` the run to seconds on a laptop CPU).

  Raises:
    ValueError naming the experiment, the choices and what was given.
  """
  words = [word for word in (arg or "").split(",") if word]
  chosen = [word for word in words if word != TINY]
  if len(chosen) > 1 or (chosen and chosen[0] not in variants):
    expected = (f"one of {variants}, optionally with ',tiny'" if variants else "'tiny' or nothing")
    raise ValueError(f"experiments/{experiment}.py takes {expected}, got {arg!r}")
  return (chosen[0] if chosen else default), TINY in words


def shrink(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The experiment's tiny variant (in place): a seconds-long run of the same stage, task and
  architecture on a slice of the data, for smoke tests and trying a change locally.

  Model d_model 32, 2 heads, d_ff 64, one layer per stack; data: the embedded corpus limited to
  TINY_PACKAGES (catalog and file sources keep their name), SentencePiece of 400 pieces (300 for
  catalog data: small mocks have few distinct pieces), rows of 32 tokens (seq2seq: 128 in, 64
  out); 4 steps of 4 rows, a progress line every step, eval (1 batch) and a checkpoint every
  2 steps, saved synchronously; MFU against a fixed 1e11 FLOP/s (no matmul measurement).
  """
  seq2seq = c.data.task == "seq2seq"
  c.model.update(d_model=32, num_heads=2, d_ff=64, max_len=128,
                 num_encoder_layers=min(c.model.num_encoder_layers, 1),
                 num_decoder_layers=1)
  c.data.update(seq_len=128 if seq2seq else 32, targets_len=64 if seq2seq else 0,
                vocab_size=400 if c.data.source == "stdlib" else 300,
                num_sentinels=8 if c.data.num_sentinels else 0,
                spm_input_sentence_size=20_000, spm_character_coverage=0.9995)
  if c.data.source == "stdlib":
    c.data.stdlib_packages = TINY_PACKAGES
  c.update(global_batch_size=4, grad_accum_steps=1, num_train_steps=4, log_every_steps=1,
           eval_every_steps=2, eval_steps=1, checkpoint_every_steps=2, num_samples=1,
           max_decode_length=4, bleu_eval_batches=min(c.bleu_eval_batches, 1),
           peak_flops_per_device=1e11, async_checkpoints=False)
  c.optimizer.warmup_steps = 2
  return c
