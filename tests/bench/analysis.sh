#!/usr/bin/env bash
# Neighbourhood analysis over HTTP: aggregate 1 M generated points (WORKDIR/million-mty.csv
# from run.sh) by 1,000 generated zone polygons (count, sum), the same for 50k points by
# 51 "municipios" against GDAL's SQLite-dialect join (SpatiaLite ST_Intersects ... GROUP
# BY) in the same run, nearest k=5 on the 1 M points and a cached aggregate under wrk.
# Uncached figures: each stat set is a new cache key, so each request computes.
# Usage: analysis.sh WORKDIR — called by run.sh.
set -euo pipefail
work=${1:?}
bin=./target/release/datahub
dir="$work/analysis"
data="$dir/data"
mkdir -p "$dir"

python3 - "$dir" "$work/million-mty.csv" <<'PY'
import json, random, sys
out, million = sys.argv[1], sys.argv[2]
x0, y0, x1, y1 = -100.42, 25.62, -100.18, 25.78
def grid(cols, rows, seed, per_side):
    # Jittered nodes shared by neighbours (a partition, as colonias are), each side
    # subdivided so polygons have realistic vertex counts.
    rnd = random.Random(seed)
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    node = [[(x0 + c * dx + (0 if c in (0, cols) else rnd.uniform(-0.3, 0.3) * dx),
              y0 + r * dy + (0 if r in (0, rows) else rnd.uniform(-0.3, 0.3) * dy))
             for c in range(cols + 1)] for r in range(rows + 1)]
    def side(a, b):
        return [(a[0] + (b[0] - a[0]) * k / per_side, a[1] + (b[1] - a[1]) * k / per_side) for k in range(per_side)]
    feats = []
    for r in range(rows):
        for c in range(cols):
            a, b, cc, d = node[r][c], node[r][c + 1], node[r + 1][c + 1], node[r + 1][c]
            ring = side(a, b) + side(b, cc) + side(cc, d) + side(d, a) + [a]
            feats.append({"type": "Feature", "properties": {"nombre": f"Zona {r * cols + c + 1}", "clave": r * cols + c + 1},
                          "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}})
    return {"type": "FeatureCollection", "features": feats}
json.dump(grid(40, 25, 1, 8), open(f"{out}/zonas.geojson", "w"))
json.dump(grid(17, 3, 2, 30), open(f"{out}/municipios.geojson", "w"))
with open(million) as src, open(f"{out}/p50k.csv", "w") as dst:
    for i, line in enumerate(src):
        if i > 50_000:
            break
        dst.write(line)
rnd = random.Random(5)
with open(f"{out}/nearest.txt", "w") as f:
    for _ in range(2000):
        f.write(f"/api/analysis/nearest?layer=puntos&lon={rnd.uniform(x0, x1):.6f}&lat={rnd.uniform(y0, y1):.6f}&k=5\n")
PY

$bin --data "$data" ministry add bench --name Bench >/dev/null 2>&1 || true
$bin --data "$data" ingest "$work/million-mty.csv" --layer puntos --ministry bench --access public >/dev/null
for l in zonas municipios; do
  $bin --data "$data" ingest "$dir/$l.geojson" --layer $l --ministry bench --access public >/dev/null
done
$bin --data "$data" ingest "$dir/p50k.csv" --layer p50k --ministry bench --access public >/dev/null

$bin --data "$data" serve --addr 127.0.0.1:0 > "$dir/serve.out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q listening "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
base=$(sed -n 's/listening on //p' "$dir/serve.out")

t() { # path -> seconds for one request (fails on non-200)
  curl -s -o "$dir/last.json" -w '%{http_code} %{time_total}\n' "$base$1" | awk '$1 != 200 {print "HTTP " $1 > "/dev/stderr"; exit 1} {print $2}'
}
median() { sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR + 1) / 2)]}'; }
minimum() { sort -g | head -1 | xargs printf '%.3f'; }

# The zone layers are prepared (decoded, indexed, measured) on first use; that first
# request is reported apart.
first=$(t "/api/analysis/aggregate?zones=zonas&layer=puntos&stat=min:valor" | xargs printf '%.3f')
count=$(for s in count density count,density; do t "/api/analysis/aggregate?zones=zonas&layer=puntos&stat=$s"; done | median)
sum=$(for s in sum:valor mean:valor max:valor; do t "/api/analysis/aggregate?zones=zonas&layer=puntos&stat=$s"; done | median)
total=$(python3 -c "import json; print(sum(r['max:valor'] is not None for r in json.load(open('$dir/last.json'))['rows']))")
echo "-- 1 M points x 1,000 zones: count ${count} s, sum ${sum} s (median of 3 uncached; first request incl. preparing the zones ${first} s; ${total} zones with points)"

t "/api/analysis/aggregate?zones=municipios&layer=p50k&stat=min:valor" >/dev/null
ours=$(for s in count density count,density; do t "/api/analysis/aggregate?zones=municipios&layer=p50k&stat=$s"; done | minimum)
fm=$(cat "$data/layers/municipios/CURRENT")
fp=$(cat "$data/layers/p50k/CURRENT")
mf="$data/layers/municipios/v$fm/layer.fgb"
pf="$data/layers/p50k/v$fp/layer.fgb"
sql="SELECT m.clave, COUNT(*) AS n FROM municipios m JOIN \"$pf\".\"p50k\" p ON ST_Intersects(m.GEOMETRY, p.GEOMETRY) GROUP BY m.clave"
peer=$(for _ in 1 2 3; do
  t0=$(date +%s.%N); ogrinfo -ro -q -dialect SQLite -sql "$sql" "$mf" > "$dir/peer.txt"; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
done | minimum)
n_peer=$(grep -c ' n (Integer) = ' "$dir/peer.txt")
echo "-- 50k points x 51 municipios: datahub ${ours} s, GDAL SQLite join ${peer} s (${n_peer} municipios) -> $(echo "$peer / $ours" | bc -l | xargs printf '%.0f')x (best of 3 each)"

res=$(URL_LIST="$dir/nearest.txt" wrk -t2 -c8 -d8s --latency -s tests/bench/list.lua "$base" 2>&1)
echo "-- nearest k=5 on 1 M points (wrk -t2 -c8 -d8s, 2,000 random places): $(echo "$res" | awk '/Requests\/sec/ {printf "%.0f req/s", $2}'), p50 $(echo "$res" | awk '$1=="50%" {print $2}'), p99 $(echo "$res" | awk '$1=="99%" {print $2}')"
echo "/api/analysis/aggregate?zones=zonas&layer=puntos&stat=count" > "$dir/cached.txt"
res=$(URL_LIST="$dir/cached.txt" wrk -t2 -c8 -d8s --latency -s tests/bench/list.lua "$base" 2>&1)
echo "-- cached aggregate (1,000 zones, JSON, wrk -t2 -c8 -d8s): $(echo "$res" | awk '/Requests\/sec/ {printf "%.0f req/s", $2}'), p50 $(echo "$res" | awk '$1=="50%" {print $2}'), p99 $(echo "$res" | awk '$1=="99%" {print $2}')"
