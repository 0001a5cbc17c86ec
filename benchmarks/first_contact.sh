#!/usr/bin/env bash
# A new user's first contact, timed cold: a fresh clone, a fresh venv, no pip cache, an empty
# compilation cache and home, then the README Quickstart's two commands as written.
#   benchmarks/first_contact.sh [REPO]     (REPO: a path or URL to clone; default: this checkout)
# Prints the wall time of each command and of both. pip's configured indexes and wheel folders
# still serve the packages (no download is timed when they lie on this machine's disk). The machine's own load is not controlled:
# run it on an otherwise idle machine, several times, and quote the median.
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
scratch=$(mktemp -d /tmp/first_contact.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
git clone -q "$repo" "$scratch/clone"
python3 -m venv "$scratch/venv"
# Cold: nothing cached from an earlier install or run (the tests keep their compilation cache in
# the temporary directory, the programs theirs in the user's cache home).
export PIP_NO_CACHE_DIR=1 HOME="$scratch/home" XDG_CACHE_HOME="$scratch/cache" TMPDIR="$scratch/tmp"
unset JAX_PLATFORMS JAX_COMPILATION_CACHE_DIR PYTHONPATH
mkdir -p "$HOME" "$TMPDIR"
export PATH="$scratch/venv/bin:$PATH"
cd "$scratch/clone"
# The Quickstart's first code block, its two lines, as written.
mapfile -t commands < <(awk '/^## Quickstart/{q=1} q&&/^```/{n++; next} q&&n==1{print}' README.md)
[ "${#commands[@]}" -eq 2 ] || { echo "expected two commands, got: ${commands[*]}" >&2; exit 1; }
workdir=$(grep -o -- '--workdir=[^ ]*' <<< "${commands[0]}" | cut -d= -f2)
if [ -e "$workdir" ]; then  # the demo would resume, not train: not a first contact
  echo "$workdir exists: move it away for a cold run (this script leaves it in place)" >&2
  exit 1
fi
total=0
for i in 0 1; do
  echo "== command $((i + 1)): ${commands[$i]}"
  start=$(date +%s)
  bash -c "${commands[$i]}" > "$scratch/out$i.log" 2>&1 || { tail -30 "$scratch/out$i.log"; exit 1; }
  took=$(( $(date +%s) - start ))
  total=$(( total + took ))
  tail -2 "$scratch/out$i.log"
  echo "command $((i + 1)): ${took} s"
done
rm -rf "$workdir"
echo "both commands: ${total} s ($(( total / 60 )) min $(( total % 60 )) s), load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
