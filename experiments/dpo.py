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

Runtime on 2 CPU cores: 248 s measured in `python -m transformer.rlhf_pipeline` with
nothing else running (training and seven whole-split evaluations; 378 s on a slower
machine), from its fine-tuned encoder-decoder. Expected result (measured in that run): the
loss starts at ln 2 = 0.693 (policy = reference); validation implicit-reward accuracy 0.693 /
0.737 / 0.750 at steps 100 / 300 / 600; test (2,017 pairs of 808 prompts) 0.720, margin
1.21, chosen log π -95.3 and rejected -107.2 (both fall from the reference's, the rejected
further). Measured on the way: 400 steps: test 0.696; other fine-tuned runs, 600 steps:
0.715, 0.704; 300 steps without the
pool: 0.675.

Tiny variant (seconds: a smoke test of the same stage, task and architecture; without
init_from the reference is the scratch initialisation):
  --config=experiments/dpo.py:tiny
"""

from transformer.training.presets import parse_arg, preference_run

VARIANTS = ("encoder_decoder", "decoder_only")


def get_config(arg: str | None = None):
  """The DPO config of `arg`'s architecture (default encoder_decoder); 'tiny' gives the
  seconds-long variant."""
  architecture, tiny = parse_arg(arg, "dpo", VARIANTS, default="encoder_decoder")
  c = preference_run("dpo", architecture, tiny, num_train_steps=600,
                     global_batch_size=32,  # prompts per step (128 responses)
                     learning_rate=5e-4, warmup_steps=20, weight_decay=0.0)
  c.data.num_responses = 4
  c.data.rejected_pool = 15        # the 3 rejected drawn anew each epoch from the first 15
  c.dpo.update(beta=0.1, label_smoothing=0.0)
  return c
