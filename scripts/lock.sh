#!/usr/bin/env bash
# Refresh constraints.txt: the newest versions pyproject.toml allows of everything the service
# and every extra install, resolved in a throwaway virtualenv and written as pip freeze does.
# Run it after changing a dependency, then run the tests and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
extras=$("$python" -c 'import tomllib
print(",".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]))')

if ! {
  "$python" -m venv "$scratch/venv" \
    && "$scratch/venv/bin/python" -m pip install --quiet --upgrade pip \
    && "$scratch/venv/bin/python" -m pip install --quiet --editable ".[$extras]"
} >"$scratch/log" 2>&1; then
  cat "$scratch/log" >&2
  exit 1
fi
{
  echo "# Every package the service and its extras ($extras) install, at the version tested."
  echo "# scripts/bootstrap.sh, the Dockerfile and .ci/run install with --constraint constraints.txt."
  echo "# Written by scripts/lock.sh (Python $("$scratch/venv/bin/python" -c 'import platform; print(platform.python_version())')); do not edit by hand."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable
} >constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
