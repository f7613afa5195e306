#!/usr/bin/env bash
# The unit, integration and end-to-end tiers again, on PostgreSQL with a streaming hot standby: a
# throwaway primary and synchronous standby (remote_apply: a commit is visible on the standby
# at once) on free local ports, the service under test reading from the standby
# (DATABASE_REPLICA_URLS, tests/conftest.py), everything removed at the end.
#
#   scripts/test-replicas.sh [PYTEST ARGS...]
#
# Environment: VENV (.venv) is the virtualenv to use; PG_BIN the directory of initdb and
# pg_ctl (the newest /usr/lib/postgresql/*/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
VENV=$venv scripts/bootstrap.sh dev
python="$venv/bin/python"

# Not under a private temporary directory: as root, the clusters run as `postgres`.
parent=$(mktemp -d "${TMPDIR:-/tmp}/sars-replicas-XXXXXX")
chmod 755 "$parent"
cluster="$parent/cluster"
cleanup() {
  "$python" -m tests.replication down --dir "$cluster" >/dev/null 2>&1 || true
  rm -rf "$parent"
}
trap cleanup EXIT

printf '== a primary and a synchronous streaming standby\n'
environment=$("$python" -m tests.replication up --replicas 1 --synchronous --dir "$cluster")
while IFS= read -r line; do
  printf '  %s\n' "$line"
  export "${line?}"
done <<<"$environment"

# scripts/ensure-postgres.sh (run by test.sh) asks this primary whether PostgreSQL is up.
port=${TEST_POSTGRES_URL##*:}
if [ $# -eq 0 ]; then
  set -- -m "not compose and not reliability"
fi
TEST_BACKENDS=postgresql PGHOST=127.0.0.1 PGPORT=${port%%/*} scripts/test.sh "$@"
