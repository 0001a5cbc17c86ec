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
# 2. creates the slice NAME as a queued resource (--spot: a spot slice) and waits until it is up;
#    one that is up already is used (if of that type), a preempted or failed one re-created;
# 3. copies this checkout (its tracked files as they are now; or clones REPO_URL at REPO_REF) to
#    every worker, installs it with the [tpu] extra, starts the job on all workers, detached, and
#    streams worker 0's log; a job still running there is streamed, not started again;
# 4. when the slice is preempted, or the job stops on a fault that a rerun resumes from (exit
#    status 75: a lost host), goes back to 2 (up to MAX_RESTARTS times, default 20): the job
#    resumes from its last checkpoint in the workdir. Rerunning this command does the same.
# --delete deletes the slice once the job has finished; --dry_run prints every gcloud command
# instead of running it. ACCELERATOR: v4-8 ... v4-4096, v5e-1 ... v5e-256, v5p-8 ..., v6e-1 ...
# v6e-256. Environment: PROJECT (gcloud's default otherwise), RUNTIME_VERSION (a TPU VM image;
# by default the one for the TPU generation), REPO_URL, REPO_REF, MAX_RESTARTS, POLL_SECONDS (60).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dry_run=0 spot=0 check=1 delete=0
while [ $# -gt 0 ]; do
  case $1 in
    --dry_run) dry_run=1 ;;
    --spot) spot=1 ;;
    --skip_check) check=0 ;;
    --delete) delete=1 ;;
    --*) echo "error: unknown option $1 (the options come before NAME)" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
if [ $# -lt 5 ]; then
  sed -n '2,21p' "$0"; exit 2
fi
name=$1 zone=$2 accelerator=$3 config=$4 workdir=$5
shift 5
overrides=("$@")
fail() { echo "error: $*" >&2; exit 2; }
case $workdir in
  gs://*) ;;
  *) fail "the workdir must be on GCS (gs://...): every worker writes to it and a preempted slice's disks are lost. Got: $workdir" ;;
esac
case $accelerator in  # Cloud TPU's accelerator type, and the TPU VM image for the generation
  v4-*) wanted=$accelerator runtime=tpu-ubuntu2204-base ;;
  v5e-*) wanted=v5litepod-${accelerator#v5e-} runtime=v2-alpha-tpuv5-lite ;;
  v5p-*) wanted=$accelerator runtime=v2-alpha-tpuv5 ;;
  v6e-*) wanted=$accelerator runtime=v2-alpha-tpuv6e ;;
  *) fail "unknown accelerator $accelerator: v4-N, v5e-N, v5p-N or v6e-N" ;;
esac
runtime=${RUNTIME_VERSION:-$runtime}
max_restarts=${MAX_RESTARTS:-20} poll=${POLL_SECONDS:-60}
[ -f "$here/${config%%:*}" ] || fail "no config file ${config%%:*} in $here"
if ! printf '%s\n' ${overrides[@]+"${overrides[@]}"} | grep -q '^--config.dataset.data_dir=gs://'; then
  echo "note: no --config.dataset.data_dir=gs://...: the workers read the config's data_dir (TFDS's default: their own disks)." >&2
fi
where=(--zone="$zone")
[ -n "${PROJECT:-}" ] && where+=(--project="$PROJECT")

