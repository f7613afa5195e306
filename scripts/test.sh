#!/usr/bin/env bash
# Install everything and run the whole test suite on SQLite and PostgreSQL.
# Extra arguments go to pytest; TEST_BACKENDS=sqlite skips PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh dev
scripts/system-packages.sh || echo "could not install system packages; their tests will skip" >&2
if [[ "${TEST_BACKENDS:-sqlite,postgresql}" == *postgresql* ]]; then
  scripts/ensure-postgres.sh
fi
exec .venv/bin/python -m pytest "$@"
