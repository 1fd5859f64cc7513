r"""An experiment file that loads a run config saved as JSON (tests drive the CLI with it).

  python -m transformer.train --config=tests/training/json_experiment.py:/path/config.json \
      --workdir=DIR
"""

import json

import ml_collections


def get_config(path: str) -> ml_collections.ConfigDict:
  """The run config stored at `path` (written by `ConfigDict.to_json()`)."""
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))
