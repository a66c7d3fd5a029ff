#!/usr/bin/env bash
# `make test`, second pass: the black-box suites again, on the PostgreSQL backend.
# Starts a throwaway PostgreSQL 15 + PostGIS 3 cluster (a temporary folder, a free
# port, the postgres user when run as root), points DATAHUB_TEST_PG at it (each test's
# data folder gets its own database, tests/common/pg.rs), runs the suites, stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=pg-cluster.sh
source tests/pg-cluster.sh
work=$(mktemp -d -t datahub-pgsuites.XXXXXX)
trap 'pg_cluster_stop "$work"; rm -rf "$work"' EXIT
pg_cluster_start "$work" -c fsync=off -c max_connections=300
export DATAHUB_TEST_PG="$PG_URL"
echo "PostgreSQL backend suites on $DATAHUB_TEST_PG"
args=()
for suite in "$@"; do args+=(--test "$suite"); done
cargo test "${args[@]}" -- --test-threads=2
# The suites really ran on PostgreSQL: their databases are there, with versions.
made=$(psql "$DATAHUB_TEST_PG/postgres" -XAtc "SELECT count(*) FROM pg_database WHERE datname LIKE 't\_%'")
echo "PostgreSQL backend suites: $made databases used"
[ "$made" -gt 0 ] || { echo "no test database was created: the suites did not use PostgreSQL" >&2; exit 1; }
