#!/usr/bin/env bash
# Lint, format check and type check.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
