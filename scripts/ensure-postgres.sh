#!/usr/bin/env bash
# Make sure the local PostgreSQL server answers; start the machine's cluster when it does not.
set -euo pipefail

host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
pg_isready -q -h "$host" -p "$port" && exit 0

if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "PostgreSQL is down; starting cluster $version/main" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
for _ in $(seq 1 30); do
  pg_isready -q -h "$host" -p "$port" && exit 0
  sleep 1
done
echo "PostgreSQL does not answer on $host:$port" >&2
exit 1
