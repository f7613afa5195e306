#!/bin/sh
# Stand-in for edoburu/pgbouncer's /entrypoint.sh: the contract docker-compose.yml uses.
# DB_USER and DB_PASSWORD add a line to /etc/pgbouncer/userlist.txt (the password as given for
# AUTH_TYPE plain or scram-sha-256, otherwise md5-hashed); the configuration is the mounted
# /etc/pgbouncer/pgbouncer.ini (the real image writes one from more variables when none is
# mounted; this one refuses to start instead).
set -eu
config=/etc/pgbouncer/pgbouncer.ini
auth_file=${AUTH_FILE:-/etc/pgbouncer/userlist.txt}

[ -e "$auth_file" ] || touch "$auth_file"
if [ -n "${DB_USER:-}" ] && [ -n "${DB_PASSWORD:-}" ] && ! grep -q "^\"$DB_USER\"" "$auth_file"; then
  case "${AUTH_TYPE:-md5}" in
    plain | scram-sha-256) password=$DB_PASSWORD ;;
    *) password="md5$(printf '%s%s' "$DB_PASSWORD" "$DB_USER" | md5sum | cut -d' ' -f1)" ;;
  esac
  printf '"%s" "%s"\n' "$DB_USER" "$password" >>"$auth_file"
  echo "Wrote authentication credentials for '$DB_USER' to $auth_file"
fi
if [ ! -f "$config" ]; then
  echo "no $config: mount one (this stand-in does not generate it)" >&2
  exit 1
fi
exec "$@"
