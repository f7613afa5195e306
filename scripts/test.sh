#!/usr/bin/env bash
# Install what the tests need, then run them on SQLite and PostgreSQL.
#
#   scripts/test.sh            every tier in turn, each headed by what it runs and how long it
#                              took on a 2-core machine shared with other work
#   scripts/test.sh --fast     the unit and integration tiers alone
#   scripts/test.sh ARGS...    pytest ARGS (files, -k, -m ...); -k compose: the compose stack
#
# Environment: TEST_BACKENDS=sqlite skips PostgreSQL; VENV (.venv) is the virtualenv to use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
VENV=$venv scripts/bootstrap.sh dev
if [[ "${TEST_BACKENDS:-sqlite,postgresql}" == *postgresql* ]]; then
  scripts/ensure-postgres.sh
fi
pytest=("$venv/bin/python" -m pytest)
fast="unit or integration"

# tier TITLE MARKERS [PYTEST ARGS...]: a header, then the tests of MARKERS.
tier() {
  local title=$1 markers=$2
  shift 2
  printf '\n== %s\n' "$title"
  "${pytest[@]}" -m "$markers" "$@"
}

if [ "${1:-}" = --fast ]; then
  shift
  tier "unit and integration tests (about 4 minutes)" "$fast" "$@"
  exit
fi
scripts/system-packages.sh || echo "could not install system packages; their tests will skip" >&2
[ $# -eq 0 ] || exec "${pytest[@]}" "$@"

e2e="end-to-end tests: Hypercorn, the CLI, the scripts, a browser (about 11 minutes)"
reliability="reliability suite: real Hypercorn under stress, a 100,000-request soak"
reliability+=" (7 minutes on an idle machine, over 30 on a busy one)"
compose="the compose stack on a Docker engine of its own (about 5 minutes; 14 the first time,"
compose+=" building the stand-in images)"
failed=0
tier "unit and integration tests (about 4 minutes)" "$fast" || failed=1
tier "$e2e" "e2e and not compose" -v || failed=1
tier "$compose" compose -v || failed=1
tier "$reliability" reliability -v || failed=1
exit "$failed"
