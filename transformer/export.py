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

import os

from absl import app, flags, logging

from transformer import command_line, inference

_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir to export.", required=True)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "The folder to write (replaced if it is an "
                                  "export already).", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
_AVERAGE_LAST = flags.DEFINE_integer(
    "average_last", 0, "Export the mean of the last K checkpoints (0: no averaging).")
_AVERAGED = flags.DEFINE_string(
    "averaged", None, "A saved average (DIR/averaged/step<N>-avg<K>) to export.")


def export(workdir: str, export_dir: str, *, step: int | None = None, average_last: int = 0,
           averaged: str | None = None) -> dict:
  """Writes the export folder of the run in `workdir`; returns its export.json content."""
  from transformer.training import averaging, checkpoints

  model_config, params, tokenizer_file, steps = averaging.load_for_inference(
      workdir, step=step, average_last=average_last, averaged=averaged)
  if os.path.exists(export_dir) and os.listdir(export_dir) and not inference.is_export(export_dir):
    raise ValueError(f"--export_dir={export_dir} exists and is not an export: choose a new folder")
  inference.write_export(export_dir, model_config, params, tokenizer_file, steps=steps,
                         workdir=os.path.abspath(workdir),
                         config=checkpoints.read_config(workdir).to_dict())
  return inference.read_export_info(export_dir)


def main(argv: list[str]) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    info = export(_WORKDIR.value, _EXPORT_DIR.value, step=_STEP.value,
                  average_last=_AVERAGE_LAST.value, averaged=_AVERAGED.value)
  except (FileNotFoundError, ValueError) as e:
    command_line.fail(f"--workdir={_WORKDIR.value}: {e}")
  print(f"exported {info['model_config']['architecture']} (steps {info['steps']}) of "
        f"{_WORKDIR.value} to {_EXPORT_DIR.value}")


if __name__ == "__main__":
  app.run(main, flags_parser=command_line.parse_flags)
