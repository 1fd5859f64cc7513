#!/usr/bin/env bash
# Trains on a Cloud TPU VM or pod slice from a laptop, in one command: creates the TPU VM (or
# reuses it), copies this checkout to every worker, installs it there, and runs the same
# `python -m transformer.train --distributed ...` on every worker (`--worker=all`). JAX finds
# the coordinator, process count and id from the TPU metadata; the mesh spans every chip.
#
# Usage: launch/tpu_vm.sh --name=NAME --zone=ZONE [options] [--] TRAIN_FLAGS...
#   --name=NAME              TPU VM / pod slice name (required)
#   --zone=ZONE              its zone, e.g. us-central2-b (required)
#   --accelerator_type=TYPE  create it with this type if it does not exist, e.g. v4-8, v4-16,
#                            v5litepod-16; without it, the TPU VM must exist already
#   --version=VERSION        TPU software version when creating (default tpu-ubuntu2204-base)
#   --project=PROJECT        Google Cloud project (default: gcloud's configured project)
#   --spot                   create a Spot TPU VM (cheaper, may be preempted)
#   --python=VERSION         Python of the workers' virtual environment (default 3.11;
#                            uv downloads it if the image lacks it)
#   --dry_run                print every command, one per line, instead of running any
#   TRAIN_FLAGS              flags of transformer.train; --config and --workdir are required
#
# Example: launch/tpu_vm.sh --name=my-tpu --zone=us-central2-b --accelerator_type=v4-16 \
#            --config=experiments/quickstart.py --workdir=/mnt/shared/runs/q \
#            --config.eval_steps=10   # eval_steps > 0 with more than one worker (see README)
#
# What is copied: the files git tracks, as they are in the working tree, plus untracked files
# git does not ignore; they are unpacked into ~/transformer on every worker and installed into
# ~/.venvs/transformer with `pip install -e .[tpu]` (through uv). A relative --workdir lies in
# ~/transformer of each worker; with more than one worker the workdir (and the TFDS data dir)
# must be a filesystem all workers share (NFS / Filestore, or a bucket mounted with gcsfuse).
# The training runs in the foreground: Ctrl-C stops it on this machine and on every worker.
# Environment: GCLOUD (default gcloud) is the gcloud executable.
set -euo pipefail

usage() { sed -n '7,22p' "$0" | sed 's/^# \{0,1\}//' >&2; }
fail() { echo "error: $*" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
gcloud=${GCLOUD:-gcloud}
name="" zone="" accelerator_type="" version="tpu-ubuntu2204-base" project="" spot=0
python_version="3.11" dry_run=0
while (( $# )); do
  case $1 in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --accelerator_type=*) accelerator_type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --spot) spot=1 ;;
    --python=*) python_version=${1#*=} ;;
    --dry_run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) break ;;  # the first flag that is not the launcher's starts the training flags
  esac
  shift
done
train_flags=("$@")

[[ -n $name ]] || { usage; fail "--name=NAME is required (the TPU VM to create or reuse)"; }
[[ -n $zone ]] || { usage; fail "--zone=ZONE is required (e.g. --zone=us-central2-b)"; }
has_flag() {  # has_flag NAME FLAGS...: whether --NAME or --NAME=... is among FLAGS
  local flag=$1 arg; shift
  for arg in "$@"; do [[ $arg == "--$flag" || $arg == "--$flag="* ]] && return 0; done
  return 1
}
has_flag config ${train_flags[@]+"${train_flags[@]}"} ||
  fail "no --config=... among the training flags (e.g. --config=experiments/quickstart.py)"
has_flag workdir ${train_flags[@]+"${train_flags[@]}"} ||
  fail "no --workdir=... among the training flags (e.g. --workdir=/mnt/shared/runs/q)"
if (( ! dry_run )); then
  command -v "$gcloud" >/dev/null 2>&1 || fail "gcloud not found ('$gcloud'): install the Google Cloud" \
    "CLI (https://cloud.google.com/sdk/docs/install), run 'gcloud auth login', or use --dry_run"
  git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
    fail "$root is not a git checkout: launch/tpu_vm.sh copies the files git tracks"
