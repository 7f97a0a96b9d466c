#!/usr/bin/env bash
# A throw-away PostgreSQL cluster on 127.0.0.1 for the storage tests.
#   eval "$(scripts/pg_cluster.sh start)"   # exports SURVEY_TEST_PG_URL and PG_CLUSTER_DIR
#   scripts/pg_cluster.sh stop "$PG_CLUSTER_DIR"
# Uses Debian's postgresql package (apt-get install postgresql). Runs the server as the
# `postgres` user when started as root (PostgreSQL refuses to run as root).
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] && command -v initdb >/dev/null 2>&1; then bindir=$(dirname "$(command -v initdb)"); fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    [ -n "$bindir" ] || { echo "echo 'pg_cluster: PostgreSQL is not installed' >&2"; exit 0; }
    dir=$(mktemp -d /tmp/srgan-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bindir/initdb" -D "$dir/data" -U survey --auth=trust >/dev/null
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-h 127.0.0.1 -p $port -k $dir -F -c fsync=off -c max_connections=200" start >/dev/null
    as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U survey survey_test
    echo "export SURVEY_TEST_PG_URL=postgresql+psycopg://survey@127.0.0.1:$port/survey_test"
    echo "export PG_CLUSTER_DIR=$dir"
    ;;
  stop)
    dir=${2:-${PG_CLUSTER_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir/data" ] || exit 0
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
