#!/usr/bin/env bash
# The lowest versions pyproject.toml allows: every direct dependency of the service and of
# [dev] at its lower bound, in a virtualenv of its own (.venv-lowest), then the fast tier of
# the tests there (scripts/test.sh --fast; extra arguments go to pytest). A lower bound that
# names no released version, or one the tests fail on, fails this step: raise the bound.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv-lowest}
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
python3 - >"$constraints" <<'PY'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    lowest = re.search(r">=\s*([^,;\s]+)", requirement)
    if name and lowest:
        print(f"{name.group()}=={lowest.group(1)}")
PY
echo "lowest allowed versions: $(paste -sd ' ' "$constraints")"
VENV=$venv CONSTRAINTS=$constraints scripts/test.sh --fast "$@"
