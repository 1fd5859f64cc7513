#!/usr/bin/env bash
# This machine, macOS or Linux: a virtual environment in .venv, the package installed into it
# (editable), then the quickstart (README's first command). Run it again and it reuses the
# environment and resumes the run (which stops at once when it is finished).
#
# Usage: launch/local.sh [TRAIN_FLAGS...]   e.g. launch/local.sh --config.num_train_steps=50
#   TRAIN_FLAGS are added to the quickstart command (a later flag wins: --workdir=runs/other).
# Environment: PYTHON (default python3) is the Python to build the environment with (>= 3.11).
set -euo pipefail

cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || {
  echo "error: $python not found: install Python 3.11 or newer (or set PYTHON=/path/to/python3)" >&2
  exit 2
}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "error: $("$python" --version 2>&1) is too old: the package needs Python 3.11 or newer" \
       "(set PYTHON=/path/to/python3.11)" >&2
  exit 2
}
if [[ ! -x .venv/bin/python ]]; then
  echo "creating the virtual environment .venv ($("$python" --version 2>&1))"
  "$python" -m venv .venv
fi
# shellcheck disable=SC1091  # created just above
source .venv/bin/activate
echo "installing the package into .venv (pip install -e .)"
python -m pip install --quiet -e .
echo "training the quickstart (about 4 minutes on 2 CPU cores): runs/quickstart"
exec python -m transformer.train --config=experiments/quickstart.py --workdir=runs/quickstart "$@"
