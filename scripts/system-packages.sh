#!/usr/bin/env bash
# Debian packages some tests drive for real: nginx and PgBouncer (the native stack), a Docker
# engine, docker-compose and debootstrap (the compose stack, tests/test_compose.py) and
# Chromium (the /docs page).
# Installs the missing ones when run as root with apt, quietly: apt's output goes to a log that
# is shown only if the install fails. Otherwise names them, and the tests that need them skip,
# saying why.
set -euo pipefail

declare -A packages=(
  [nginx]=nginx-light
  [pgbouncer]=pgbouncer
  [dockerd]=docker.io
  [docker-compose]=docker-compose
  [debootstrap]=debootstrap
  [chromium]=chromium
  [chromedriver]=chromium-driver
)
missing=()
for command in "${!packages[@]}"; do
  command -v "$command" >/dev/null || missing+=("${packages[$command]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}" >&2
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! {
    apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
  } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing ${missing[*]} failed (apt's output above)" >&2
    exit 1
  fi
else
  echo "missing Debian packages (their tests will skip): ${missing[*]}" >&2
fi
