#!/usr/bin/env bash
# `make bench`: ingest throughput vs ogr2ogr on the same files in the same run, the
# in-process index figures (criterion) and resident memory of a served 1 M-point layer.
# Needs DATAHUB_TEST_DATA (the Makefile sets it) and a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
perf="${DATAHUB_TEST_DATA:?}/perf"
bin=./target/release/datahub
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

bench_ingest() { # label source features datahub-args ogr2ogr-args
  local label=$1 src=$2 n=$3 dh_args=$4 ogr_args=$5
  rm -rf "$work/data"
  $bin --data "$work/data" ministry add bench --name Bench >/dev/null 2>&1 || true
  local t_dh t_ogr
  t_dh=$(secs $bin --data "$work/data" ingest "$src" --layer bench --ministry bench --access public $dh_args)
  [ -f "$work/data/layers/bench/CURRENT" ] || { echo "datahub ingest of $src failed"; exit 1; }
  rm -f "$work/ogr.fgb"
  t_ogr=$(secs ogr2ogr -f FlatGeobuf "$work/ogr.fgb" "$src" -t_srs EPSG:4326 $ogr_args)
  printf '%-34s %9d features  datahub %6.2f s (%8.0f feat/s)  ogr2ogr %6.2f s  ratio %.2fx\n' \
    "$label" "$n" "$t_dh" "$(echo "$n / $t_dh" | bc -l)" "$t_ogr" "$(echo "$t_dh / $t_ogr" | bc -l)"
  # The data-quality diagnosis is part of every ingest; its share, from the record.
  python3 - "$work/data/layers/bench/v1/meta.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
t, d = m["duration_ms"], m["diagnosis"]["duration_ms"]
print(f"{'':34s} diagnosis {d / 1000:.2f} s of {t / 1000:.2f} s: adds {100 * d / (t - d):.0f}% to the ingest without it (grade {m['diagnosis']['grade']}, {m['diagnosis']['score']}/100)")
PY
}

echo "== ingest (datahub validates, repairs and indexes; ogr2ogr only converts)"
bench_ingest "rg_cities1000.csv (points)" "$perf/rg_cities1000.csv" 144563 "" \
  "-s_srs EPSG:4326 -oo X_POSSIBLE_NAMES=lon -oo Y_POSSIBLE_NAMES=lat -oo KEEP_GEOM_COLUMNS=NO"
bench_ingest "US counties (1 M vertices)" "$perf/cb_2016_us_county_500k.shp" 3233 "--crs EPSG:4269" "-s_srs EPSG:4269"
python3 - "$perf/rg_cities1000.csv" "$work/million.csv" <<'PY'
import csv, random, sys
random.seed(7)
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
with open(sys.argv[2], "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f); w.writerow(["lat", "lon", "name", "cc"])
    for i in range(1_000_000):
        r = rows[i % len(rows)]
        w.writerow([f"{float(r['lat']) + random.uniform(-0.01, 0.01):.6f}", f"{float(r['lon']) + random.uniform(-0.01, 0.01):.6f}", r["name"], r["cc"]])
PY
bench_ingest "1 M jittered GeoNames points" "$work/million.csv" 1000000 "" \
  "-s_srs EPSG:4326 -oo X_POSSIBLE_NAMES=lon -oo Y_POSSIBLE_NAMES=lat -oo KEEP_GEOM_COLUMNS=NO"

python3 tests/bench/mty_points.py "$work/million-mty.csv"

echo "== tables: spreadsheets, key joins, swapped coordinates (vs ogr2ogr in the same run)"
bash tests/bench/tables.sh "$work"

echo "== resident memory of the server with the 1 M-point layer loaded"
mkdir -p "$work/empty"
rss() { # data-dir -> VmRSS in MB once serving
  $bin --data "$1" serve --addr 127.0.0.1:0 > "$work/serve.out" 2>/dev/null &
  local pid=$!
  for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
  local kb; kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  echo $((kb / 1024))
}
empty=$(rss "$work/empty"); loaded=$(rss "$work/data")
echo "empty server ${empty} MB; with 1 M points ${loaded} MB (layer: $((loaded - empty)) MB incl. mmap'd file pages)"

echo "== vector tiles (viewport grid, HTTP)"
bash tests/bench/tiles.sh "$work"

echo "== OGC API - Features (HTTP, and pygeoapi in the same run)"
bash tests/bench/ogc.sh "$work"

echo "== neighbourhood analysis (HTTP, and GDAL's SQLite join in the same run)"
bash tests/bench/analysis.sh "$work"

echo "== index (criterion, in-process)"
cargo bench -q -p layers --bench index -- --noplot 2>&1 | grep -E "index_1M|time:|returns" || true
echo "== catalog search (10,000 generated records, in-process)"
cargo bench -q --bench catalog_search 2>&1 | grep -E "catalog search|p50" || true
echo "== tile encoding (criterion, in-process)"
cargo bench -q -p tiles --bench encode -- --noplot 2>&1 | grep -E "^encode|time:" || true
echo "== point tiles of a 1 M-point layer, uncached, through the service (criterion, in-process)"
cargo bench -q --bench point_tiles -- --noplot 2>&1 | grep -E "^point|time:" || true

echo "== change over time: diff, changes?since= vs a full download, tiles kept after a 1-feature change"
bash tests/bench/changes.sh "$work"

echo "== PostgreSQL backend (throwaway cluster): ingest vs ogr2ogr -f PostgreSQL, replica latency"
bash tests/bench/postgres.sh
