#!/usr/bin/env bash
# Runs N cooperating processes on this machine (CPU, gloo collectives): a quick way to try the
# multi-host code paths without a cluster.
#
#   launch/local_processes.sh 2 configs/demo.py /tmp/demo_2proc [--config.FIELD=VALUE ...]
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,6p' "$0"; exit 2
fi
n=$1 config=$2 workdir=$3
shift 3
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu python -m inception_jax.main --config="$config" --workdir="$workdir" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$n" --process_id="$i" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
