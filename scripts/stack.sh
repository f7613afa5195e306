#!/usr/bin/env bash
# The compose topology on this machine, without Docker: PostgreSQL, migrations, an optional
# load, N Hypercorn processes and, when asked, PgBouncer (transaction pooling) between them and
# the database, nginx balancing over them, and streaming hot standbys they read from.
#
#   scripts/stack.sh up [--workers N] [--pgbouncer] [--lb] [--load FILE] [--replicas N]
#   scripts/stack.sh status
#   scripts/stack.sh down
#
# --replicas N: N streaming hot standbys of the throwaway cluster (pg_basebackup, asynchronous
# replication) on the ports after its own; the API processes read from them directly (not
# through PgBouncer), given DATABASE_REPLICA_URLS. `status` shows them, `down` removes them.
#
# Environment (all optional):
#   STACK_DIR             state directory: configs, logs, pids, the throwaway cluster (.stack)
#   STACK_DATABASE_URL    an existing PostgreSQL database to use instead of a throwaway cluster
#   STACK_PG_PORT         port of the throwaway cluster (55432); its standbys use the next ones
#   STACK_PGBOUNCER_PORT  port of PgBouncer (56432)
#   STACK_API_PORT        port of the first API process; the others follow it (8101, 8102, ...)
#   STACK_LB_PORT         port of nginx (8100)
#   PG_BIN                directory of initdb and pg_ctl (the newest /usr/lib/postgresql/*/bin)
#   API_TOKENS, LOG_LEVEL and every other service setting reach the API processes unchanged.
#
# Everything listens on 127.0.0.1 only. The script installs nothing: when a program is missing
# it names the Debian package to install and stops.
set -euo pipefail
caller=$(pwd)
cd "$(dirname "$0")/.."
repo=$(pwd)

# Relative paths given by the caller (STACK_DIR, --load FILE) are relative to where it stands.
state=$(cd "$caller" && realpath -m "${STACK_DIR:-$repo/.stack}")
stack_env="$state/stack.env"
pg_port=${STACK_PG_PORT:-55432}
pgbouncer_port=${STACK_PGBOUNCER_PORT:-56432}
api_port=${STACK_API_PORT:-8101}
lb_port=${STACK_LB_PORT:-8100}
database=sars
# Hypercorn's graceful_timeout plus time for the after-serving hook (closing the pool).
api_stop_timeout=30

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

say() { printf '%s\n' "$*"; }
die() {
  printf 'stack: %s\n' "$*" >&2
  exit 1
}

# -- processes -------------------------------------------------------------------------------

# As the owner of the PostgreSQL files: `postgres` when we are root (initdb, pg_ctl and
# PgBouncer refuse to run as root), ourselves otherwise. setpriv execs: a pid stays the pid.
as_pg=()
[ "$(id -u)" -ne 0 ] || as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
as_pg() { "${as_pg[@]}" "$@"; }

# start NAME LOG COMMAND...: run COMMAND detached (its own session, so that its children can be
# found again; no terminal, no inherited stdio) and remember its pid.
start() {
  local name=$1 log=$2
  shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$state/pids/$name.pid"
}

# A zombie is not alive: whoever inherited it may never reap it.
alive() {
  local status
  [ -n "$1" ] || return 1
  status=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$status" ] && [ "$status" != Z ] && [ "$status" != X ]
}

# Any live process left in session/process group PGID?
group_alive() {
  local pgid=$1 pid
  for pid in $(ps -e -o pid= -o pgid= | awk -v g="$pgid" '$2 == g { print $1 }'); do
    alive "$pid" && return 0
  done
  return 1
}

pid_of() { cat "$state/pids/$1.pid" 2>/dev/null || true; }

