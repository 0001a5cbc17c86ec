#!/usr/bin/env bash
# Trains a config on a Cloud TPU slice, from this machine, through preemptions:
#
#   launch/tpu_pod.sh [--dry_run] [--spot] [--skip_check] [--delete] \
#       NAME ZONE ACCELERATOR CONFIG gs://BUCKET/WORKDIR [--config.FIELD=VALUE ...]
#   e.g. launch/tpu_pod.sh --spot irv2 us-east5-a v5e-64 configs/irv2.py gs://my-bucket/irv2 \
#       --config.dataset.data_dir=gs://my-bucket/tensorflow_datasets --config.model.dtype=bfloat16
#
# 1. checks that the job compiles and fits on ACCELERATOR (python -m inception_jax.aot, here;
#    needs pip install -e ".[tpu]"; --skip_check skips it) and stops if it does not;
# 2. creates the slice NAME as a queued resource (--spot: a spot slice) and waits until it is up,
#    unless it is up already; a preempted slice is deleted and created again;
# 3. copies this checkout (its tracked files; or clones REPO_URL) to every worker, installs it with
#    the [tpu] extra, starts the job on all workers and streams worker 0's log;
# 4. when a spot slice is preempted, goes back to 2 (up to MAX_RESTARTS times, default 20): the job
#    resumes from its last checkpoint in the workdir. Rerunning this command does the same.
# --delete deletes the slice once the job has finished; --dry_run prints every gcloud command
# instead of running it. ACCELERATOR: v4-8 ... v4-4096, v5e-1 ... v5e-256, v5p-8 ..., v6e-1 ...
# v6e-256. Environment: PROJECT (gcloud's default otherwise), RUNTIME_VERSION (a TPU VM image;
# by default the one for the TPU generation), REPO_URL, MAX_RESTARTS, POLL_SECONDS (default 60).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dry_run=0 spot=0 check=1 delete=0
while [ $# -gt 0 ]; do
  case $1 in
    --dry_run) dry_run=1 ;;
    --spot) spot=1 ;;
    --skip_check) check=0 ;;
    --delete) delete=1 ;;
    *) break ;;
  esac
  shift
done
if [ $# -lt 5 ]; then
  sed -n '2,24p' "$0"; exit 2
fi
name=$1 zone=$2 accelerator=$3 config=$4 workdir=$5
shift 5
overrides=("$@")
fail() { echo "error: $*" >&2; exit 2; }
case $workdir in
  gs://*) ;;
  *) fail "the workdir must be on GCS (gs://...): every worker writes to it and a preempted slice's disks are lost. Got: $workdir" ;;
esac
case $accelerator in
  v4-*) type=$accelerator runtime=tpu-ubuntu2204-base ;;
  v5e-*) type=v5litepod-${accelerator#v5e-} runtime=v2-alpha-tpuv5-lite ;;
  v5p-*) type=$accelerator runtime=v2-alpha-tpuv5 ;;
  v6e-*) type=$accelerator runtime=v2-alpha-tpuv6e ;;
  *) fail "unknown accelerator $accelerator: v4-N, v5e-N, v5p-N or v6e-N" ;;
esac
runtime=${RUNTIME_VERSION:-$runtime}
max_restarts=${MAX_RESTARTS:-20} poll=${POLL_SECONDS:-60}
[ -f "$here/${config%%:*}" ] || fail "no config file ${config%%:*} in $here"
if ! printf '%s\n' "${overrides[@]}" | grep -q '^--config.dataset.data_dir=gs://'; then
  echo "note: no --config.dataset.data_dir=gs://...: the workers read the config's data_dir (TFDS's default: their own disks)." >&2
fi
project=()
[ -n "${PROJECT:-}" ] && project=(--project="$PROJECT")

say() { echo "[tpu_pod $(date +%H:%M:%S)] $*" >&2; }
exec 4>&1  # this script's output, also from inside $(...)
quote() {  # ARG as the shell reads it back: bare when plain, else in single quotes
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}
quoted() {  # ARGS... as one command line
  local arg sep=''
  for arg in "$@"; do printf '%s' "$sep"; quote "$arg"; sep=' '; done
}
# Runs gcloud, or with --dry_run prints the command (quoted so that it can be pasted).
gc() {
  if [ "$dry_run" = 1 ]; then
    { quoted gcloud "$@"; printf '\n'; } >&4
  else
    gcloud "$@"
  fi
}
# gcloud for an answer that the flow depends on; a dry run prints the command and answers DEFAULT.
query() {
  local default=$1; shift
  if [ "$dry_run" = 1 ]; then
    gc "$@"; echo "$default"
  else
    gcloud "$@" 2>/dev/null
  fi
}
node_state() {  # READY, PREEMPTED, CREATING, ... or NONE
  local state
  state=$(query NONE compute tpus tpu-vm describe "$name" --zone="$zone" "${project[@]}" \
    --format='value(state)') || state=NONE
  echo "${state:-NONE}"
}
queued_state() {  # ACTIVE, WAITING_FOR_RESOURCES, PROVISIONING, FAILED, SUSPENDED, ... or NONE
  local state  # $1: a dry run's answer
  state=$(query "$1" compute tpus queued-resources describe "$name" --zone="$zone" \
    "${project[@]}" --format='value(state.state)') || state=NONE
  echo "${state:-NONE}"
}
on_workers() {  # COMMAND: runs on every worker of the slice
  gc compute tpus tpu-vm ssh "$name" --zone="$zone" "${project[@]}" --worker=all --command="$1"
}

