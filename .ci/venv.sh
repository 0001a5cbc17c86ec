# Sourced by the CI tiers that run in a virtual environment of their own (.ci/floors, .ci/export):
# `fail`, `new_venv` and `run_pytest`. The caller sets TIER (its name, for messages).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export JAX_PLATFORMS=cpu

fail() { echo "$TIER: $*; failing." >&2; exit 1; }

# new_venv PYTHON UV-PIP-INSTALL-ARGS...: a fresh venv in a temporary directory (removed on exit),
# uv in it, then `uv pip install ARGS` (in parallel, and from uv's cache on later runs). Sets $py.
new_venv() {
  local python=$1
  shift
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$python" -m venv "$tmp/venv" || fail "no virtual environment from $python"
  py="$tmp/venv/bin/python"
  "$py" -m pip install -q --disable-pip-version-check uv || fail 'uv did not install'
  "$py" -m uv pip install -q --python "$py" "$@" || fail "the install (uv pip install $*) failed"
}

# run_pytest ARGS...: pytest in the venv; any failure fails the tier, exit code 5 (no tests) too.
run_pytest() {
  "$py" -m pytest -q -p no:cacheprovider -n 2 "$@"
  local status=$?
  [ "$status" -eq 5 ] && fail 'pytest collected no tests'
  [ "$status" -eq 0 ] || fail "pytest exited with $status"
}
