#!/usr/bin/env bash
# What the hardening (issue 16) costs on the hot paths: cached tiles and 1,000-feature
# item pages (bbox) of 300,000 points, wrk -t2 -c8 -d8s, served by the binary of
# BASE_REV (built once into target/base) and by this tree's release binary, from the
# same data folder, in the order base, new, new, base in the same run; the ratio of the
# summed throughputs.
# Usage: make bench-hardening (BASE_REV=883b14a by default: main before the issue).
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE_REV=${BASE_REV:-883b14a}
new=./target/release/datahub
base_dir=target/base
base=$base_dir/release/datahub
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; git worktree remove --force "$work/src" 2>/dev/null || true; rm -rf "$work"' EXIT

if [ ! -x "$base" ] || [ "$(cat "$base_dir/rev" 2>/dev/null)" != "$BASE_REV" ]; then
  echo "building $BASE_REV into $base_dir (once)"
  git worktree add --detach "$work/src" "$BASE_REV" >/dev/null
  target_abs="$(pwd)/$base_dir"
  (cd "$work/src" && CARGO_TARGET_DIR="$target_abs" cargo build --release --bin datahub -q)
  echo "$BASE_REV" > "$base_dir/rev"
fi

python3 - "$work/points.csv" <<'PY'
import random, sys
random.seed(16)
with open(sys.argv[1], "w") as f:
    f.write("id,tipo,lon,lat\n")
    for i in range(300_000):
        f.write(f"{i},t{i % 50},{random.uniform(-100.42, -100.18):.6f},{random.uniform(25.62, 25.78):.6f}\n")
PY
$new --data "$work/data" ministry add bench --name Bench >/dev/null 2>&1 || true
$new --data "$work/data" ingest "$work/points.csv" --layer puntos --ministry bench --access public >/dev/null

python3 - "$work" <<'PY'
import math, random, sys
work = sys.argv[1]
random.seed(1000)
with open(f"{work}/items.txt", "w") as f:
    w, h = 0.24 * (1000 / 300_000) ** 0.5, 0.16 * (1000 / 300_000) ** 0.5
    for _ in range(300):
        x = random.uniform(-100.42, -100.18 - w); y = random.uniform(25.62, 25.78 - h)
        f.write(f"/collections/puntos/items?bbox={x:.5f},{y:.5f},{x + w:.5f},{y + h:.5f}&limit=1000&f=json\n")
def tile(lon, lat, z):
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y
paths = set()
for z in (10, 12, 14):
    x0, y1 = tile(-100.42, 25.62, z); x1, y0 = tile(-100.18, 25.78, z)
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            paths.add(f"/tiles/puntos/{z}/{x}/{y}.mvt")
with open(f"{work}/tiles.txt", "w") as f:
    f.write("\n".join(sorted(paths)) + "\n")
PY

serve() { # binary -> base URL (pid in $work/pid)
  "$1" --data "$work/data" serve --addr 127.0.0.1:0 > "$work/serve.out" 2>/dev/null &
  echo $! > "$work/pid"
  for _ in $(seq 600); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/listening on //p' "$work/serve.out"
}
stop() { local p; p=$(cat "$work/pid"); kill "$p" 2>/dev/null || true; while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; }
load() { # base list -> "req/s p50 p99"
  local res
  res=$(URL_LIST="$2" wrk -t2 -c8 -d8s --latency -s tests/bench/list.lua "$1" 2>&1)
  echo "$(echo "$res" | awk '/Requests\/sec/ {printf "%.0f", $2}') $(echo "$res" | awk '$1=="50%" {print $2}') $(echo "$res" | awk '$1=="99%" {print $2}')$(echo "$res" | awk '/Non-2xx/ {print " NON-2xx:" $NF}')"
}

declare -A tiles items
# ABBA order: whatever drifts during the run (heat, other load) weighs on both alike.
for round in 1 2; do
  order="base new"; [ $round = 2 ] && order="new base"
  for who in $order; do
    bin=$base; [ $who = new ] && bin=$new
    url=$(serve "$bin")
    # Warm the tile cache: every tile once.
    while read -r p; do curl -s -o /dev/null -H 'Accept-Encoding: gzip' "$url$p"; done < "$work/tiles.txt"
    tiles[$who$round]=$(load "$url" "$work/tiles.txt")
    items[$who$round]=$(load "$url" "$work/items.txt")
    stop
  done
done
report() { # name assoc-name
  local -n m=$2
  for who in base new; do
    echo "-- $1 $who ($( [ $who = base ] && echo "$BASE_REV" || git rev-parse --short HEAD)): round 1 ${m[${who}1]} | round 2 ${m[${who}2]} (req/s p50 p99)"
  done
  python3 - "${m[base1]}" "${m[base2]}" "${m[new1]}" "${m[new2]}" "$1" <<'PY'
import sys
b = [float(x.split()[0]) for x in sys.argv[1:3]]
n = [float(x.split()[0]) for x in sys.argv[3:5]]
print(f"-- {sys.argv[5]}: new/base throughput {sum(n) / sum(b):.2f}x (mean of two rounds each)")
PY
}
echo "== hardening cost on hot paths (300,000 points; $(wc -l < "$work/tiles.txt") cached tiles; 1,000-feature bbox pages)"
report "cached tiles" tiles
report "items 1,000/page" items