# 1. The job must compile and fit on the slice before one is paid for.
if [ "$check" = 1 ]; then
  aot=(python -m inception_jax.aot --config="$config" --topology="$accelerator" "${overrides[@]}")
  if [ "$dry_run" = 1 ]; then
    quoted "${aot[@]}"; printf '\n'
  else
    say "checking that $config compiles and fits on $accelerator (python -m inception_jax.aot)"
    (cd "$here" && "${aot[@]}") || {
      echo "error: the job does not fit or compile on $accelerator (report above): lower config.batch_size, set config.model.remat=True or pick a larger slice; --skip_check skips this check." >&2
      exit 1; }
  fi
fi

create_slice() {
  local state
  state=$(node_state)
  if [ "$state" = READY ]; then
    say "$name is up"; return 0
  fi
  if [ "$state" != NONE ] || [ "$(queued_state NONE)" != NONE ]; then
    say "$name is $state: deleting it to create it again"
    gc compute tpus queued-resources delete "$name" --zone="$zone" "${project[@]}" --force \
      --quiet || return 1
  fi
  local kind=()
  [ "$spot" = 1 ] && kind=(--spot)
  say "creating $name ($type, $runtime${kind:+, spot})"
  gc compute tpus queued-resources create "$name" --node-id="$name" --zone="$zone" \
    "${project[@]}" --accelerator-type="$type" --runtime-version="$runtime" "${kind[@]}" || return 1
  while true; do
    state=$(queued_state ACTIVE)
    case $state in
      ACTIVE) say "$name is up"; return 0 ;;
      FAILED|SUSPENDED|NONE) echo "error: the queued resource $name is $state" >&2; return 1 ;;
    esac
    say "$name: $state"; sleep "$poll"
  done
}

install() {
  local source
  if [ -n "${REPO_URL:-}" ]; then
    source="rm -rf ~/inception_jax && git clone -q --depth=1 $(quote "$REPO_URL") ~/inception_jax"
  else
    local archive=/tmp/inception_jax_$$.tgz
    if [ "$dry_run" = 1 ]; then
      echo "git -C $(quote "$here") ls-files -z | tar --null -czf $archive -C $(quote "$here") -T -"
    else
      git -C "$here" ls-files -z | tar --null -czf "$archive" -C "$here" -T - || return 1
    fi
    gc compute tpus tpu-vm scp "$archive" "$name:inception_jax.tgz" --zone="$zone" \
      "${project[@]}" --worker=all || return 1
    [ "$dry_run" = 1 ] || rm -f "$archive"
    source='rm -rf ~/inception_jax && mkdir ~/inception_jax && tar -xzf ~/inception_jax.tgz -C ~/inception_jax'
  fi
  on_workers "set -e; $source; cd ~/inception_jax; pip install -q -e '.[tpu]'"
}

# Started detached on every worker, so that a lost connection here does not stop it; its output
# and, at the end, its exit status go to ~/inception_jax.log.
job=$(quoted python -m inception_jax.main --config="$config" --workdir="$workdir" "${overrides[@]}")
start="cd ~/inception_jax && nohup bash -c $(quote "$job; echo \"exit status \$?\"") > ~/inception_jax.log 2>&1 < /dev/null & echo \$! > ~/inception_jax.pid"
stream="tail -n +1 --pid=\$(cat ~/inception_jax.pid) -F ~/inception_jax.log"
outcome="if grep -q '^Preempted: saved' ~/inception_jax.log; then echo preempted; else tail -n 1 ~/inception_jax.log; fi"

attempt=0
while true; do
  if create_slice && install && on_workers "$start"; then
    say "job started on every worker of $name; worker 0's log follows"
    gc compute tpus tpu-vm ssh "$name" --zone="$zone" "${project[@]}" --worker=0 \
      --command="$stream"
    # How it ended: 'exit status N', or 'preempted' (it saved a checkpoint on SIGTERM and
    # exited 0), or nothing when the slice cannot be reached.
    status=$(query 'exit status 0' compute tpus tpu-vm ssh "$name" --zone="$zone" \
      "${project[@]}" --worker=0 --command="$outcome")
    case $status in
      'exit status 0')
        say "the job finished: its results are in $workdir"
        if [ "$delete" = 1 ]; then
          gc compute tpus queued-resources delete "$name" --zone="$zone" "${project[@]}" \
            --force --quiet
        fi
        exit 0 ;;
      'exit status '*)
        echo "error: the job failed with ${status#exit } (its log is above; $name is kept: fix and rerun this command to resume)." >&2
        exit 1 ;;
    esac
  fi
  # The slice went away (preempted) or could not be reached.
  attempt=$((attempt + 1))
  if [ "$attempt" -gt "$max_restarts" ]; then
    echo "error: $name was lost $max_restarts times; stopping. Rerun this command to resume from the last checkpoint in $workdir." >&2
    exit 1
  fi
  say "$name is $(node_state) (preempted?): creating it again; the job resumes from its last checkpoint in $workdir (restart $attempt of $max_restarts)"
  sleep "$poll"
done
