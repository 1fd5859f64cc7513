r"""Direct preference optimisation of the fine-tuned policy on the stdlib preferences.

Data: `stdlib_corpus/preferences`, as `reward.py` reads it: a function's code (prompt, cut to
fit keeping its start) with its own docstring sentence (chosen) against summaries of other
functions (rejected); K = 4 responses per prompt, the chosen one against each of the 3
rejected. Encoder-decoder (default): the code's first 96 tokens to the encoder, each response
(up to 31 tokens + EOS) to the decoder; decoder-only (`:decoder_only`): prompt + response in
rows of 64. Model: `finetune_lm.py`'s network, dropout off; the policy starts from the
fine-tuned run (`--config.init_from=<finetune_lm workdir>`, which must be a 'finetune' run of
the same model config) and a frozen copy of those params is the reference π_ref. Loss:
-log σ(β((log π - log π_ref)(chosen) - (log π - log π_ref)(rejected))), β = 0.1, no label
smoothing (`--config.dpo.label_smoothing=0.1` for conservative DPO). Each epoch draws the 3
rejected anew from the first 15 stored (`data.rejected_pool`). AdamW, lr 5e-4 (20 warmup
steps), cosine; 600 steps of 32 prompts (~3.8 epochs of the 5,044 train prompts that fit).

Command:
  python -m transformer.train --config=experiments/dpo.py --workdir=runs/dpo \
      --config.init_from=runs/finetune_lm
  python -m transformer.evaluate --workdir=runs/dpo --split=test

Runtime on 2 CPU cores: 572 s measured with another job's tests sharing the cores (load 3-4;
training and seven whole-split evaluations), from `finetune_lm.py`'s encoder-decoder run.
Expected result (measured in that run): the loss starts at ln 2 = 0.693 (policy = reference);
validation implicit-reward accuracy 0.673 / 0.701 / 0.732 at steps 100 / 300 / 600; test
(2,017 pairs of 808 prompts) 0.714, margin 1.14, chosen log π -93.8 and rejected -104.9
(both fall from the reference's, the rejected further). Measured on the way: lr 5e-4 for
300 steps without the pool: test 0.675 (validation 0.709).

Tiny variant (seconds: a smoke test of the same stage, task and architecture; without
init_from the reference is the scratch initialisation):
  --config=experiments/dpo.py:tiny
"""

from transformer.training.presets import (
  EMBEDDED_MODELS,
  embedded_corpus_run,
  parse_arg,
  shrink,
)

VARIANTS = ("encoder_decoder", "decoder_only")


def get_config(arg: str | None = None):
  """The DPO config of `arg`'s architecture (default encoder_decoder); 'tiny' gives the
  seconds-long variant."""
  architecture, tiny = parse_arg(arg, "dpo", VARIANTS, default="encoder_decoder")
  encoder = architecture == "encoder_decoder"
  c = embedded_corpus_run("dpo", "stdlib_corpus/preferences",
                          "preference_seq2seq" if encoder else "preference", num_train_steps=600)
  c.model.update(**EMBEDDED_MODELS[architecture])
  if encoder:  # the code's first 96 tokens (its signature and first lines) to the encoder
    c.data.update(seq_len=96, targets_len=32, num_sentinels=32)
  else:  # prompt + response in rows of 64
    c.data.seq_len = 64
  c.data.num_responses = 4
  c.data.rejected_pool = 15        # the 3 rejected drawn anew each epoch from the first 15
  c.global_batch_size = 32         # prompts per step (128 responses)
  c.optimizer.update(learning_rate=5e-4, warmup_steps=20, weight_decay=0.0)
  c.dpo.update(beta=0.1, label_smoothing=0.0)
  c.eval_steps = 0                 # the whole validation split
  c.best_metric = "accuracy"
  c.best_mode = "max"
  c.num_samples = 0
  if tiny:
    shrink(c)
    if encoder:
      c.data.update(seq_len=48, targets_len=64)  # a 400-piece vocabulary: long summaries
    else:
      c.data.seq_len = 96          # summaries of a 400-piece vocabulary need more than 32
  return c
