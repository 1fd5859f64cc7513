r"""Walks the Transformer through a hand-worked example, printing the model's own matrices.

  python -m transformer.explain
  python -m transformer.explain --inputs="the cat sat" --targets="le chat" \
      --d_model=8 --encoder_heads=2 --decoder_heads=4 --seed=1 --plot_dir=/tmp/explain

Prints every step (vocabulary, embeddings, positions, Q, K, V, Q K^T, scaled scores,
mask, softmax, weighted values, concat, W^O, add & norm, FFN, masked self-attention,
cross-attention, logits, softmax, predicted word) of two one-layer models with
random parameters; see `transformer.walkthrough`. `--plot_dir` also writes PNG
heatmaps of every attention head and of the positional encodings. A bad flag is one line
on stderr, exit status 2 (`transformer.cli`).
"""

from absl import app, flags

from transformer import cli
from transformer.walkthrough import format_walk, plot_heatmaps, walkthrough

_INPUTS = flags.DEFINE_string("inputs", "when you play the game of thrones",
                              "Encoder input sentence; words split on whitespace.")
_TARGETS = flags.DEFINE_string("targets", "you win or you die",
                               "Decoder target sentence; wrapped in <start> / <end>.")
_D_MODEL = flags.DEFINE_integer("d_model", 6, "Model width (even, divisible by both head counts).")
_ENCODER_HEADS = flags.DEFINE_integer("encoder_heads", 1, "Attention heads of the encoder walk.")
_DECODER_HEADS = flags.DEFINE_integer("decoder_heads", 2, "Attention heads of the decoder walk.")
_D_FF = flags.DEFINE_integer("d_ff", None, "FFN inner width; default 4 * d_model.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed of the random parameters.")
_PLOT_DIR = flags.DEFINE_string("plot_dir", None, "If set, write PNG heatmaps here.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for flag in (_INPUTS, _TARGETS):
    if not flag.value.split():
      raise app.UsageError(f"--{flag.name} must contain at least one word")
  for flag in (_ENCODER_HEADS, _DECODER_HEADS):
    if flag.value < 1 or _D_MODEL.value % flag.value:
      raise app.UsageError(f"--{flag.name}={flag.value} must be >= 1 and divide "
                           f"--d_model={_D_MODEL.value}")
  if _D_MODEL.value < 2 or _D_MODEL.value % 2:
    raise app.UsageError(f"--d_model={_D_MODEL.value} must be even (sinusoidal positions)")
  if _D_FF.value is not None and _D_FF.value < 1:
    raise app.UsageError(f"--d_ff={_D_FF.value} must be >= 1")
  if _PLOT_DIR.value is not None:
    cli.check_output_dir(_PLOT_DIR.value, "--plot_dir")
  walk = walkthrough(_INPUTS.value, _TARGETS.value, _D_MODEL.value, _ENCODER_HEADS.value,
                     _DECODER_HEADS.value, _D_FF.value, _SEED.value)
  print(format_walk(walk))
  if _PLOT_DIR.value:
    for path in plot_heatmaps(walk, _PLOT_DIR.value):
      print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main)
