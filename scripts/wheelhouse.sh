#!/usr/bin/env bash
# Download the wheels of the image's runtime dependencies into wheelhouse/ (or $1), for a
# build with no network: `docker build --build-arg WHEELHOUSE=wheelhouse .` (README).
# Wheels only, at the versions constraints.txt pins (as the image installs them), for the
# image's CPython 3.11 on glibc Linux of this machine's architecture, whatever Python runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-wheelhouse}
python=${PYTHON:-python3}
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$python" - pyproject.toml >"$requirements" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as file:
    print("\n".join(tomllib.load(file)["project"]["dependencies"]))
PY
mkdir -p "$target"
"$python" -m pip download --quiet --disable-pip-version-check --dest "$target" \
  --only-binary=:all: --implementation cp --python-version 3.11 \
  $(for glibc in 2014 _2_17 _2_28 _2_34; do echo --platform "manylinux${glibc}_$(uname -m)"; done) \
  --requirement "$requirements" --constraint constraints.txt
echo "$(find "$target" -name '*.whl' | wc -l) wheels in $target/"
