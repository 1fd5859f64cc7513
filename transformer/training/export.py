"""Writing a run's export folder (`python -m transformer.export`; the format is
`transformer/inference.py`'s)."""

import os

from transformer import inference
from transformer.training import averaging, checkpoints


def export_run(workdir: str, export_dir: str, *, step: int | None = None,
               average_last: int = 0, averaged: str | None = None) -> dict:
  """Writes the export folder of the run in `workdir`; returns its export.json content."""
  model_config, params, tokenizer_file, steps = averaging.load_for_inference(
      workdir, step=step, average_last=average_last, averaged=averaged)
  if os.path.exists(export_dir) and os.listdir(export_dir) and not inference.is_export(export_dir):
    raise ValueError(f"--export_dir={export_dir} exists and is not an export: choose a new folder")
  inference.write_export(export_dir, model_config, params, tokenizer_file, steps=steps,
                         workdir=os.path.abspath(workdir),
                         config=checkpoints.read_config(workdir).to_dict())
  return inference.read_export_info(export_dir)
