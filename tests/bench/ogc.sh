#!/usr/bin/env bash
# OGC API – Features under load: items?bbox pages of ~1,000 and ~10,000 features of a
# 1 M-point layer (random boxes, wrk -t2 -c8), the streaming GeoJSON download of the
# whole layer (MB/s, peak anonymous memory for 100 k and 1 M features), and the same
# page requests against pygeoapi (OGR provider on a GeoPackage of the same points,
# gunicorn with 2 workers) in the same run, with the ratio.
# Usage: ogc.sh WORKDIR (with WORKDIR/million-mty.csv from run.sh).
set -euo pipefail
work=${1:?}
bin=./target/release/datahub
dir="$work/ogc"
mkdir -p "$dir"
$bin --data "$dir/data" ministry add bench --name Bench >/dev/null 2>&1 || true
$bin --data "$dir/data" ingest "$work/million-mty.csv" --layer puntos --ministry bench --access public >/dev/null
head -100001 "$work/million-mty.csv" > "$dir/p100k.csv"
$bin --data "$dir/data" ingest "$dir/p100k.csv" --layer p100k --ministry bench --access public >/dev/null

# Random boxes inside the points' extent (uniform over 0.24 x 0.16 degrees): ~1,000 and
# ~10,000 points each.
boxes() { # n-features -> paths
  python3 - "$1" <<'PY'
import random, sys
n = int(sys.argv[1]); random.seed(n)
w, h = 0.24 * (n / 1e6) ** 0.5, 0.16 * (n / 1e6) ** 0.5
for _ in range(300):
    x = random.uniform(-100.42, -100.18 - w); y = random.uniform(25.62, 25.78 - h)
    print(f"/collections/puntos/items?bbox={x:.5f},{y:.5f},{x + w:.5f},{y + h:.5f}&limit={n}&f=json")
PY
}
boxes 1000 > "$dir/b1000.txt"
boxes 10000 > "$dir/b10000.txt"
load() { # base list -> "req/s p50 p99"
  local res
  res=$(ACCEPT=application/geo+json URL_LIST="$2" wrk -t2 -c8 -d10s --latency -s tests/bench/list.lua "$1" 2>&1)
  echo "$(echo "$res" | awk '/Requests\/sec/ {printf "%.0f req/s", $2}'), p50 $(echo "$res" | awk '$1=="50%" {print $2}'), p99 $(echo "$res" | awk '$1=="99%" {print $2}')$(echo "$res" | awk '/Non-2xx/ {print ", NON-2xx: " $NF}')"
}
returned() { # base path -> features in the page
  curl -s -H 'Accept: application/geo+json' "$1$2" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['features']))"
}

$bin --data "$dir/data" serve --addr 127.0.0.1:0 > "$dir/serve.out" 2>/dev/null &
dh_pid=$!
for _ in $(seq 200); do grep -q listening "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
dh=$(sed -n 's/listening on //p' "$dir/serve.out")
echo "-- datahub items?bbox, ~$(returned "$dh" "$(head -1 "$dir/b1000.txt")") features/page: $(load "$dh" "$dir/b1000.txt")"
tok=$($bin --data "$dir/data" token create --role viewer --ministry bench 2>/dev/null)
echo "-- the same with a Bearer token (authorization cost): $(AUTH="$tok" load "$dh" "$dir/b1000.txt")"
echo "-- datahub items?bbox, ~$(returned "$dh" "$(head -1 "$dir/b10000.txt")") features/page: $(load "$dh" "$dir/b10000.txt")"
dh1000=$(load "$dh" "$dir/b1000.txt" | awk '{print $1}')

# Streaming download: throughput and the peak of anonymous (heap) memory while it runs.
download() { # layer -> line
  local peak=0 base_anon t0 t1 bytes
  base_anon=$(awk '/RssAnon/ {print $2}' /proc/$dh_pid/status)
  ( while kill -0 $dh_pid 2>/dev/null; do awk '/RssAnon/ {print $2}' /proc/$dh_pid/status; sleep 0.02; done ) > "$dir/anon.txt" &
  local sampler=$!
  t0=$(date +%s.%N)
  bytes=$(curl -s -o /dev/null -w '%{size_download}' "$dh/collections/$1/items?f=geojson")
  t1=$(date +%s.%N)
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  peak=$(sort -n "$dir/anon.txt" | tail -1)
  echo "$1: $((bytes / 1000000)) MB in $(echo "$t1 - $t0" | bc -l | xargs printf '%.2f') s ($(echo "$bytes / 1000000 / ($t1 - $t0)" | bc -l | xargs printf '%.0f') MB/s), heap before $((base_anon / 1024)) MB, peak during $((peak / 1024)) MB"
}
echo "-- full GeoJSON download, $(download p100k)"
echo "-- full GeoJSON download, $(download puntos)"
kill $dh_pid; wait $dh_pid 2>/dev/null || true

