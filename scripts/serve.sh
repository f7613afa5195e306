#!/usr/bin/env bash
# Install, migrate and serve the API (default: the embedded SQLite database, port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
. .venv/bin/activate
alembic upgrade head
host=${HOST:-127.0.0.1}
port=${PORT:-8000}
echo "SARS records API listening on http://$host:$port (try http://$host:$port/docs)"
exec hypercorn --config hypercorn.toml --bind "$host:$port" service.app:app
