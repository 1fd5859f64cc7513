r"""A reward model on the stdlib preferences, initialised from the fine-tuned policy.

Data: `stdlib_corpus/preferences`: a function's code (prompt, cut to fit keeping its start)
with its own docstring sentence (chosen) against summaries of functions of other modules
(rejected); `data.num_responses` K = 4 responses per prompt (chosen + 3 rejected, all pairs
of one prompt in one batch element), the 3 rejected drawn anew each epoch from the first 15
stored (`data.rejected_pool`; evaluation always compares the first 3). Encoder-decoder
(default): the code's first 96 tokens to the encoder, each response (up to 31 tokens + EOS)
to the decoder; decoder-only (`:decoder_only`): prompt + response in rows of 64. Model:
`finetune_lm.py`'s network with the output projection replaced by a scalar head read at each
response's EOS (`transformer/models/reward.py`); dropout off. Start from the fine-tuned run with
`--config.init_from=<finetune_lm workdir>`. AdamW, lr 8e-4 (50 warmup steps), cosine; 1,200
steps of 32 prompts (~7.6 epochs of the 5,044 train prompts that fit); validation and a
checkpoint every 400 steps.

Command:
  python -m transformer.train --config=experiments/reward.py --workdir=runs/reward \
      --config.init_from=runs/finetune_lm
  python -m transformer.evaluate_reward --workdir=runs/reward \
      --baseline_workdir=runs/finetune_lm --split=test

Runtime on 2 CPU cores: 368 s measured with nothing else running (training, the bias pass
over the train split and three whole-split evaluations; part of `python -m
transformer.rlhf_pipeline`; 512 s on a slower machine). Expected result (measured in that
run): validation pairwise accuracy 0.709, test 0.712 against the likelihood baseline's 0.498
(2,017 pairs of 808 held-out prompts); after training the bias makes the train split's
chosen responses score 0. The same recipe from other fine-tuned runs of the same config:
test 0.701, 0.730; K = 8 for 600 steps (the previous
recipe, same time): 0.682-0.715. The decoder-only variant stays near chance (0.50-0.55).

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/reward.py:tiny
"""

from transformer.training.presets import parse_arg, preference_run

VARIANTS = ("encoder_decoder", "decoder_only")


def get_config(arg: str | None = None):
  """The reward-model config of `arg`'s architecture (default encoder_decoder); 'tiny' gives
  the seconds-long variant."""
  architecture, tiny = parse_arg(arg, "reward", VARIANTS, default="encoder_decoder")
  c = preference_run("reward", architecture, tiny, num_train_steps=1200,
                     global_batch_size=32,  # prompts per step (128 responses)
                     learning_rate=8e-4, warmup_steps=50)
  c.data.num_responses = 4
  c.data.rejected_pool = 15        # the 3 rejected drawn anew each epoch from the first 15
  if not tiny:  # three evaluations and checkpoints
    c.update(eval_every_steps=400, checkpoint_every_steps=400)
  return c
