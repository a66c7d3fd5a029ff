#!/usr/bin/env bash
# `make test`, second pass: the black-box suites again, on the PostgreSQL backend.
# Starts a throwaway PostgreSQL 15 + PostGIS 3 cluster (a temporary folder, a free
# port, the postgres user when run as root), points DATAHUB_TEST_PG at it (each test's
# data folder gets its own database, tests/common/pg.rs), runs the suites, stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
pgbin=/usr/lib/postgresql/15/bin
work=$(mktemp -d -t datahub-pgsuites.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
cleanup() {
  [ -f "$work/pg/postmaster.pid" ] && as_pg "$pgbin/pg_ctl -D $work/pg -m immediate -w stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$pgbin/initdb -D $work/pg -A trust -U postgres -E UTF8" >/dev/null
as_pg "$pgbin/pg_ctl -D $work/pg -l $work/pg/log -w -o '-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300' start" >/dev/null
export DATAHUB_TEST_PG="postgres://postgres@127.0.0.1:$port"
echo "PostgreSQL backend suites on $DATAHUB_TEST_PG"
args=()
for suite in "$@"; do args+=(--test "$suite"); done
cargo test "${args[@]}" -- --test-threads=2
# The suites really ran on PostgreSQL: their databases are there, with versions.
made=$(psql "$DATAHUB_TEST_PG/postgres" -XAtc "SELECT count(*) FROM pg_database WHERE datname LIKE 't\_%'")
echo "PostgreSQL backend suites: $made databases used"
[ "$made" -gt 0 ] || { echo "no test database was created: the suites did not use PostgreSQL" >&2; exit 1; }
