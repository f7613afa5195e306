#!/bin/sh
# The primary's side of streaming replication (docker-compose.yml, profile `replicas`). The
# postgres image's entrypoint runs it from /docker-entrypoint-initdb.d once, when it
# initialises an empty volume; it only edits files, which the server reads when it starts.
# - The superuser may open replication connections from the addresses of the networks the
#   server is on (the compose network), with the password method of every other connection.
# - The primary keeps 256 MB of WAL past each checkpoint, so a standby that was stopped for a
#   while catches up by streaming rather than needing a new copy. No replication slots: the slot
#   of a replica that was scaled away would keep WAL forever.
# For a volume initialised without it, run it once and reload (README, "Run the stack"):
#   docker compose exec -u postgres db sh /docker-entrypoint-initdb.d/replication.sh
#   docker compose exec -u postgres db pg_ctl reload
# Sourced by the entrypoint when not executable: it must not exit, nor leave names behind but
# its own.
replication_hba="host replication \"${POSTGRES_USER:-postgres}\" samenet ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if ! grep -qxF "$replication_hba" "$PGDATA/pg_hba.conf"; then
  printf '%s\n' "$replication_hba" >>"$PGDATA/pg_hba.conf"
fi
if ! grep -q '^wal_keep_size' "$PGDATA/postgresql.conf"; then
  printf '%s\n' "wal_keep_size = 256MB" >>"$PGDATA/postgresql.conf"
fi
unset replication_hba
