#!/usr/bin/env bash
# Runs one config on every host of a Cloud TPU VM (single host or pod slice).
# JAX finds the other hosts by itself; each host reads its own shard of the data.
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/irv2.py gs://BUCKET/workdir [--config.FIELD=VALUE ...]
#
# The repository must be checked out at ~/inception_jax on every host (e.g. with
# `gcloud compute tpus tpu-vm scp --recurse . TPU_NAME:inception_jax --worker=all`), and the workdir
# and dataset.data_dir must be on GCS so that all hosts see them.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,10p' "$0"; exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e; cd ~/inception_jax
  pip install -q -e . 'jax[tpu]'
  python -m inception_jax.main --config=$config --workdir=$workdir $*"
