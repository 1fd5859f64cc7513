r"""WMT 2014 English -> German with the paper's base or big Transformer (Table 3).

Model: `named_size('base'|'big')` — base: d_model 512, 8 heads, d_ff 2048, 6 + 6 layers,
P_drop 0.1; big: d_model 1024, 16 heads, d_ff 4096, P_drop 0.3. Shared SentencePiece BPE
vocabulary of 37,000 pieces (the paper's ~37,000 shared BPE tokens), one embedding table
shared by encoder, decoder and the pre-softmax projection: base has 63,082,496 params
(the paper's "65M"), big 214,245,376 (the paper's "213M"). Training as in §5: Adam(0.9, 0.98, 1e-9)
with d_model^-0.5 · min(step^-0.5, step · 4000^-1.5), label smoothing 0.1, batches of ~25k
source + ~25k target tokens (96 packed rows of 256 tokens = 24,576 token slots per side),
100k steps (base) or 300k steps (big); the last 5 / 20 checkpoints are kept for averaging.

Data: prepare once where TensorFlow and the network are available:
  tfds build wmt14_translate/de-en --file_format=array_record --data_dir=DIR
then pass --config.data.data_dir=DIR.

Commands:
  python -m transformer.train --config=experiments/wmt14_ende.py:base --dry_run
  python -m transformer.train --config=experiments/wmt14_ende.py:base --workdir=runs/wmt14_base \
      --config.data.data_dir=DIR
  python -m transformer.train --config=experiments/wmt14_ende.py:big --workdir=runs/wmt14_big \
      --config.data.data_dir=DIR

Runtime: on 2 CPU cores only the dry run is practical (measured 40 s, load average 8:
prints `params: 63,082,496` for base and compiles the step: ~10 TFLOP and ~40 GB of
temporaries per step at this batch), i.e. weeks of CPU. The paper: 12 hours (base) / 3.5 days
(big) on 8 P100 GPUs.
Expected result (paper, newstest2014 with checkpoint averaging and beam 4): BLEU 27.3
(base) and 28.4 (big). Not measured in this repository.

Tiny variant (seconds: a smoke test of the same stage, task and architecture):
  --config=experiments/wmt14_ende.py:base,tiny   (catalog data: tests run it under
                                                 tfds.testing.mock_data)
"""

from transformer.models.config import named_size
from transformer.training.config import default_config, model_section
from transformer.training.presets import parse_arg, shrink

STEPS = {"base": 100_000, "big": 300_000}
CHECKPOINTS_AVERAGED = {"base": 5, "big": 20}


def get_config(arg: str | None = None):
  """The WMT14 en-de run config for model size 'base' (default) or 'big'; ',tiny' shrinks it."""
  arg, tiny = parse_arg(arg, "wmt14_ende", tuple(STEPS), default="base")
  c = default_config()
  c.stage = "finetune"  # supervised seq2seq: loss on the target tokens
  c.data.update(source="tfds", name="wmt14_translate/de-en", task="seq2seq", seq_len=256,
                targets_len=256, vocab_size=37_000, spm_model_type="bpe", num_sentinels=0,
                spm_character_coverage=1.0)
  c.model.update(**model_section(named_size(arg)))
  c.global_batch_size = 96
  c.num_train_steps = STEPS[arg]
  c.label_smoothing = 0.1
  c.optimizer.update(name="adam", schedule="paper", learning_rate=1.0, warmup_steps=4000,
                     b1=0.9, b2=0.98, eps=1e-9)
  c.log_every_steps = 100
  c.eval_every_steps = 2000
  c.eval_steps = 0
  c.checkpoint_every_steps = 2000
  c.keep_checkpoints = CHECKPOINTS_AVERAGED[arg]
  c.best_metric = "loss"
  c.max_decode_length = 256
  return shrink(c) if tiny else c
