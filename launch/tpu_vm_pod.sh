#!/usr/bin/env bash
# The same command on every worker of a Cloud TPU VM pod slice (one process per host).
# jax.distributed.initialize() finds the coordinator, process count and id from the TPU
# metadata by itself; the mesh spans every chip of the slice. The repository must be checked
# out (and installed) at ~/transformer on every worker, and the workdir and the TFDS data dir
# must be a filesystem all workers share (e.g. a GCS bucket mounted with gcsfuse, or NFS).
#
# Usage: launch/tpu_vm_pod.sh TPU_NAME ZONE --config=experiments/wmt14_ende.py:big \
#          --workdir=/mnt/shared/runs/wmt14_big [--config.parallelism.fsdp=4 ...]
set -euo pipefail
if (( $# < 3 )); then sed -n '2,10p' "$0"; exit 2; fi
tpu=$1; zone=$2; shift 2
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all \
  --command "cd ~/transformer && python -m transformer.train --distributed $(printf '%q ' "$@")"
