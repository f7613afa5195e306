#!/usr/bin/env bash
# Create the virtualenv and install the service into it, with an extra when given one
# ("dev": the test and lint tools; "examples": what examples/ needs), pinned by constraints.txt.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml or the constraints changed.
# Runs side by side (scripts/serve.sh and scripts/test.sh at once) take turns on a lock.
# Quiet unless it fails, when it prints what pip said.
#
# Environment: VENV (.venv), CONSTRAINTS (constraints.txt), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/.."

extra=${1:-}
venv=${VENV:-.venv}
constraints=${CONSTRAINTS:-constraints.txt}
python=${PYTHON:-python3}

exec 9>"$venv.lock"
if ! flock --nonblock 9; then
  echo "waiting for another install into $venv to finish" >&2
  flock 9
fi

stamp="$venv/.installed-$(cat pyproject.toml "$constraints" | sha256sum | cut -c1-16)${extra:+-$extra}"
[ -f "$stamp" ] && exit 0

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! {
  { [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"; } \
    && "$venv/bin/python" -m pip install --quiet --upgrade pip \
    && "$venv/bin/python" -m pip install --quiet --constraint "$constraints" \
      --editable ".${extra:+[$extra]}"
} >"$log" 2>&1; then
  echo "installing into $venv failed:" >&2
  cat "$log" >&2
  exit 1
fi
touch "$stamp"