say() { echo "[tpu_pod $(date +%H:%M:%S)] $*" >&2; }
nap() { [ "$dry_run" = 1 ] || sleep "$poll"; }
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
# gcloud for an answer the flow depends on: prints it; prints NONE when the resource does not
# exist, UNKNOWN when gcloud failed otherwise (its error on stderr). A dry run answers DEFAULT.
query() {
  local default=$1 answer error status
  shift
  if [ "$dry_run" = 1 ]; then
    gc "$@"; echo "$default"; return
  fi
  error=$(mktemp)
  answer=$(gcloud "$@" 2>"$error"); status=$?
  if [ "$status" = 0 ]; then
    echo "${answer:-NONE}"
  elif grep -qiE 'NOT_FOUND|not found' "$error"; then
    echo NONE
  else
    sed 's/^/  gcloud: /' "$error" >&2; echo UNKNOWN
  fi
  rm -f "$error"
}
node() {  # "STATE TYPE" of the TPU VM (READY, CREATING, PREEMPTED, ...), NONE or UNKNOWN
  query NONE compute tpus tpu-vm describe "$name" "${where[@]}" \
    --format='value(state,acceleratorType)' | tr '\t' ' '
}
queued() {  # the queued resource's state (WAITING_FOR_RESOURCES, ACTIVE, FAILED, ...), NONE, UNKNOWN
  query "$1" compute tpus queued-resources describe "$name" "${where[@]}" \
    --format='value(state.state)'
}
delete_slice() {  # the queued resource and its TPU VM
  gc compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet
}
on_workers() {  # COMMAND: runs on every worker of the slice
  gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$1"
}
on_worker0() {  # DEFAULT COMMAND: runs on worker 0 and prints its answer (see query)
  query "$1" compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=0 --command="$2"
}

# 1. The job must compile and fit on the slice before one is paid for.
if [ "$check" = 1 ]; then
  aot=(python -m inception_jax.aot --config="$config" --topology="$accelerator"
       ${overrides[@]+"${overrides[@]}"})
  if [ "$dry_run" = 1 ]; then
    quoted "${aot[@]}"; printf '\n'
  else
    say "checking that $config compiles and fits on $accelerator (python -m inception_jax.aot)"
    (cd "$here" && "${aot[@]}")
    case $? in
      0) ;;
      1) echo "error: the job does not fit or compile on $accelerator (report above): lower config.batch_size, set config.model.remat=True or pick a larger slice; --skip_check skips this check." >&2
         exit 1 ;;
      *) echo "error: the compile check could not run (above); --skip_check skips it." >&2
         exit 2 ;;
    esac
  fi
fi

# 2. A slice that is up (0), or none (1: the caller counts a restart).
create_slice() {
  local state kind created=0
  while true; do
    read -r state kind <<< "$(node)"
    case $state in
      READY)
        if [ -n "$kind" ] && [ "$kind" != "$wanted" ]; then
          fail "$name exists as a $kind slice, not $wanted: delete it (gcloud compute tpus queued-resources delete $name --zone=$zone --force) or pick another name"
        fi
        say "$name is up"; return 0 ;;
      PREEMPTED|TERMINATED|STOPPED)
        say "$name is $state: deleting it to create it again"
        delete_slice || true
        created=0; continue ;;
      NONE) ;;
      *) say "$name is $state: waiting"; nap; continue ;;  # CREATING, UNKNOWN, ...
    esac
    # No TPU VM yet: the queued resource, if any, says why.
    state=$(queued "$([ "$created" = 1 ] && echo ACTIVE || echo NONE)")
    case $state in
      NONE)
        if [ "$created" = 1 ]; then
          echo "error: the queued resource $name went away" >&2; return 1
        fi
        local spot_flag=()
        [ "$spot" = 1 ] && spot_flag=(--spot)
        say "creating $name ($wanted, $runtime${spot_flag[*]:+, spot})"
        gc compute tpus queued-resources create "$name" --node-id="$name" "${where[@]}" \
          --accelerator-type="$wanted" --runtime-version="$runtime" \
          ${spot_flag[@]+"${spot_flag[@]}"} || return 1
        created=1; say "$name is queued: waiting until it is up"; nap; continue ;;
      ACTIVE) [ "$dry_run" = 1 ] && { say "$name is up"; return 0; } ;;
      FAILED|SUSPENDED)
        say "the queued resource $name is $state: deleting it to create it again"
        delete_slice || true
        created=0; continue ;;
    esac  # ACCEPTED, WAITING_FOR_RESOURCES, PROVISIONING, UNKNOWN: wait
    say "$name: $state"; nap
  done
}

# What git tracks and the working tree still has, NUL-separated (a file deleted but not yet
# committed is left out rather than failing the archive).
tracked_files() {
  git -C "$here" ls-files -z | while IFS= read -r -d '' file; do
    [ -e "$here/$file" ] && printf '%s\0' "$file"
  done
}

