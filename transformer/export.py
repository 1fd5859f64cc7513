r"""Exports a trained run for inference elsewhere: params, model config and tokenizer in one folder.

  python -m transformer.export --workdir=runs/quickstart --export_dir=exports/quickstart
  python -m transformer.export --workdir=runs/wmt14_big --export_dir=exports/big --average_last=20
  python -m transformer.generate --workdir=exports/quickstart --prompt="def add(a, b): ..."

The folder holds params/ (an Orbax params-only checkpoint: no optimizer state, no data
position), export.json (the ModelConfig, the steps the params come from, the source workdir and
its run config) and spm.model; `transformer.inference.load_export` reads it with only jax, flax,
orbax and sentencepiece (no grain, TensorFlow Datasets or training code). The params are the
latest checkpoint's, --step's, the mean of the last --average_last checkpoints, or a saved
average (--averaged). Usage errors are one line on stderr (exit status 2).
"""

from absl import flags

from transformer import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir to export.", required=True)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The folder to write (replaced if it is an "
                                  "export already).", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_AVERAGE_LAST = flags.DEFINE_integer(
    "average_last", 0, "Export the mean of the last K checkpoints (0: no averaging).")
_AVERAGED = flags.DEFINE_string(
    "averaged", None, "A saved average (DIR/averaged/step<N>-avg<K>) to export.")


def main(argv: list[str]) -> None:
  del argv
  from transformer.training.export import export_run

  try:
    info = export_run(_WORKDIR.value, _EXPORT_DIR.value, step=_STEP.value,
                  average_last=_AVERAGE_LAST.value, averaged=_AVERAGED.value)
  except (FileNotFoundError, ValueError) as e:
    cli.fail(f"--workdir={_WORKDIR.value}: {e}")
  print(f"exported {info['model_config']['architecture']} (steps {info['steps']}) of "
        f"{_WORKDIR.value} to {_EXPORT_DIR.value}")


if __name__ == "__main__":
  cli.run(main)
