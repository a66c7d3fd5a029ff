#!/usr/bin/env bash
# `make bench-peers`: the viewport-grid tile workload of tiles.sh against Martin on
# PostGIS — the server planners would otherwise pick — on the same 1 M points, in the
# same run, and the ratios. Installs what it needs when missing: PostgreSQL 15 + PostGIS 3
# (Debian), Martin 1.14 with its PostGIS source only (cargo install into target/peers,
# ~15 minutes the first time; its default features clone maplibre-native from GitHub;
# 1.14 is the newest that builds with this toolchain).
# PostGIS holds the points in EPSG:4326 with a GiST index (as a ministry would load them
# with ogr2ogr); Martin publishes the table as is. Both servers answer gzip.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=./target/release/datahub
work=$(mktemp -d)
pgbin=/usr/lib/postgresql/15/bin
port=54329
cleanup() {
  stop 2>/dev/null || true
  [ -f "$work/pg/postmaster.pid" ] && su postgres -c "$pgbin/pg_ctl -D $work/pg -m fast stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1 || {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-15-postgis-3 >/dev/null
}
martin=target/peers/bin/martin
[ -x "$martin" ] || { echo "building Martin 1.14 (cargo install, once)"; cargo install -q martin --version 1.14.0 --locked --no-default-features --features postgres --root target/peers; }

# A throwaway cluster owned by the postgres user (PostgreSQL refuses to run as root).
chmod 755 "$work"
mkdir -p "$work/pg" "$work/tiles"
chown postgres "$work/pg"
su postgres -c "$pgbin/initdb -D $work/pg -A trust -U postgres" >/dev/null
su postgres -c "$pgbin/pg_ctl -D $work/pg -l $work/pg/log -w -o '-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=256MB' start" >/dev/null
pg="postgresql://postgres@127.0.0.1:$port/bench"
su postgres -c "$pgbin/createdb -h 127.0.0.1 -p $port bench"
psql -q "$pg" -c "CREATE EXTENSION postgis" >/dev/null

python3 tests/bench/mty_points.py "$work/million-mty.csv"
ogr2ogr -f PostgreSQL PG:"host=127.0.0.1 port=$port user=postgres dbname=bench" "$work/million-mty.csv" \
  -oo X_POSSIBLE_NAMES=lon -oo Y_POSSIBLE_NAMES=lat -oo KEEP_GEOM_COLUMNS=NO -oo AUTODETECT_TYPE=YES \
  -a_srs EPSG:4326 -nln puntos -lco GEOMETRY_NAME=geom -lco SPATIAL_INDEX=GIST -gt 100000
psql -q "$pg" -c "VACUUM ANALYZE puntos" >/dev/null
$bin --data "$work/data" ministry add bench --name Bench >/dev/null
$bin --data "$work/data" ingest "$work/million-mty.csv" --layer puntos --ministry bench --access public >/dev/null

# shellcheck source=grid.sh
source tests/bench/grid.sh
grid "tiles/puntos" -100.30 25.70 > "$work/tiles/datahub.txt"
grid "puntos" -100.30 25.70 "" > "$work/tiles/martin.txt"

start_datahub() {
  $bin --data "$work/data" serve --addr 127.0.0.1:0 > "$work/serve.out" 2>/dev/null &
  echo $! > "$work/server.pid" # called as $(start_…): not a job of this shell
  for _ in $(seq 600); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/listening on //p' "$work/serve.out"
}
start_martin() {
  "$martin" --listen-addresses 127.0.0.1:3111 --workers 2 --cache-size 512 "$pg" > "$work/martin.out" 2>&1 &
  echo $! > "$work/server.pid"
  for _ in $(seq 600); do curl -sf http://127.0.0.1:3111/health >/dev/null 2>&1 && break; sleep 0.05; done
  echo http://127.0.0.1:3111
}
stop() {
  local p
  p=$(cat "$work/server.pid" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
  rm -f "$work/server.pid"
}

median() { sort -g -k5 "$1" | sed -n 2p; }
for who in datahub martin; do
  rm -f "$work/$who.runs"
  for run in 1 2 3; do
    base=$(start_$who)
    once "$base" "$work/tiles/$who.txt" >> "$work/$who.runs"
    stop
  done
  echo "-- $who, 1 M points: $(median "$work/$who.runs") (median of 3 fresh servers)"
  base=$(start_$who)
  once "$base" "$work/tiles/$who.txt" > /dev/null
  res=$(URL_LIST="$work/tiles/$who.txt" wrk -t2 -c8 -d8s --latency -s tests/bench/list.lua "$base" 2>&1)
  echo "$res" | awk '/Requests\/sec/ {print $2}' > "$work/$who.cached"
  echo "-- $who cached (wrk -t2 -c8 -d8s): $(cat "$work/$who.cached") req/s, p50 $(echo "$res" | awk '$1=="50%" {print $2}'), p99 $(echo "$res" | awk '$1=="99%" {print $2}')"
  stop 2>/dev/null || true
done
dh=$(median "$work/datahub.runs" | awk '{print $5}')
mt=$(median "$work/martin.runs" | awk '{print $5}')
echo "-- ratio, uncached grid time: Martin / DataHub = $(echo "$mt / $dh" | bc -l | xargs printf '%.2f')x"
echo "-- ratio, cached req/s: DataHub / Martin = $(echo "$(cat "$work/datahub.cached") / $(cat "$work/martin.cached")" | bc -l | xargs printf '%.2f')x"
