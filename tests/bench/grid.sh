# The viewport-grid workload shared by tiles.sh and peers.sh (sourced; needs $work).
# grid LAYER LON LAT [SUFFIX]: the URL paths of every tile a 1280x800 map (512-px tiles)
#   needs at z8/10/12/14/16 while panning over a 5x4 grid of centres around LON LAT;
#   SUFFIX is what ends a path (".mvt" for DataHub, "" for Martin).
# once BASE PATHS-FILE: each path once, 8 keep-alive transfers at a time (curl --parallel,
#   gzip accepted): "N tiles once, uncached: T s, R req/s, p50, p99".
grid() {
  python3 - "$1" "$2" "$3" "${4-.mvt}" <<'PY'
import math, sys
layer, lon0, lat0, suffix = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def tile(z, lon, lat):
    n = 2 ** z
    r = math.radians(lat)
    return (lon + 180) / 360 * n, (1 - math.asinh(math.tan(r)) / math.pi) / 2 * n
seen = []
for z in (8, 10, 12, 14, 16):
    # Pan across the city: viewport centres on a 5x4 grid over ~0.24 x 0.16 degrees.
    for i in range(5):
        for j in range(4):
            cx, cy = tile(z, lon0 - 0.12 + 0.06 * i, lat0 - 0.08 + 0.0533 * j)
            hw, hh = 1280 / 512 / 2, 800 / 512 / 2   # 512-px tiles, as MapLibre draws them
            for x in range(math.floor(cx - hw), math.floor(cx + hw) + 1):
                for y in range(math.floor(cy - hh), math.floor(cy + hh) + 1):
                    p = f"/{layer}/{z}/{x}/{y}{suffix}"
                    if p not in seen:
                        seen.append(p)
print("\n".join(seen))
PY
}

once() {
  # curl's parallel mode (C, 8 transfers at once over reused connections) as the
  # client: a Python client took a good share of the 2 cores from the server.
  awk -v b="$1" '{print "url = \"" b $0 "\"\noutput = \"/dev/null\""}' "$2" > "$work/tiles/once.cfg"
  local t0 t1
  t0=$(date +%s.%N)
  curl -s --no-progress-meter -Z --parallel-max 8 -H 'Accept-Encoding: gzip' -K "$work/tiles/once.cfg" \
    -w '%{http_code} %{time_total}\n' > "$work/tiles/once.out"
  t1=$(date +%s.%N)
  if grep -qvE '^(200|204) ' "$work/tiles/once.out"; then
    echo "unexpected status: $(grep -vE '^(200|204) ' "$work/tiles/once.out" | head -3)" >&2
    return 1
  fi
  sort -k2 -g "$work/tiles/once.out" | awk -v t0="$t0" -v t1="$t1" '{a[NR]=$2} END {
    dt = t1 - t0
    printf "%d tiles once, uncached: %.2f s, %.0f req/s, p50 %.1f ms, p99 %.1f ms\n",
      NR, dt, NR / dt, a[int(NR / 2)] * 1000, a[int(NR * 0.99)] * 1000 }'
}

