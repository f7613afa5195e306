#!/usr/bin/env bash
# Install, migrate and serve the API (default: the embedded SQLite database, port 8000).
# The install includes what examples/client.py needs, so the README's client runs next.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh examples
. .venv/bin/activate
host=${HOST:-127.0.0.1}
port=${PORT:-8000}
if ! python -c "import socket, sys; socket.create_server((sys.argv[1], int(sys.argv[2]))).close()" \
    "$host" "$port" 2>/dev/null; then
  echo "port $port on $host is in use (another server?); choose another: PORT=8001 $0" >&2
  exit 1
fi
alembic upgrade head
echo "SARS records API listening on http://$host:$port (try http://$host:$port/docs)"
exec hypercorn --config hypercorn.toml --bind "$host:$port" service.serve:app