install() {
  local source
  if [ -n "${REPO_URL:-}" ]; then
    source="rm -rf ~/inception_jax && git clone -q $(quote "$REPO_URL") ~/inception_jax"
    [ -n "${REPO_REF:-}" ] && source+=" && git -C ~/inception_jax checkout -q $(quote "$REPO_REF")"
  else
    local archive=/tmp/inception_jax_$$.tgz
    if [ "$dry_run" = 1 ]; then
      echo "tracked_files | tar --null -czf $archive -C $(quote "$here") -T -"
    else
      tracked_files | tar --null -czf "$archive" -C "$here" -T - || return 1
    fi
    gc compute tpus tpu-vm scp "$archive" "$name:inception_jax.tgz" "${where[@]}" --worker=all ||
      return 1
    [ "$dry_run" = 1 ] || rm -f "$archive"
    source='rm -rf ~/inception_jax && mkdir ~/inception_jax && tar -xzf ~/inception_jax.tgz -C ~/inception_jax'
  fi
  on_workers "set -e; $source; cd ~/inception_jax; python3 -m pip install -q -e '.[tpu]'"
}

# 3. The job, started detached on every worker (a lost connection here does not stop it): its
# output and, at the end, its exit status go to ~/inception_jax.log; ssh returns at once.
job=$(quoted python3 -m inception_jax.main --config="$config" --workdir="$workdir" \
      ${overrides[@]+"${overrides[@]}"})
start="cd ~/inception_jax || exit 1; nohup bash -c $(quote "$job; echo \"exit status \$?\"") > ~/inception_jax.log 2>&1 < /dev/null & echo \$! > ~/inception_jax.pid"
alive='test -f ~/inception_jax.pid && kill -0 $(cat ~/inception_jax.pid) 2> /dev/null'
stream="tail -n +1 --pid=\$(cat ~/inception_jax.pid) -F ~/inception_jax.log"
# How it stands: running, preempted (it saved a checkpoint on SIGTERM and exited), or the log's
# last line ('exit status N' once it has ended).
outcome="if $alive; then echo running; elif grep -q '^Preempted: saved' ~/inception_jax.log; then echo preempted; else tail -n 1 ~/inception_jax.log; fi"

restarts=0
while true; do
  if create_slice; then
    started=1
    if [ "$(on_worker0 idle "if $alive; then echo running; else echo idle; fi")" = running ]; then
      say "the job is running on $name already; worker 0's log follows"
    elif install && on_workers "$start"; then
      say "job started on every worker of $name; worker 0's log follows"
    elif [ "$(node)" = "READY $wanted" ]; then
      echo "error: installing or starting the job on $name failed (above); fix and rerun this command." >&2
      exit 1
    else
      started=0  # the slice went away meanwhile
    fi
    status=$([ "$started" = 1 ] && echo running)
    while [ "$status" = running ]; do
      gc compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=0 --command="$stream"
      status=$(on_worker0 'exit status 0' "$outcome")
    done
    case $status in
      'exit status 0')
        say "the job finished: its results are in $workdir"
        [ "$delete" = 1 ] && delete_slice
        exit 0 ;;
      'exit status 75')  # a fault that a rerun resumes from (inception_jax/faults.py): a lost host
        say "the job stopped on a fault (above; a lost or frozen host?): starting it again" ;;
      'exit status '*)
        if [ "$(node)" = "READY $wanted" ]; then
          echo "error: the job failed with ${status#exit } (its log is above; $name is kept: fix and rerun this command to resume)." >&2
          exit 1
        fi ;;  # the slice went away under it: preempted
    esac
  fi
  # The slice was preempted or lost.
  restarts=$((restarts + 1))
  if [ "$restarts" -gt "$max_restarts" ]; then
    echo "error: $name was lost $max_restarts times; stopping. Rerun this command to resume from the last checkpoint in $workdir." >&2
    exit 1
  fi
  say "$name: $(node): starting the job again (on a new slice if this one was lost); the job resumes from its last checkpoint in $workdir (restart $restarts of $max_restarts)"
  nap
done
