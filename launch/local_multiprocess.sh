#!/usr/bin/env bash
# N processes of transformer.train on this machine, joined over 127.0.0.1 (CPU collectives: gloo),
# each with D XLA host devices: multi-host training rehearsed on one machine. Output lines are
# prefixed with the process id; all processes share the workdir (Orbax coordinates the saves).
#
# Usage: launch/local_multiprocess.sh N D --config=experiments/quickstart.py --workdir=runs/mp [flags]
# Example: launch/local_multiprocess.sh 2 2 --config=experiments/quickstart.py --workdir=runs/mp \
#            --config.parallelism.fsdp=2 --config.num_train_steps=20
set -euo pipefail
if (( $# < 3 )); then sed -n '2,9p' "$0"; exit 2; fi
num_processes=$1; devices=$2; shift 2
port=$(python -c "import portpicker; print(portpicker.pick_unused_port())")
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
for ((i = 0; i < num_processes; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=$num_processes JAX_PROCESS_ID=$i \
  JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=$devices \
    python -m transformer.train --distributed "$@" > >(sed -u "s/^/[$i] /") 2>&1 &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