fi

quote() {  # the arguments as one shell command line, each quoted only where it needs to be
  local arg words=()
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then words+=("$arg")
    else words+=("'${arg//\'/\'\\\'\'}'"); fi
  done
  echo "${words[*]+"${words[*]}"}"
}
run() {  # prints the command under --dry_run, else shows it on stderr and runs it
  if (( dry_run )); then quote "$@"; else echo "+ $(quote "$@")" >&2; "$@"; fi
}

where=(--zone="$zone")
[[ -n $project ]] && where+=(--project="$project")
tpu=(compute tpus tpu-vm)
# shellcheck disable=SC2088  # the tilde is for the workers' shell to expand, not this one
venv='~/.venvs/transformer'
install="mkdir -p ~/transformer && tar -xzf ~/transformer.tar.gz -C ~/transformer && \
(command -v uv >/dev/null || [ -x ~/.local/bin/uv ] || curl -LsSf https://astral.sh/uv/install.sh | sh) && \
export PATH=\"\$HOME/.local/bin:\$HOME/.cargo/bin:\$PATH\" && \
([ -x $venv/bin/python ] || uv venv --python $python_version $venv) && \
uv pip install --python $venv/bin/python -e \"\$HOME/transformer[tpu]\""
train="cd ~/transformer && $venv/bin/python -m transformer.train --distributed $(quote "${train_flags[@]}")"

# 1. the TPU VM: reuse it if it exists, else create it (with --accelerator_type)
create=("$gcloud" "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator_type"
        --version="$version")
(( spot )) && create+=(--spot)
describe=("$gcloud" "${tpu[@]}" describe "$name" "${where[@]}" --format='value(state)')
if (( dry_run )); then
  quote "${describe[@]}"
  if [[ -n $accelerator_type ]]; then
    echo "# only if the describe above finds no TPU VM $name:"
    quote "${create[@]}"
  else
    echo "# (no --accelerator_type: TPU VM $name must exist; none is created)"
  fi
else
  errors=$(mktemp "${TMPDIR:-/tmp}/tpu_vm_describe.XXXXXX")
  echo "+ $(quote "${describe[@]}")" >&2
  if state=$("${describe[@]}" 2>"$errors"); then
    rm -f "$errors"
    [[ $state == READY ]] || fail "TPU VM $name in $zone is ${state:-in an unknown state}, not READY:" \
      "start it ($gcloud compute tpus tpu-vm start $name --zone=$zone) or delete it and try again"
    echo "reusing TPU VM $name in $zone (READY)" >&2
  elif [[ -n $accelerator_type ]]; then
    rm -f "$errors"
    echo "no TPU VM $name in $zone yet: creating it ($accelerator_type, $version)" >&2
    run "${create[@]}"
  else
    cat "$errors" >&2; rm -f "$errors"
    fail "no TPU VM $name in $zone (gcloud's message above): pass --accelerator_type=TYPE" \
      "(e.g. v4-8) to create it"
  fi
fi

# 2. the code: an archive of the checkout, copied to every worker
archive="${TMPDIR:-/tmp}/transformer-$name.tar.gz"
files=(git -C "$root" ls-files -z --cached --others --exclude-standard)
pack=(env COPYFILE_DISABLE=1 tar -C "$root" --null -T - -czf "$archive")  # COPYFILE: no macOS ._ files
if (( dry_run )); then
  echo "$(quote "${files[@]}") | $(quote "${pack[@]}")"
else
  trap 'rm -f "$archive"' EXIT
  echo "+ $(quote "${files[@]}") | $(quote "${pack[@]}")" >&2
  "${files[@]}" | "${pack[@]}"
fi
run "$gcloud" "${tpu[@]}" scp "$archive" "$name":transformer.tar.gz "${where[@]}" --worker=all

# 3. install on every worker, then 4. the same training command on every worker
run "$gcloud" "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$install"
run "$gcloud" "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$train"
