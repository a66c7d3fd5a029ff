#!/usr/bin/env bash
# `make bench-postgres` (also run by `make bench`): the PostgreSQL backend.
#  1. ingest of 1 M points into the PostgreSQL backend (validation, diagnosis, the
#     FlatGeobuf the replicas serve, COPY into PostGIS, GiST index) against
#     `ogr2ogr -f PostgreSQL` of the same file (COPY + GiST only), same cluster, same run;
#  2. publish-to-visible latency across two replicas: 20 publishes through replica A,
#     the time until replica B serves each (p50, p99, max).
# A throwaway PostgreSQL 15 + PostGIS 3 cluster (temporary folder, free port), stopped
# at the end. Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=./target/release/datahub
work=$(mktemp -d -t datahub-pgbench.XXXXXX)
pids=()
# shellcheck source=../pg-cluster.sh
source tests/pg-cluster.sh
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pg_cluster_stop "$work"
  rm -rf "$work"
}
trap cleanup EXIT
pg_cluster_start "$work" -c shared_buffers=256MB -c max_wal_size=4GB
base=$PG_URL
port=${base##*:}
for db in hub ogr lat; do psql -q "$base/postgres" -c "CREATE DATABASE $db" >/dev/null; done
psql -q "$base/ogr" -c "CREATE EXTENSION postgis" >/dev/null

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

python3 tests/bench/mty_points.py "$work/million.csv"
echo "== ingest of 1 M points into PostgreSQL/PostGIS (same file, same cluster)"
$bin --data "$work/a" --database "$base/hub" ministry add bench --name Bench >/dev/null 2>&1
for run in 1 2; do
  t_dh=$(secs $bin --data "$work/a" --database "$base/hub" ingest "$work/million.csv" --layer puntos --ministry bench --access public)
  t_ogr=$(secs ogr2ogr -f PostgreSQL PG:"host=127.0.0.1 port=$port user=postgres dbname=ogr" "$work/million.csv" \
    -oo X_POSSIBLE_NAMES=lon -oo Y_POSSIBLE_NAMES=lat -oo KEEP_GEOM_COLUMNS=NO -oo AUTODETECT_TYPE=YES \
    -a_srs EPSG:4326 -nln "puntos_$run" -lco GEOMETRY_NAME=geom -lco SPATIAL_INDEX=GIST -gt 100000)
  rows=$(psql -XAt "$base/hub" -c "SELECT count(*) FROM datahub_data.\"puntos_v$run\"")
  printf 'run %d: datahub %6.2f s (%s rows, validated, diagnosed, FlatGeobuf + PostGIS)  ogr2ogr %6.2f s  ratio %.2fx\n' \
    "$run" "$t_dh" "$rows" "$t_ogr" "$(echo "$t_dh / $t_ogr" | bc -l)"
done
python3 - "$work/a/layers/puntos/v2/meta.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"  of which ingest + diagnosis (the same as on the file backend): {m['duration_ms'] / 1000:.2f} s")
PY

echo "== publish → visible on the other replica (20 publishes through A, polled on B)"
$bin --data "$work/la" --database "$base/lat" ministry add bench --name Bench >/dev/null 2>&1
tok=$($bin --data "$work/la" --database "$base/lat" token create --ministry bench --role editor 2>/dev/null)
serve() { # data-dir -> base URL
  $bin --data "$1" --database "$base/lat" serve --addr 127.0.0.1:0 > "$1.out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 200); do grep -q listening "$1.out" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/listening on //p' "$1.out"
}
A=$(serve "$work/ra"); B=$(serve "$work/rb")
python3 - "$A" "$B" "$tok" "$work" <<'PY'
import json, subprocess, sys, time, urllib.request
A, B, tok, work = sys.argv[1:5]
def req(url, method="GET", data=None, headers=None):
    r = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    with urllib.request.urlopen(r) as resp:
        return resp.status, resp.headers, resp.read()
def matched(base):
    try:
        return json.loads(req(f"{base}/collections/obras/items?limit=1")[2])["numberMatched"]
    except Exception:
        return None
lags = []
for i in range(1, 21):
    n = 1000 * i
    path = f"{work}/obras.csv"
    with open(path, "w") as f:
        f.write("id,lon,lat\n")
        for k in range(n):
            f.write(f"{k},{-100.4 + (k % 1000) * 0.0002:.5f},{25.6 + (k // 1000) * 0.0002:.5f}\n")
    meta = json.dumps({"id": "obras", "access": "public"}) if i == 1 else None
    cmd = ["curl", "-sf", "-o", "/dev/null", "-D", "-", "-H", f"Authorization: Bearer {tok}", "-F", f"file=@{path}"]
    if meta:
        cmd += ["-F", f"metadata={meta};type=application/json", f"{A}/api/layers"]
    else:
        cmd += ["-X", "PUT", f"{A}/api/layers/obras/data"]
    head = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    loc = [l.split(":", 1)[1].strip() for l in head.splitlines() if l.lower().startswith("location:")][0]
    while True:
        doc = json.loads(req(f"{A}{loc}", headers={"Authorization": f"Bearer {tok}"})[2])
        if doc["state"] in ("succeeded", "failed"):
            break
        time.sleep(0.002)
    assert doc["state"] == "succeeded", doc
    t0 = time.monotonic()
    while matched(B) != n:
        time.sleep(0.001)
    lags.append(time.monotonic() - t0)
lags.sort()
p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
print(f"20 publishes: published on A -> served by B  p50 {p(0.5) * 1000:.1f} ms, p99 {p(0.99) * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms (target < 2 s)")
PY
