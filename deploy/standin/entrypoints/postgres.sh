#!/usr/bin/env bash
# Stand-in for the postgres image's docker-entrypoint.sh: the contract docker-compose.yml uses.
# - POSTGRES_PASSWORD is required on first start unless POSTGRES_HOST_AUTH_METHOD=trust;
#   POSTGRES_USER (default postgres) is the superuser, POSTGRES_DB (default POSTGRES_USER)
#   is created; PGDATA is initialised with initdb when it holds no cluster.
# - Then, with that server still running, the files of /docker-entrypoint-initdb.d in name order:
#   `*.sh` executed when executable, otherwise sourced; `*.sql` run with psql into POSTGRES_DB;
#   anything else (the real image's compressed SQL too) ignored.
# - As in the real image, the first start runs a temporary server that listens on the Unix
#   socket only while it creates the database, then restarts it listening on every address.
# - The server runs as `postgres`; other commands run as given.
set -Eeuo pipefail

if [ "${1:0:1}" = "-" ]; then
  set -- postgres "$@"
fi
if [ "$1" != "postgres" ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

run_init_files() {
  local file
  for file in /docker-entrypoint-initdb.d/*; do
    [ -e "$file" ] || continue
    case "$file" in
      *.sh)
        if [ -x "$file" ]; then
          echo "$0: running $file"
          "$file"
        else
          echo "$0: sourcing $file"
          # The real entrypoint runs without -u: a script written for it may use unset names.
          set +u
          # shellcheck disable=SC1090
          . "$file"
          set -u
        fi
        ;;
      *.sql)
        echo "$0: running $file"
        psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" \
          --dbname "$POSTGRES_DB" -f "$file"
        ;;
      *) echo "$0: ignoring $file" ;;
    esac
  done
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}" "${POSTGRES_HOST_AUTH_METHOD:=}"
  # As the real image's: initialisation scripts see these in their environment.
  export POSTGRES_USER POSTGRES_DB PGPASSWORD=${PGPASSWORD:-${POSTGRES_PASSWORD:-}}
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'MESSAGE'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
MESSAGE
    exit 1
  fi
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
    ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
  sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$PGDATA/postgresql.conf"
  printf 'host all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" \
    >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
      --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  run_init_files
  pg_ctl -D "$PGDATA" -m fast -w stop
  echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
