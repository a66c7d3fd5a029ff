#!/usr/bin/env bash
# Tile serving under a viewport-grid workload: every tile a 1280x800 map needs at
# z8/10/12/14/16 while panning over a city, on (a) 1 M generated points around Monterrey,
# (b) 300 k of them (the size of the layer the Martin + PostGIS figures in the issue
# were measured on) and (c) the 3,233 US counties (over Dallas). Uncached: each tile
# once from a freshly started server (3 runs, median), 8 concurrent keep-alive
# transfers (curl --parallel), total time, req/s, p50/p99. Cached: wrk.
# Usage: tiles.sh WORKDIR (with WORKDIR/million.csv from run.sh) — called by run.sh.
set -euo pipefail
work=${1:?}
perf="${DATAHUB_TEST_DATA:?}/perf"
bin=./target/release/datahub

mkdir -p "$work/tiles"
$bin --data "$work/tiles/data" ministry add bench --name Bench >/dev/null 2>&1 || true
$bin --data "$work/tiles/data" ingest "$work/million-mty.csv" --layer puntos --ministry bench --access public >/dev/null
head -n 300001 "$work/million-mty.csv" > "$work/tiles/300k-mty.csv"
$bin --data "$work/tiles/data" ingest "$work/tiles/300k-mty.csv" --layer puntos300k --ministry bench --access public >/dev/null
$bin --data "$work/tiles/data" ingest "$perf/cb_2016_us_county_500k.shp" --layer condados --ministry bench --access public --crs EPSG:4269 >/dev/null

# grid (the viewport-grid paths) and once (each path once, uncached figures).
source tests/bench/grid.sh

serve() { # -> base URL; the startup time (layers loaded, indexes built) in $work/tiles/startup
  local t0 t1
  t0=$(date +%s.%N)
  $bin --data "$work/tiles/data" serve --addr 127.0.0.1:0 > "$work/tiles/serve.out" 2>/dev/null &
  # Called as $(serve): the server is not a job of the calling shell, so its pid is kept.
  echo $! > "$work/tiles/server.pid"
  for _ in $(seq 600); do grep -q listening "$work/tiles/serve.out" 2>/dev/null && break; sleep 0.05; done
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l > "$work/tiles/startup"
  sed -n 's/listening on //p' "$work/tiles/serve.out"
}

stop() { # the server serve() started, and wait until it is gone
  local p
  p=$(cat "$work/tiles/server.pid" 2>/dev/null) || return 0
  kill "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
}
trap stop EXIT


for spec in "puntos -100.30 25.70" "puntos300k -100.30 25.70" "condados -96.80 32.78"; do
  set -- $spec
  grid "tiles/$1" "$2" "$3" > "$work/tiles/$1.txt"
  # Uncached: a fresh server per run (nothing rendered yet), the median of three.
  rm -f "$work/tiles/$1.runs"
  for run in 1 2 3; do
    base=$(serve)
    once "$base" "$work/tiles/$1.txt" >> "$work/tiles/$1.runs"
    stop
  done
  echo "-- $1: $(sort -g -k5 "$work/tiles/$1.runs" | sed -n 2p) (median of 3 fresh servers; runs: $(awk '{printf "%s ", $5}' "$work/tiles/$1.runs")s)"
  base=$(serve)
  echo "   server start with the layers loaded and their indexes built: $(awk '{printf "%.2f s", $1}' "$work/tiles/startup")"
  once "$base" "$work/tiles/$1.txt" > /dev/null
  res=$(URL_LIST="$work/tiles/$1.txt" wrk -t2 -c8 -d8s --latency -s tests/bench/list.lua "$base" 2>&1)
  echo "-- $1 cached (wrk -t2 -c8 -d8s): $(echo "$res" | awk '/Requests\/sec/ {print $2 " req/s"}'), p50 $(echo "$res" | awk '$1=="50%" {print $2}'), p99 $(echo "$res" | awk '$1=="99%" {print $2}'), $(echo "$res" | awk '/Transfer\/sec/ {print $2}')/s"
  # The same cached workload with a ministry token: the cost of authorization.
  tok=$($bin --data "$work/tiles/data" token create --role viewer --ministry bench 2>/dev/null)
  res=$(AUTH="$tok" URL_LIST="$work/tiles/$1.txt" wrk -t2 -c8 -d8s --latency -s tests/bench/list.lua "$base" 2>&1)
  echo "-- $1 cached with a Bearer token: $(echo "$res" | awk '/Requests\/sec/ {print $2 " req/s"}'), p50 $(echo "$res" | awk '$1=="50%" {print $2}'), p99 $(echo "$res" | awk '$1=="99%" {print $2}')"
  if [ "$1" = puntos ]; then
    for z in 0 2 4 6; do
      read -r x y < <(python3 -c "import math;z=$z;n=2**z;r=math.radians(25.7);print(int((-100.3+180)/360*n), int((1-math.asinh(math.tan(r))/math.pi)/2*n))")
      curl -s -H 'Accept-Encoding: gzip' -o "$work/tiles/z.mvt" -D "$work/tiles/h.txt" -w "%{time_total}" "$base/tiles/puntos/$z/$x/$y.mvt" > "$work/tiles/t.txt"
      raw=$(curl -s "$base/tiles/puntos/$z/$x/$y.mvt" | wc -c)
      echo "   z$z tile of 1 M points: $(awk '{printf "%.1f ms", $1*1000}' "$work/tiles/t.txt"), $raw bytes ($(stat -c %s "$work/tiles/z.mvt") gzipped; cap 500000), dropped $(awk 'tolower($1)=="x-tile-dropped-features:" {d=$2+0} END {print d+0}' "$work/tiles/h.txt")"
    done
  fi
  stop
done
