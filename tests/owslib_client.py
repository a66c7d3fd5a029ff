"""OWSLib's OGC API - Features client against a running DataHub (called by
tests/ogc_blackbox.rs): collections, one collection, items with bbox, paging with
limit/offset. Prints one JSON document of what it saw; the Rust test compares it with
the server's own answers and brute force."""
import json
import sys

from owslib.ogcapi.features import Features

base, layer = sys.argv[1], sys.argv[2]
bbox = [float(x) for x in sys.argv[3].split(",")]
w = Features(base)
out = {
    "conformance": w.conformance()["conformsTo"],
    "collections": sorted(c["id"] for c in w.collections()["collections"]),
    "title": w.collection(layer)["title"],
    "queryables": sorted(w.collection_queryables(layer)["properties"]),
}
bbox_ids = []
offset = 0
while True:
    page = w.collection_items(layer, bbox=bbox, limit=7, offset=offset)
    bbox_ids += [f["id"] for f in page["features"]]
    out["bbox_matched"] = page["numberMatched"]
    if not page["features"]:
        break
    offset += len(page["features"])
    if offset >= page["numberMatched"]:
        break
out["bbox_ids"] = bbox_ids
all_ids = []
offset = 0
while True:
    page = w.collection_items(layer, limit=250, offset=offset)
    all_ids += [f["id"] for f in page["features"]]
    offset += page["numberReturned"]
    if page["numberReturned"] == 0 or offset >= page["numberMatched"]:
        break
out["all_ids"] = all_ids
print(json.dumps(out))
