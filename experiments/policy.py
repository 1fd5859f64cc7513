r"""Online policy optimisation (RLOO, or GRPO) of the fine-tuned policy against the reward model.

Data: the prompts of `stdlib_corpus/preferences`, as `reward.py` reads them (a function's code
without its docstring; the chosen summary only marks where a decoder-only prompt ends).
Encoder-decoder (default): the code's first 96 tokens to the encoder; decoder-only
(`:decoder_only`): the prompt as the decoder prefix in rows of 64. Model: `finetune_lm.py`'s
network, dropout off; the policy starts from the fine-tuned run (`--config.init_from`, a
'finetune' run of the same model config), a frozen copy of it is the reference π_ref, and the
reward run of `reward.py` (`--config.policy.reward_workdir`, same data task and tokenizer)
scores the samples, its bias applied. Each step: 16 prompts × k = 4 samples (T = 1, up to 32
new tokens); RLOO reward = score - 0.1 Σ_t (log π - log π_ref) - 5 without EOS, leave-one-out
advantages, one update (`--config.policy.algorithm=grpo`: group-normalised advantages, k3 KL in
the loss). AdamW, lr 2e-4 (10 warmup steps), cosine; 400 steps.

Command:
  python -m transformer.train --config=experiments/policy.py --workdir=runs/policy \
      --config.init_from=runs/finetune_lm --config.policy.reward_workdir=runs/reward
  python -m transformer.evaluate --workdir=runs/policy --split=test

Runtime on 2 CPU cores: 146 s for the 400 steps and five validation evaluations, measured in
`python -m transformer.rlhf_pipeline` with nothing else running, from its fine-tuned encoder-
decoder and its reward run (`reward.py`, test accuracy 0.712). Expected result (measured in
that run, validation prompts, 4 samples each): reward-model score -4.10 at step 0 (KL 0, EOS
rate 0.98, 19.3 tokens), -2.06 at step 100 (KL 4.09 nats), -1.15 at step 400 (KL 6.54, EOS rate
1.00, 18.4 tokens, entropy 3.63 -> 3.89 nats a token); on the test prompts
(`transformer.compare_policies`) a score gain of 0.65 of the fine-tuned model's reward std at
KL 6.23, gold chrF +0.66 [+0.48, +0.84] over the fine-tuned model's. An earlier pipeline run on
a slower machine (373 s; 249 s after the encoder-once rollout): gain 0.58 at KL 5.08, chrF
+0.17 [-0.02, +0.38]. Measured on the way (that run's reward model; test prompts): 200 steps:
gain 0.40, chrF +1.04; 300 steps: 0.48, +0.60; lr 3e-4 for 300 steps: 0.59 at KL 6.30, but chrF
-0.35 [-0.55, -0.13] (reward hacking). Earlier, with another reward model: lr 1e-4, β 0.05, EOS
penalty 1 let the EOS rate fall to 0.87 and responses grow to 23.5 tokens (that reward model
favoured longer ones).
Judge a rising score with the RM-independent gold score too: `transformer.compare_policies`
(chrF against the true summary).

Tiny variant (seconds; needs a fine-tuned run and a reward run of the same tiny data, as
tests/training/test_policy.py builds them from finetune_lm.py:tiny and reward.py:tiny):
  --config=experiments/policy.py:tiny
"""

from transformer.training.presets import parse_arg, preference_run

VARIANTS = ("encoder_decoder", "decoder_only")


def get_config(arg: str | None = None):
  """The policy-optimisation config of `arg`'s architecture (default encoder_decoder); 'tiny'
  gives the seconds-long variant."""
  architecture, tiny = parse_arg(arg, "policy", VARIANTS, default="encoder_decoder")
  # The prompts as reward.py reads them (decoder-only: the rows of 64 with the chosen summary
  # mark where the prompt ends), then up to 32 new tokens.
  c = preference_run("policy", architecture, tiny, num_train_steps=400,
                     global_batch_size=16,  # prompts per step (64 samples)
                     learning_rate=2e-4, warmup_steps=10, weight_decay=0.0,
                     eval_steps=4)  # 64 validation prompts, sampled with a fixed key
  c.data.num_responses = 2         # the fewest the source gives: only the prompts are read
  c.policy.update(algorithm="rloo", samples_per_prompt=4, beta=0.1, eos_penalty=5.0,
                  temperature=1.0, max_new_tokens=32, updates_per_batch=1)
  c.best_metric = "reward"
  if tiny:  # reward.py:tiny's lengths (decoder-only: 96 + 8 new tokens within max_len 128)
    c.policy.max_new_tokens = 8
  return c