# stop NAME SIGNAL TIMEOUT: ask with SIGNAL, wait, then kill whatever is left of its group.
# Only the leader gets SIGNAL: Hypercorn's workers die at once on a SIGTERM of their own, while
# the leader shuts them down gracefully.
stop() {
  local name=$1 signal=$2 timeout=$3 pid waited=0
  pid=$(pid_of "$name")
  [ -n "$pid" ] || return 0
  if alive "$pid"; then
    kill "-$signal" "$pid" 2>/dev/null || true
    while alive "$pid" && [ "$waited" -lt $((timeout * 10)) ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    alive "$pid" && say "  $name did not stop within ${timeout}s; killing it"
  fi
  if group_alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$state/pids/$name.pid"
}

# -- waiting ---------------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_ok URL: the status is 200 (urllib raises on anything else).
http_ok() {
  "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$1" 2>/dev/null
}

# wait_until NAME LOG PROBLEM CHECK...: run CHECK every 0.1 s, for up to 30 s, while NAME runs.
wait_until() {
  local name=$1 log=$2 problem=$3 tries=0
  shift 3
  until "$@"; do
    alive "$(pid_of "$name")" || fail "$name exited at start" "$log"
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || fail "$name $problem" "$log"
    sleep 0.1
  done
}

wait_for_port() { wait_until "$1" "$3" "does not listen on port $2" port_open "$2"; }
wait_for_http() { wait_until "$1" "$3" "does not answer $2" http_ok "$2"; }

# fail MESSAGE [LOG]: show the log's end, take down what was started, stop.
fail() {
  printf 'stack: %s\n' "$1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    printf -- '--- last lines of %s\n' "$2" >&2
    tail -n 20 "$2" >&2
  fi
  cmd_down >&2 || true
  exit 1
}

# -- programs --------------------------------------------------------------------------------

find_pg_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    printf '%s\n' "$PG_BIN"
  elif compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    dirname "$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  fi
}

check_programs() {
  local missing=()
  [ -x .venv/bin/hypercorn ] && [ -x .venv/bin/alembic ] \
    || die "no .venv with the service; run scripts/bootstrap.sh first"
  if [ -z "${STACK_DATABASE_URL:-}" ]; then
    pg_bin=$(find_pg_bin)
    [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ] \
      || missing+=(postgresql)
  fi
  if [ "$with_pgbouncer" = 1 ] && ! command -v pgbouncer >/dev/null; then
    missing+=(pgbouncer)
  fi
  if [ "$with_lb" = 1 ] && ! command -v nginx >/dev/null; then
    missing+=(nginx-light)
  fi
  command -v setsid >/dev/null || missing+=(util-linux)
  if [ "${#missing[@]}" -gt 0 ]; then
    die "missing programs; install them with: apt-get install -y --no-install-recommends ${missing[*]}"
  fi
}

# -- up --------------------------------------------------------------------------------------

start_postgres() {
  local data="$state/postgres/data" log="$state/postgres/postgres.log"
  mkdir -p "$state/postgres"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$state/postgres"
    as_pg test -w "$state/postgres" \
      || fail "the postgres user cannot write $state/postgres; use a STACK_DIR it can reach"
  fi
  say "postgres: new cluster in $data (port $pg_port)"
  as_pg "$pg_bin/initdb" --pgdata="$data" --username=postgres --auth=trust --encoding=UTF8 \
    --no-sync >"$state/postgres/initdb.log" 2>&1 || fail "initdb failed" "$state/postgres/initdb.log"
  # TCP on loopback only; no Unix socket (a deep STACK_DIR would not fit a socket path).
  cat >>"$data/postgresql.conf" <<EOF

# scripts/stack.sh
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
wal_level = replica
max_wal_senders = 10
hot_standby = on
wal_keep_size = '512MB'
EOF
  as_pg "$pg_bin/pg_ctl" --pgdata="$data" --log="$log" --wait --timeout=60 start >/dev/null \
    || fail "PostgreSQL did not start" "$log"
  head -n 1 "$data/postmaster.pid" >"$state/pids/postgres.pid"
  "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
    -c "CREATE DATABASE $database" || fail "could not create the database" "$log"
  db_url="postgresql+asyncpg://postgres@127.0.0.1:$pg_port/$database"
}

