#!/usr/bin/env bash
# The `replica` service of docker-compose.yml (profile `replicas`): a hot standby of `db`.
# On its first start (no cluster in PGDATA) it copies the primary with pg_basebackup, with the
# WAL written meanwhile (-X stream) and the standby's settings (-R: standby.signal and
# primary_conninfo, which names this container as the application); on every start it then
# runs that copy as a hot standby, which catches up by streaming from the primary.
# Run as `postgres`: the postgres image's entrypoint runs any command but `postgres` as given.
# PGUSER and PGPASSWORD are the primary's superuser (docker-compose.yml).
set -Eeuo pipefail

: "${PRIMARY_HOST:=db}" "${PRIMARY_PORT:=5432}"
# The copy is made beside PGDATA, in the same volume, and renamed into place when complete: a
# copy interrupted half-way is started over, never served.
partial=$PGDATA.partial

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  rm -rf "$partial" "$PGDATA"
  echo "copying the primary $PRIMARY_HOST:$PRIMARY_PORT into $PGDATA with pg_basebackup"
  pg_basebackup --pgdata="$partial" --wal-method=stream --write-recovery-conf \
    --checkpoint=fast \
    --dbname="host=$PRIMARY_HOST port=$PRIMARY_PORT application_name=$HOSTNAME"
  mv "$partial" "$PGDATA"
fi
exec postgres "$@"