# pygeoapi, as deployed: gunicorn, 2 workers, OGR provider over an indexed GeoPackage.
pyg="$dir/pygeoapi"
if ! { /usr/bin/python3 -m venv --system-site-packages "$pyg/venv" \
      && "$pyg/venv/bin/pip" install -q --disable-pip-version-check pygeoapi==0.21.0 gunicorn \
      && "$pyg/venv/bin/python" -c "from osgeo import ogr"; } >"$pyg.log" 2>&1; then
  echo "-- pygeoapi: could not be installed ($(tail -1 "$pyg.log")); no ratio"
  exit 0
fi
ogr2ogr -f GPKG "$pyg/puntos.gpkg" "$work/million-mty.csv" -nln puntos -a_srs EPSG:4326 \
  -oo X_POSSIBLE_NAMES=lon -oo Y_POSSIBLE_NAMES=lat -oo KEEP_GEOM_COLUMNS=NO
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
cat > "$pyg/config.yml" <<YML
server:
  bind: {host: 127.0.0.1, port: $port}
  url: http://127.0.0.1:$port
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  language: en-US
  limits: {default_items: 100, max_items: 10000}
  map: {url: 'https://tile.openstreetmap.org/{z}/{x}/{y}.png', attribution: OSM}
logging: {level: ERROR}
metadata:
  identification: {title: bench, description: bench, keywords: [bench], keywords_type: theme, terms_of_service: 'https://example.org', url: 'https://example.org'}
  license: {name: CC-BY, url: 'https://creativecommons.org/licenses/by/4.0/'}
  provider: {name: bench, url: 'https://example.org'}
  contact: {name: bench, position: bench, address: bench, city: bench, stateorprovince: bench, postalcode: '0', country: MX, phone: '0', fax: '0', email: bench@example.org, url: 'https://example.org', hours: '0', instructions: bench, role: pointOfContact}
resources:
  puntos:
    type: collection
    title: puntos
    description: 1 M points
    keywords: [bench]
    extents: {spatial: {bbox: [-100.42, 25.62, -100.18, 25.78], crs: 'http://www.opengis.net/def/crs/OGC/1.3/CRS84'}}
    providers:
      - type: feature
        name: OGR
        data: {source_type: GPKG, source: $pyg/puntos.gpkg, source_srs: EPSG:4326, target_srs: EPSG:4326, source_capabilities: {paging: true}}
        id_field: fid
        layer: puntos
YML
export PYGEOAPI_CONFIG="$pyg/config.yml" PYGEOAPI_OPENAPI="$pyg/openapi.yml"
"$pyg/venv/bin/pygeoapi" openapi generate "$PYGEOAPI_CONFIG" --output-file "$PYGEOAPI_OPENAPI" >"$pyg/openapi.log" 2>&1 \
  || { echo "-- pygeoapi: openapi generation failed: $(tail -1 "$pyg/openapi.log")"; exit 0; }
"$pyg/venv/bin/gunicorn" -w 2 -b "127.0.0.1:$port" pygeoapi.flask_app:APP >"$pyg/gunicorn.log" 2>&1 &
gpid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.2; done
pg="http://127.0.0.1:$port"
echo "-- pygeoapi items?bbox, ~$(returned "$pg" "$(head -1 "$dir/b1000.txt")") features/page: $(load "$pg" "$dir/b1000.txt")"
pg1000=$(load "$pg" "$dir/b1000.txt" | awk '{print $1}')
echo "-- pygeoapi items?bbox, ~$(returned "$pg" "$(head -1 "$dir/b10000.txt")") features/page: $(load "$pg" "$dir/b10000.txt")"
echo "-- ratio, ~1,000-feature pages: datahub $dh1000 req/s / pygeoapi $pg1000 req/s = $(echo "$dh1000 / $pg1000" | bc -l | xargs printf '%.1f')x"
kill $gpid; wait $gpid 2>/dev/null || true
