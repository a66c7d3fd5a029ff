#!/usr/bin/env python3
"""Independent comparison of two layer versions for the diff tests.

  diff_check.py edit IN.geojson OUT.geojson ID_FIELD RENAME_FROM RENAME_TO
      Applies known edits to a GeoJSON layer (moved vertices, attribute edits,
      deletions, insertions, one renamed column) and prints what it did as JSON.

  diff_check.py compare OLD.geojson NEW.geojson ID_FIELD
      Compares two downloads of a layer (read with GDAL's ogr2ogr first when they
      are not GeoJSON) by ID_FIELD and prints added / removed / modified (geometry,
      attributes) and the schema changes, as JSON. Shares no code with the DataHub.
"""
import json
import subprocess
import sys
import tempfile


def load(path):
    if not path.endswith(".geojson"):
        # GDAL reads whatever the DataHub wrote (GeoPackage, FlatGeobuf, …).
        out = tempfile.mktemp(suffix=".geojson")
        subprocess.run(["ogr2ogr", "-f", "GeoJSON", out, path], check=True)
        path = out
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def coords(g):
    """Every coordinate of a geometry, rounded to the stored precision."""
    if g is None:
        return None
    def walk(c):
        if isinstance(c, (int, float)):
            return round(float(c), 9)
        return [walk(x) for x in c]
    if g["type"] == "GeometryCollection":
        return [coords(x) for x in g["geometries"]]
    # A Polygon and a one-part MultiPolygon are the same shape for this purpose.
    c = walk(g["coordinates"])
    if g["type"].startswith("Multi") and len(c) == 1:
        c = c[0]
    return c


def same_value(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def compare(old_path, new_path, id_field):
    old, new = load(old_path), load(new_path)
    def by_id(fc):
        out = {}
        for f in fc["features"]:
            out[int(f["properties"][id_field])] = f
        return out
    a, b = by_id(old), by_id(new)
    cols_a = set().union(*(f["properties"].keys() for f in old["features"]))
    cols_b = set().union(*(f["properties"].keys() for f in new["features"]))
    removed_cols, added_cols = sorted(cols_a - cols_b), sorted(cols_b - cols_a)
    common_ids = sorted(set(a) & set(b))
    renamed = []
    for r in removed_cols:
        for n in added_cols:
            pairs = [(a[i]["properties"].get(r), b[i]["properties"].get(n)) for i in common_ids]
            filled = [p for p in pairs if p[0] is not None or p[1] is not None]
            if filled and sum(1 for x, y in filled if same_value(x, y)) >= 0.9 * len(filled):
                renamed.append([r, n])
    ren = dict(renamed)
    modified = {}
    for i in common_ids:
        fa, fb = a[i], b[i]
        geometry = coords(fa["geometry"]) != coords(fb["geometry"])
        attrs = []
        for k in sorted(cols_b):
            src = {v: k2 for k2, v in ren.items()}.get(k, k)
            if src not in cols_a:
                continue
            if not same_value(fa["properties"].get(src), fb["properties"].get(k)):
                attrs.append(k)
        if geometry or attrs:
            modified[str(i)] = {"geometry": geometry, "attributes": attrs}
    return {
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "modified": modified,
        "renamed": renamed,
        "columns_added": [c for c in added_cols if c not in ren.values()],
        "columns_removed": [c for c in removed_cols if c not in ren],
    }


def edit(in_path, out_path, id_field, rename_from, rename_to):
    fc = load(in_path)
    feats = fc["features"]
    ids = [f["properties"][id_field] for f in feats]
    done = {"moved": [], "edited": [], "deleted": [], "inserted": []}
    # Moved vertices: the first coordinate of features 3, 7 and 11 shifted east.
    def shift(c):
        if isinstance(c[0], (int, float)):
            return [c[0] + 0.0005, c[1]] + c[2:]
        return [shift(c[0])] + c[1:]
    for k in (3, 7, 11):
        g = feats[k]["geometry"]
        g["coordinates"] = shift(g["coordinates"])
        done["moved"].append(ids[k])
    # Attribute edits: a text column of 4 features.
    text_col = next(k for k, v in feats[0]["properties"].items()
                    if isinstance(v, str) and k not in (rename_from,))
    for k in (5, 9, 13, 17):
        feats[k]["properties"][text_col] = "EDITADO " + str(feats[k]["properties"][text_col])
        done["edited"].append(ids[k])
    # Deletions.
    for k in (20, 21):
        done["deleted"].append(ids[k])
    keep = [f for i, f in enumerate(feats) if i not in (20, 21)]
    # Insertions: copies of two features under new ids.
    top = max(ids)
    for n, k in enumerate((30, 31)):
        c = json.loads(json.dumps(feats[k]))
        c["properties"][id_field] = top + 1 + n
        keep.append(c)
        done["inserted"].append(top + 1 + n)
    for f in keep:
        p = f["properties"]
        p[rename_to] = p.pop(rename_from)
    fc["features"] = keep
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(fc, f)
    done["text_column"] = text_col
    print(json.dumps(done))


if __name__ == "__main__":
    if sys.argv[1] == "compare":
        print(json.dumps(compare(sys.argv[2], sys.argv[3], sys.argv[4])))
    elif sys.argv[1] == "edit":
        edit(*sys.argv[2:7])
    else:
        sys.exit(__doc__)
