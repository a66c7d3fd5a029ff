#!/usr/bin/env bash
# Tables (issue #15), part of `make bench`: a 100k-row XLSX to a layer against ogr2ogr
# of the same sheet, a 50k-row table joined to 1,000 zones, and 1 M rows with swapped
# lon/lat against the same rows unswapped. Usage: tables.sh WORKDIR (release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?work dir}
perf="${DATAHUB_TEST_DATA:?}/perf"
bin=./target/release/datahub

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
fresh() { rm -rf "$work/tdata"; $bin --data "$work/tdata" ministry add bench --name Bench >/dev/null 2>&1; }
ingest() { $bin --data "$work/tdata" ingest "$@" --ministry bench; }
took() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["duration_ms"], m["diagnosis"]["duration_ms"], m["feature_count"])' "$1"; }

# 100k rows of GeoNames places written as XLSX by GDAL (an independent writer).
rm -f "$work/places.xlsx"
ogr2ogr -f XLSX "$work/places.xlsx" "$perf/rg_cities1000.csv" -oo AUTODETECT_TYPE=YES -nln lugares -limit 100000
fresh
t_dh=$(secs ingest "$work/places.xlsx" --layer lugares)
[ -f "$work/tdata/layers/lugares/CURRENT" ] || { echo "datahub ingest of places.xlsx failed"; exit 1; }
rm -f "$work/places.fgb"
t_ogr=$(secs ogr2ogr -f FlatGeobuf "$work/places.fgb" "$work/places.xlsx" -dialect SQLite \
  -sql "SELECT MakePoint(CAST(lon AS REAL), CAST(lat AS REAL), 4326) AS geom, * FROM lugares")
[ -f "$work/places.fgb" ] || { echo "ogr2ogr of places.xlsx failed"; exit 1; }
printf '%-34s %9d rows      datahub %6.2f s  ogr2ogr -f FlatGeobuf %6.2f s  ratio %.2fx (validation and diagnosis included)\n' \
  "100k-row XLSX -> layer" 100000 "$t_dh" "$t_ogr" "$(echo "$t_dh / $t_ogr" | bc -l)"

# 1,000 zones with INEGI-like keys, and 50,000 rows keyed by CVE_ENT + CVE_MUN as numbers.
python3 - "$work/zonas.geojson" "$work/tabla.csv" <<'PY'
import json, random, sys
random.seed(3)
feats = []
for i in range(1000):
    x, y = -101.0 + (i % 40) * 0.05, 25.0 + (i // 40) * 0.05
    ring = [[x, y], [x + 0.05, y], [x + 0.05, y + 0.05], [x, y + 0.05], [x, y]]
    feats.append({"type": "Feature", "properties": {"CVEGEO": f"19{i + 1:03d}", "NOMGEO": f"Zona {i + 1}"},
                  "geometry": {"type": "Polygon", "coordinates": [ring]}})
json.dump({"type": "FeatureCollection", "features": feats}, open(sys.argv[1], "w"))
with open(sys.argv[2], "w") as f:
    f.write("CVE_ENT,CVE_MUN,poblacion,viviendas\n")
    for r in range(50000):
        f.write(f"19,{random.randint(1, 1000)},{random.randint(100, 100000)},{random.randint(10, 30000)}\n")
PY
fresh
ingest "$work/zonas.geojson" --layer zonas >/dev/null
t_join=$(secs ingest "$work/tabla.csv" --layer tabla --join zonas:CVEGEO --key CVE_ENT+CVE_MUN)
read -r ms dms n < <(took "$work/tdata/layers/tabla/v1/meta.json")
printf '%-34s %9d rows      ingest %6.2f s wall (%d ms recorded, of which diagnosis %d ms); %d features\n' \
  "50k-row table joined to 1,000 zones" 50000 "$t_join" "$ms" "$dms" "$n"

# 1 M rows, then the same rows with the lon and lat column names swapped.
python3 - "$perf/rg_cities1000.csv" "$work/derecho.csv" "$work/invertido.csv" <<'PY'
import csv, random, sys
random.seed(7)
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
out = [open(p, "w", encoding="utf-8", newline="") for p in sys.argv[2:]]
out[0].write("lon,lat,name\n"); out[1].write("lat,lon,name\n")
for i in range(1_000_000):
    r = rows[i % len(rows)]
    line = f"{float(r['lon']) + random.uniform(-0.01, 0.01):.6f},{float(r['lat']) + random.uniform(-0.01, 0.01):.6f},{r['name'].replace(',', ' ')}\n"
    out[0].write(line); out[1].write(line)
PY
fresh
t_ok=$(secs ingest "$work/derecho.csv" --layer derecho)
t_sw=$(secs ingest "$work/invertido.csv" --layer invertido --skip-invalid)
printf '%-34s %9d rows      unswapped %6.2f s  swapped %6.2f s  ratio %.2fx (swapped rows are diagnosed and rejected)\n' \
  "1 M rows, lon/lat swapped" 1000000 "$t_ok" "$t_sw" "$(echo "$t_sw / $t_ok" | bc -l)"