# psql_at PORT SQL: the result of SQL on the cluster at PORT, unaligned.
psql_at() {
  "$pg_bin/psql" -X -q -A -t -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

streaming() {
  [ "$(psql_at "$pg_port" "SELECT count(*) FROM pg_stat_replication
    WHERE application_name = '$1' AND state = 'streaming'" 2>/dev/null)" = 1 ]
}

# $replicas streaming hot standbys of the throwaway cluster, on the ports after its own.
start_standbys() {
  local i name port data log urls=()
  for i in $(seq 1 "$replicas"); do
    name=standby-$i port=$((pg_port + i))
    data="$state/postgres/$name" log="$state/postgres/$name.log"
    say "$name: streaming hot standby on port $port"
    as_pg "$pg_bin/pg_basebackup" --pgdata="$data" --host=127.0.0.1 --port="$pg_port" \
      --username=postgres --wal-method=stream --write-recovery-conf --checkpoint=fast \
      --no-sync >"$log.basebackup" 2>&1 || fail "pg_basebackup for $name failed" "$log.basebackup"
    # After pg_basebackup's own primary_conninfo: the last one wins.
    cat >>"$data/postgresql.auto.conf" <<EOF
port = $port
primary_conninfo = 'host=127.0.0.1 port=$pg_port user=postgres application_name=$name'
EOF
    as_pg "$pg_bin/pg_ctl" --pgdata="$data" --log="$log" --wait --timeout=60 start >/dev/null \
      || fail "$name did not start" "$log"
    head -n 1 "$data/postmaster.pid" >"$state/pids/$name.pid"
    wait_until "$name" "$log" "does not stream from the primary" streaming "$name"
    urls+=("postgresql+asyncpg://postgres@127.0.0.1:$port/$database")
  done
  replica_urls=$(IFS=,; echo "${urls[*]}")
}

# Host, port, database, user and password of $db_url, one per line (password may be empty).
url_parts() {
  "$python" - "$db_url" <<'EOF'
import sys
from sqlalchemy.engine import make_url
url = make_url(sys.argv[1])
for part in (url.host or "127.0.0.1", url.port or 5432, url.database, url.username, url.password):
    print("" if part is None else part)
EOF
}

start_pgbouncer() {
  local dir="$state/pgbouncer" host port dbname user password
  { read -r host; read -r port; read -r dbname; read -r user; read -r password; } < <(url_parts)
  mkdir -p "$dir"
  # A copy beside the config: PgBouncer runs as postgres, which may not be able to read the
  # checkout (a clone in a private directory).
  cp "$repo/deploy/pgbouncer/pooling.ini" "$dir/pooling.ini"
  # Clients on loopback are not authenticated (auth_type any): every server connection logs
  # in as the database URL's user, with its password.
  cat >"$dir/pgbouncer.ini" <<EOF
;; Written by scripts/stack.sh.
[databases]
$dbname = host=$host port=$port dbname=$dbname user=$user${password:+ password=$password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgbouncer_port
unix_socket_dir =
auth_type = any
admin_users =

%include $dir/pooling.ini
EOF
  chmod 600 "$dir/pgbouncer.ini"
  [ "$(id -u)" -ne 0 ] || chown -R postgres: "$dir"
  say "pgbouncer: 127.0.0.1:$pgbouncer_port (transaction pooling) -> $host:$port/$dbname"
  start pgbouncer "$dir/pgbouncer.log" "${as_pg[@]}" pgbouncer "$dir/pgbouncer.ini"
  wait_for_port pgbouncer "$pgbouncer_port" "$dir/pgbouncer.log"
  api_db_url="postgresql+asyncpg://$user@127.0.0.1:$pgbouncer_port/$dbname"
}

start_apis() {
  local i port
  mkdir -p "$state/api"
  for i in $(seq 1 "$workers"); do
    port=$((api_port + i - 1))
    say "api-$i: http://127.0.0.1:$port"
    start "api-$i" "$state/api/api-$i.log" env "${api_env[@]}" \
      .venv/bin/hypercorn --config hypercorn.toml --bind "127.0.0.1:$port" --workers 1 \
      service.serve:app
  done
  for i in $(seq 1 "$workers"); do
    port=$((api_port + i - 1))
    wait_for_http "api-$i" "http://127.0.0.1:$port/health" "$state/api/api-$i.log"
  done
}

start_lb() {
  local dir="$state/nginx" i user=""
  mkdir -p "$dir/tmp"
  # Run as root, nginx would hand its workers to `nobody`, who cannot reach the state
  # directory; this is a loopback-only development balancer, so the workers stay root.
  [ "$(id -u)" -ne 0 ] || user="user root;"
  {
    say "# Written by scripts/stack.sh: nginx in the foreground, every path in $dir."
    say "$user"
    say "daemon off;"
    say "worker_processes 1;"
    say "pid $dir/nginx.pid;"
    say "error_log $dir/error.log warn;"
    say "events { worker_connections 1024; }"
    say "http {"
    say "    access_log $dir/access.log;"
    for temp in client_body proxy fastcgi uwsgi scgi; do
      say "    ${temp}_temp_path $dir/tmp/$temp;"
    done
    say "    upstream api {"
    for i in $(seq 1 "$workers"); do
      say "        server 127.0.0.1:$((api_port + i - 1));"
    done
    say "        keepalive 16;"
    say "        keepalive_timeout 60s;"
    say "    }"
    say "    server {"
    say "        listen 127.0.0.1:$lb_port;"
    say "        location / {"
    say "            proxy_pass http://api;"
    say "            include $repo/deploy/nginx/proxy.conf;"
    say "        }"
    say "    }"
    say "}"
  } >"$dir/nginx.conf"
  nginx -q -t -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>>"$dir/error.log" \
    || fail "the generated nginx config is invalid" "$dir/error.log"
  say "lb: http://127.0.0.1:$lb_port -> api-1..api-$workers"
  start lb "$dir/stderr.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
  wait_for_http lb "http://127.0.0.1:$lb_port/health" "$dir/error.log"
}

cmd_up() {
  local load_file="" port
  workers=1 with_pgbouncer=0 with_lb=0 replicas=0 replica_urls=""
  while [ $# -gt 0 ]; do
    case $1 in
      --workers)
        [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || die "--workers needs a number >= 1"
        workers=$2
        shift 2
        ;;
      --replicas)
        [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || die "--replicas needs a number >= 0"
        replicas=$2
        shift 2
        ;;
      --pgbouncer) with_pgbouncer=1 && shift ;;
      --lb) with_lb=1 && shift ;;
      --load)
        load_file=$(cd "$caller" && realpath -e "${2:-}" 2>/dev/null) && [ -r "$load_file" ] \
          || die "--load needs a readable CSV file"
        shift 2
        ;;
      *) usage ;;
    esac
  done
  if [ -f "$stack_env" ]; then
    die "a stack is already up in $state (scripts/stack.sh status; scripts/stack.sh down)"
  fi
  if [ "$replicas" -gt 0 ] && [ -n "${STACK_DATABASE_URL:-}" ]; then
    die "--replicas makes standbys of the throwaway cluster; unset STACK_DATABASE_URL"
  fi
  check_programs
  python=.venv/bin/python

  local ports=()
  [ -n "${STACK_DATABASE_URL:-}" ] || ports+=("$pg_port")
  for port in $(seq $((pg_port + 1)) $((pg_port + replicas))); do ports+=("$port"); done
  [ "$with_pgbouncer" = 0 ] || ports+=("$pgbouncer_port")
  [ "$with_lb" = 0 ] || ports+=("$lb_port")
  for port in $(seq "$api_port" $((api_port + workers - 1))); do ports+=("$port"); done
  for port in "${ports[@]}"; do
    ! port_open "$port" || die "port $port is taken; choose others with STACK_*_PORT"
  done

  mkdir -p "$state/pids"
  chmod 755 "$state"
  # Written first, so that `down` can clean up after a failure half-way.
  {
    record stack_started "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    record stack_throwaway "$([ -n "${STACK_DATABASE_URL:-}" ] && echo 0 || echo 1)"
    record stack_pg_bin "${pg_bin:-}"
    record stack_pg_port "$pg_port"
  } >"$stack_env"
  chmod 600 "$stack_env"

  if [ -n "${STACK_DATABASE_URL:-}" ]; then
    db_url=$("$python" -c 'import sys; from service.settings import async_database_url as u
print(u(sys.argv[1]).render_as_string(hide_password=False))' "$STACK_DATABASE_URL") \
      || die "STACK_DATABASE_URL is not a PostgreSQL URL"
    [[ $db_url == postgresql+asyncpg://* ]] || die "STACK_DATABASE_URL must be a PostgreSQL URL"
    say "postgres: existing database $(mask "$db_url")"
  else
    start_postgres
    [ "$replicas" = 0 ] || start_standbys
  fi

  say "migrate: alembic upgrade head"
  DATABASE_URL=$db_url .venv/bin/alembic upgrade head >"$state/migrate.log" 2>&1 \
    || fail "migrations failed" "$state/migrate.log"
  if [ -n "$load_file" ]; then
    say "load: $load_file"
    DATABASE_URL=$db_url "$python" -m service.load "$load_file" --on-conflict skip \
      >"$state/load.log" 2>&1 || fail "loading $load_file failed" "$state/load.log"
  fi

  api_db_url=$db_url
  api_env=()
  if [ "$with_pgbouncer" = 1 ]; then
    start_pgbouncer
    # Behind transaction pooling: no statement cache, unique statement names (README).
    api_env=(DB_TRANSACTION_POOLER=true)
  fi
  api_env=("DATABASE_URL=$api_db_url" STACK_DIR="$state" "${api_env[@]}")
  [ -z "$replica_urls" ] || api_env+=("DATABASE_REPLICA_URLS=$replica_urls")
  start_apis
  [ "$with_lb" = 0 ] || start_lb

  {
    record stack_db_url "$db_url"
    record stack_api_db_url "$api_db_url"
    record stack_workers "$workers"
    record stack_replicas "$replicas"
    record stack_replica_urls "$replica_urls"
    record stack_api_port "$api_port"
    record stack_pgbouncer "$([ "$with_pgbouncer" = 0 ] || echo "127.0.0.1:$pgbouncer_port")"
    record stack_lb "$([ "$with_lb" = 0 ] || echo "http://127.0.0.1:$lb_port")"
  } >>"$stack_env"
  local entry="http://127.0.0.1:$api_port"
  [ "$with_lb" = 0 ] || entry="http://127.0.0.1:$lb_port"
  wait_for_http "$([ "$with_lb" = 1 ] && echo lb || echo api-1)" "$entry/ready" "$state/api/api-1.log"
  say "up: $entry (scripts/stack.sh status | down)"
}

# record NAME VALUE: a line of stack.env, which status and down source.
record() { printf '%s=%q\n' "$1" "$2"; }

# -- status and down -------------------------------------------------------------------------

mask() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

load_state() {
  [ -f "$stack_env" ] || return 1
  # shellcheck disable=SC1090
  . "$stack_env"
}

show() {
  local name=$1 what=$2 pid state_word=stopped
  pid=$(pid_of "$name")
  if [ -n "$pid" ] && alive "$pid"; then state_word=running; else all_running=0; fi
  printf '  %-10s %-8s pid %-8s %s\n' "$name" "$state_word" "${pid:--}" "$what"
}

cmd_status() {
  if ! load_state; then
    say "no stack in $state"
    return 3
  fi
  all_running=1
  say "stack in $state, started ${stack_started}"
  if [ "${stack_throwaway}" = 1 ]; then
    show postgres "$(mask "${stack_db_url:-}") (throwaway cluster)"
  else
    say "  postgres   external         $(mask "${stack_db_url:-}")"
  fi
  local i
  for i in $(seq 1 "${stack_replicas:-0}"); do
    show "standby-$i" "127.0.0.1:$((stack_pg_port + i)) (streaming hot standby)"
  done
  [ -z "${stack_pgbouncer:-}" ] || show pgbouncer "${stack_pgbouncer} (transaction pooling)"
  for i in $(seq 1 "${stack_workers:-0}"); do
    show "api-$i" "http://127.0.0.1:$((stack_api_port + i - 1)) -> $(mask "$stack_api_db_url")"
  done
  [ -z "${stack_lb:-}" ] || show lb "${stack_lb} -> api-1..api-${stack_workers}"
  say "  logs in $state/*/"
  [ "$all_running" = 1 ]
}

cmd_down() {
  if ! load_state; then
    say "no stack in $state"
    return 0
  fi
  say "stopping the stack in $state"
  stop lb QUIT 10
  local pidfile stopping=()
  for pidfile in "$state"/pids/api-*.pid; do
    [ -e "$pidfile" ] || continue
    stop "$(basename "$pidfile" .pid)" TERM "$api_stop_timeout" &
    stopping+=($!)
  done
  # Only these: after a failed `up`, the services it started are children of this shell too.
  [ "${#stopping[@]}" -eq 0 ] || wait "${stopping[@]}"
  stop pgbouncer TERM 10
  local standby
  for standby in "$state"/postgres/standby-*/; do
    [ -d "$standby" ] || continue
    if [ -f "$standby/postmaster.pid" ]; then
      as_pg "${stack_pg_bin}/pg_ctl" --pgdata="$standby" --mode=fast --wait \
        stop >/dev/null 2>&1 || true
    fi
    stop "$(basename "$standby")" TERM 10
    rm -rf "$standby"
    say "  $(basename "$standby") removed"
  done
  if [ "${stack_throwaway:-0}" = 1 ] && [ -d "$state/postgres/data" ]; then
    if [ -f "$state/postgres/data/postmaster.pid" ]; then
      as_pg "${stack_pg_bin}/pg_ctl" --pgdata="$state/postgres/data" --mode=fast --wait \
        stop >/dev/null 2>&1 || true
    fi
    stop postgres TERM 10
    rm -rf "$state/postgres/data"
    say "  throwaway cluster removed"
  fi
  rm -rf "$state/pids" "$state/nginx/tmp"
  rm -f "$stack_env" "$state/pgbouncer/pgbouncer.ini"
  say "down (logs kept in $state)"
}

command=${1:-}
[ $# -eq 0 ] || shift
case $command in
  up) cmd_up "$@" ;;
  status) [ $# -eq 0 ] || usage; cmd_status ;;
  down) [ $# -eq 0 ] || usage; cmd_down ;;
  *) usage ;;
esac
