r"""Supervised fine-tuning on code -> summary, the RLHF policy (both architectures).

Data: `stdlib_corpus/summarize`: a function's code without the docstring (the prompt, no
loss; cut to fit, keeping its start) and the docstring's first sentence + EOS.
Encoder-decoder (default): the code to the encoder (128 tokens), the summary to the decoder
(32), `pretrain_span.py`'s model and tokenizer, dropout 0.1, label smoothing 0.1, 300 steps
of 32. Decoder-only (`:decoder_only`): one packed sequence of 128 per function (prefix LM),
`pretrain_lm.py`'s model, lr 1e-3, 200 steps of 32. Start from the pretrained run with
`--config.init_from=<pretrain workdir>` (the tokenizer is inherited from there).

Command:
  python -m transformer.train --config=experiments/finetune_lm.py --workdir=runs/finetune_lm \
      --config.init_from=runs/pretrain_span

Runtime on 2 CPU cores: 101 s measured at load 0.1 (encoder-decoder; the RLHF pipeline,
`python -m transformer.rlhf_pipeline`, runs it between pretraining and the reward model).
Expected result (measured): encoder-decoder validation loss on the summary tokens 2.736 from
pretrain_span, against 2.783 from scratch with the same budget and tokenizer; decoder-only
3.32 from pretrain_lm against 3.71 (measured under load 8-11, 5.4 min).

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/finetune_lm.py:tiny
"""

from transformer.training.presets import (
  DECODER_ONLY,
  ENCODER_DECODER,
  embedded_corpus_run,
  parse_arg,
  shrink,
)

VARIANTS = ("encoder_decoder", "decoder_only")


def get_config(arg: str | None = None):
  """The fine-tuning config of `arg`'s architecture (default encoder_decoder); 'tiny' gives
  the seconds-long variant."""
  architecture, tiny = parse_arg(arg, "finetune_lm", VARIANTS, default="encoder_decoder")
  if architecture == "encoder_decoder":
    c = embedded_corpus_run("finetune", "stdlib_corpus/summarize", "seq2seq",
                            num_train_steps=300)
    c.data.update(targets_len=32, num_sentinels=32)  # pretrain_span.py's tokenizer
    c.model.update(**ENCODER_DECODER, dropout_rate=0.1)
    c.label_smoothing = 0.1
  else:
    c = embedded_corpus_run("finetune", "stdlib_corpus/summarize", "prefix_lm",
                            num_train_steps=200)
    c.model.update(**DECODER_ONLY)
    c.optimizer.learning_rate = 1e-3
  c.eval_steps = 0                 # the whole validation split
  return shrink(c) if tiny else c
