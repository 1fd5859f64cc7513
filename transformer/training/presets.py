"""Shared settings of the experiment files that run in minutes on a laptop CPU.

The embedded-corpus experiments (quickstart, pretrain_lm, pretrain_span, baselines) differ
only in stage, task and model; `embedded_corpus_run` holds everything else in one place.
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
    stage: 'pretrain' | 'finetune' | 'reward'.
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
