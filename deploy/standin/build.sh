#!/usr/bin/env bash
# Stand-ins for the base images the project's files name (Dockerfile, docker-compose.yml),
# built from Debian 12 packages with debootstrap, for a Docker engine that cannot pull from any
# registry. Each is imported under the exact name and tag the project uses, with an entrypoint
# that honours the part of the real image's contract the compose stack relies on
# (README, "Run the stack", lists the differences).
#
#   deploy/standin/build.sh            # needs root, debootstrap and a reachable Debian mirror
#
# DOCKER_HOST selects the engine. Images are cached by content: a key made of this folder's
# files, the mirror and the suite names a folder of `docker save` tarballs under
# STANDIN_CACHE (default ~/.cache/sars-standin), so a rerun on a fresh engine only loads them.
# STANDIN_MIRROR overrides the Debian mirror, otherwise read from this machine's apt sources.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm

# Image name → Debian packages on top of the minimal base.
declare -A packages=(
  [python:3.11-slim]="python3 python3-venv python-is-python3 ca-certificates"
  [postgres:15]="postgresql-15"
  [nginx:1.28-alpine]="nginx-light"
  [edoburu/pgbouncer:v1.25.2-p0]="pgbouncer postgresql-client-15"
)
# Image name → the real image's configuration, as Dockerfile instructions.
declare -A configs=(
  [python:3.11-slim]='ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
ENV LANG=C.UTF-8
CMD ["python3"]'
  [postgres:15]='ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/15/bin
ENV PGDATA=/var/lib/postgresql/data
ENV LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]'
  [nginx:1.28-alpine]='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
STOPSIGNAL SIGQUIT
EXPOSE 80
CMD ["nginx", "-g", "daemon off;"]'
  [edoburu/pgbouncer:v1.25.2-p0]='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER postgres
ENTRYPOINT ["/entrypoint.sh"]
EXPOSE 5432
CMD ["/usr/sbin/pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]'
)

# The first Debian mirror this machine's apt uses for the suite (sources.list or deb822).
apt_mirror() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    awk -v suite="$suite" '$1 == "deb" && $0 ~ " " suite "( |$)" {
      for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; exit } }' "$file"
  done
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" } {
      uri = ""; found = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^URIs:/) { split($i, words, " "); uri = words[2] }
        if ($i ~ /^Suites:/ && (" " $i " ") ~ (" " suite " ")) found = 1
      }
      if (found && uri != "") { print uri; exit }
    }' "$file"
  done
}

mirror=${STANDIN_MIRROR:-$(apt_mirror | head -n 1)}
[ -n "$mirror" ] || { echo "no Debian $suite mirror in apt's sources; set STANDIN_MIRROR" >&2; exit 1; }
key=$( (cd "$here" && cat build.sh entrypoints/*; echo "$mirror $suite") | sha256sum | cut -c1-16)
cache=${STANDIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sars-standin}/$key
mkdir -p "$cache"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

base_tarball() {
  local tarball=$cache/base.tar
  if [ ! -f "$tarball" ]; then
    echo "debootstrap $suite from $mirror" >&2
    debootstrap --variant=minbase "$suite" "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$work/base" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$work/base"
  fi
  echo "$tarball"
}

slug() { echo "$1" | tr '/:' '__'; }

build_rootfs() {
  local image=$1 root=$work/$(slug "$1")
  mkdir -p "$root"
  tar -C "$root" -xf "$(base_tarball)"
  # No service starts inside the chroot while packages install.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # shellcheck disable=SC2086
  chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c \
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${packages[$image]}" \
    >"$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log" >&2; exit 1; }
  customise "$image" "$root"
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
  echo "$root"
}

customise() {
  local image=$1 root=$2
  case "$image" in
    postgres:*)
      install -m 755 "$here/entrypoints/postgres.sh" "$root/usr/local/bin/docker-entrypoint.sh"
      # The package made a cluster of its own under /var/lib/postgresql/15: the image's is PGDATA.
      rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15"
      mkdir -p "$root/var/lib/postgresql/data" "$root/var/run/postgresql" \
        "$root/docker-entrypoint-initdb.d"
      chroot "$root" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
      chmod 2777 "$root/var/run/postgresql"
      ;;
    nginx:*)
      ln -sf /dev/stdout "$root/var/log/nginx/access.log"
      ln -sf /dev/stderr "$root/var/log/nginx/error.log"
      ;;
    */pgbouncer:*)
      install -m 755 "$here/entrypoints/pgbouncer.sh" "$root/entrypoint.sh"
      rm -f "$root/etc/pgbouncer/pgbouncer.ini" "$root/etc/pgbouncer/userlist.txt"
      mkdir -p "$root/var/run/pgbouncer" "$root/var/log/pgbouncer"
      chroot "$root" chown -R postgres:postgres /etc/pgbouncer /var/run/pgbouncer \
        /var/log/pgbouncer
      ;;
  esac
}

for image in "${!packages[@]}"; do
  tarball=$cache/$(slug "$image").tar
  if [ "$(docker image inspect --format '{{index .Config.Labels "standin.key"}}' "$image" 2>/dev/null)" = "$key" ]; then
    continue
  fi
  if [ ! -f "$tarball" ]; then
    echo "building stand-in $image" >&2
    root=$(build_rootfs "$image")
    tar -C "$root" -c . | docker import - "standin-rootfs:$key" >/dev/null
    rm -rf "$root"
    # An empty context: the build reads nothing but these lines and the imported file system.
    printf 'FROM standin-rootfs:%s\nLABEL standin.key=%s\n%s\n' "$key" "$key" "${configs[$image]}" \
      | DOCKER_BUILDKIT=0 docker build -q -t "$image" - >/dev/null 2>"$work/build.log" \
      || { cat "$work/build.log" >&2; exit 1; }
    docker rmi "standin-rootfs:$key" >/dev/null
    docker save "$image" -o "$tarball.part" && mv "$tarball.part" "$tarball"
  else
    docker load -q -i "$tarball" >/dev/null
  fi
  echo "$image"
done
# Images of earlier versions of this folder are never loaded again.
find "$(dirname "$cache")" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
