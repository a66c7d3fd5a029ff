#!/usr/bin/env bash
# Change over time on a 1 M-point layer (issue 18), with a release build:
#  - diff of two versions with 1 % of the features changed (CLI, then HTTP: computed
#    once, then served from the diff cache);
#  - changes?since= of that 1 % vs a full download of the layer: time and bytes;
#  - a 1-feature change: share of the cached viewport-grid tiles still served from the
#    cache, and every tile compared with a fresh render by a second server.
# Usage: changes.sh [WORK] (a temporary folder by default).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=./target/release/datahub
work=${1:-$(mktemp -d)}
mkdir -p "$work/changes" "$work/tiles"
w="$work/changes"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
# shellcheck source=grid.sh
source tests/bench/grid.sh

python3 - "$w" <<'PY'
import random, sys
w = sys.argv[1]
random.seed(18)
n = 1_000_000
pts = [(i + 1, random.uniform(-100.42, -100.18), random.uniform(25.62, 25.78), f"c{i % 7}", i % 1000) for i in range(n)]
def write(path, rows):
    with open(path, "w") as f:
        f.write("id,lon,lat,categoria,valor\n")
        for r in rows:
            f.write(f"{r[0]},{r[1]:.6f},{r[2]:.6f},{r[3]},{r[4]}\n")
write(f"{w}/v1.csv", pts)
# 1 % changed: 0.4 % moved, 0.4 % re-described, 0.1 % removed, 0.1 % added.
v2 = []
for p in pts:
    i = p[0]
    if i % 1000 == 7:
        continue
    if i % 250 == 3:
        p = (p[0], p[1] + 0.0003, p[2], p[3], p[4])
    elif i % 250 == 5:
        p = (p[0], p[1], p[2], "revisado", p[4])
    v2.append(p)
v2 += [(n + k + 1, random.uniform(-100.42, -100.18), random.uniform(25.62, 25.78), "nuevo", 0) for k in range(1000)]
write(f"{w}/v2.csv", v2)
# One feature moved.
v3 = [(p[0], p[1] + 0.0002, p[2], p[3], p[4]) if p[0] == 424242 else p for p in v2]
write(f"{w}/v3.csv", v3)
PY

data="$w/data"
rm -rf "$data"
$bin --data "$data" ministry add bench --name Bench >/dev/null 2>&1 || true
for v in v1 v2; do
  $bin --data "$data" ingest "$w/$v.csv" --layer cambios --ministry bench --access public --id-field id >/dev/null 2>&1
done
echo "diff of two 1 M-point versions, 1 % changed (CLI, 3 runs):"
for _ in 1 2 3; do
  t0=$(date +%s.%N)
  out=$($bin --data "$data" diff cambios 1 2 2>/dev/null)
  t1=$(date +%s.%N)
  printf '  %s; %s (process %.2f s)\n' "$(echo "$out" | sed -n 1p | sed -E 's/.*, (compared in .*)/\1/')" \
    "$(echo "$out" | sed -n 3p | sed -E 's/^ +//')" "$(echo "$t1 - $t0" | bc -l)"
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$bin --data "$data" serve --addr "127.0.0.1:$port" > "$w/serve.out" 2> "$w/serve.log" &
pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 300); do curl -sf "$base/collections/cambios" >/dev/null && break; sleep 0.2; done
echo "diff over HTTP (summary): $(curl -s -o /dev/null -w 'first %{time_total} s' "$base/collections/cambios/changes?from=1&to=2"), $(curl -s -o /dev/null -w 'cached %{time_total} s' "$base/collections/cambios/changes?from=1&to=2")"

# Incremental sync: every page of the changes since v1 vs the whole layer.
python3 - "$base" <<'PY'
import json, sys, time, urllib.request
base = sys.argv[1]
t0 = time.time(); nbytes = 0; n = 0
url = f"{base}/collections/cambios/changes?since=1&f=geojson&limit=10000"
while url:
    body = urllib.request.urlopen(url).read()
    nbytes += len(body)
    d = json.loads(body)
    n += len(d["features"])
    url = next((l["href"] for l in d["links"] if l["rel"] == "next"), None)
t_changes = time.time() - t0
t0 = time.time()
full = 0
with urllib.request.urlopen(f"{base}/collections/cambios/items?f=geojson") as r:
    while True:
        b = r.read(1 << 20)
        if not b:
            break
        full += len(b)
t_full = time.time() - t0
print(f"changes?since=1: {n} changed features, {nbytes / 1e6:.1f} MB in {t_changes:.2f} s; "
      f"full download: {full / 1e6:.1f} MB in {t_full:.2f} s -> {100 * nbytes / full:.1f} % of the bytes, "
      f"{t_full / t_changes:.0f}x faster")
PY

# Tile retention after a 1-feature change.
grid cambios -100.30 25.70 > "$w/paths"
fetch() { # base out-file: every grid tile's md5, in order
  awk -v b="$1" '{print "url = \"" b "/tiles" $0 "\"\noutput = \"'"$w"'/t/" NR ".mvt\""}' "$w/paths" > "$w/fetch.cfg"
  rm -rf "$w/t"; mkdir -p "$w/t"
  curl -s --no-progress-meter -Z --parallel-max 8 -K "$w/fetch.cfg"
  for i in $(seq "$(wc -l < "$w/paths")"); do md5sum < "$w/t/$i.mvt" 2>/dev/null || echo empty; done > "$2"
}
metric() { curl -s "$base/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
fetch "$base" "$w/before.md5"
$bin --data "$data" ingest "$w/v3.csv" --layer cambios --ministry bench --access public --id-field id >/dev/null 2>&1
for _ in $(seq 300); do
  [ "$(curl -s "$base/collections/cambios/changes?since=2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["to"]["version"])')" = 3 ] && break
  sleep 0.2
done
h0=$(metric datahub_tile_cache_hits_total)
fetch "$base" "$w/after.md5"
h1=$(metric datahub_tile_cache_hits_total)
kept="carried $(metric datahub_tile_cache_carried_total), rendered again at load $(metric datahub_tile_cache_rerendered_total), dropped $(metric datahub_tile_cache_dropped_total)"
kill $pid; wait $pid 2>/dev/null || true
# A second server on the same data: every tile rendered afresh.
$bin --data "$data" serve --addr "127.0.0.1:$port" > "$w/serve2.out" 2>/dev/null &
pid=$!
for _ in $(seq 300); do curl -sf "$base/collections/cambios" >/dev/null && break; sleep 0.2; done
fetch "$base" "$w/fresh.md5"
kill $pid; wait $pid 2>/dev/null || true
total=$(wc -l < "$w/paths")
same=$(paste -d' ' "$w/after.md5" "$w/fresh.md5" | awk '$1 == $3' | wc -l)
changed=$(paste -d' ' "$w/before.md5" "$w/after.md5" | awk '$1 != $3' | wc -l)
python3 -c "
h = float('$h1') - float('$h0'); t = $total
print(f'1-feature change, viewport grid of {t} tiles: {h:.0f} served from the cache ({100 * h / t:.2f} %), $changed changed; $same of {t} equal to a fresh render ($kept)')"
[ "$same" = "$total" ] || { echo "tiles served from the cache differ from a fresh render" >&2; exit 1; }
