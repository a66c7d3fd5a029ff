"""Validates the DataHub's two open-data catalog feeds, offline.

    tests/.venv/bin/python tests/dcat_check.py DATA_JSON DCAT_JSONLD [EXPECTED_DATASETS]

DATA_JSON    DCAT-US 1.1 (Project Open Data v1.1, non-federal) catalog, i.e. /data.json.
             Validated with jsonschema (Draft 4, as the schemas declare) against the official
             GSA schema files in tests/fixtures/dcat-us-1.1/ (see SOURCE.md there); every $ref
             is resolved from those local files, never from the network. Then the rules people
             expect of a data.json are checked explicitly (see check_dcat_us_rules).
DCAT_JSONLD  DCAT-AP 3 catalog as JSON-LD with an inline @context. Parsed with rdflib
             (format "json-ld"); a remote @context is refused. See check_dcat_ap.
EXPECTED_DATASETS  optional: both files must describe exactly this many datasets.

Prints one line per problem ("ERROR [dcat-us] <dataset id> <JSON path>: message",
"ERROR [dcat-ap] <node>: message"), WARN lines that do not fail the run, and a summary.
Exit status: 0 valid, 1 invalid (including malformed JSON), 2 bad invocation, unreadable
file, unreadable schema files or a remote JSON-LD @context.
Network access is disabled for the whole run.
"""
import argparse
import json
import socket
import sys
import warnings
from pathlib import Path
from urllib.parse import urlparse

POD_CONFORMS_TO = "https://project-open-data.cio.gov/v1.1/schema"
ACCESS_LEVELS = ("public", "restricted public", "non-public")
DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parent / "fixtures" / "dcat-us-1.1"


class Fatal(Exception):
    """Input that cannot be checked at all (exit status 2)."""


def _no_network(*_args, **_kwargs):
    raise OSError("dcat_check.py runs offline: network access is disabled")


# Nothing below may reach the network: not jsonschema (remote $ref), not rdflib (remote
# @context). Any attempt fails loudly instead of silently depending on the internet.
socket.socket.connect = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network


class Report:
    def __init__(self):
        self.errors = 0
        self.warnings = 0

    def error(self, part, where, msg):
        self.errors += 1
        print(f"ERROR [{part}] {where}: {msg}")

    def warn(self, part, where, msg):
        self.warnings += 1
        print(f"WARN  [{part}] {where}: {msg}")

    def info(self, part, msg):
        print(f"INFO  [{part}] {msg}")


# ----------------------------------------------------------------------------- DCAT-US


def json_path(parts):
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def load_schema_registry(schema_dir):
    """Registry of the local schema files, keyed by their declared Draft 4 "id"."""
    from jsonschema import Draft4Validator
    from referencing import Registry
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT4

    files = sorted(schema_dir.glob("*.json"))
    if not files:
        raise Fatal(f"no schema files in {schema_dir}")
    resources = []
    catalog_uri = None
    for f in files:
        try:
            contents = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise Fatal(f"cannot read schema {f}: {e}") from e
        Draft4Validator.check_schema(contents)
        uri = contents.get("id", "").rstrip("#")
        if not uri:
            raise Fatal(f"schema {f} declares no id")
        resources.append((uri, DRAFT4.create_resource(contents)))
        if f.name == "catalog.json":
            catalog_uri = uri

    def retrieve(uri):
        # Only called for a $ref that none of the local files declares: refuse, offline.
        raise NoSuchResource(ref=uri)

    if catalog_uri is None:
        raise Fatal(f"{schema_dir}/catalog.json is missing")
    return Registry(retrieve=retrieve).with_resources(resources), catalog_uri


def _is_null_alternative(e):
    return e.validator == "type" and e.validator_value == "null"


def flatten_schema_error(err):
    """Yields (instance path, message) for one jsonschema error, readably.

    Most optional POD fields are `anyOf: [<real schema>, {"type": "null"}]`. When only one
    non-null alternative is left, its own (deeper) errors are reported instead of the anyOf
    wrapper; when several are left (e.g. the three date/duration forms of `modified`), one
    line lists what each alternative accepts."""
    if err.validator in ("anyOf", "oneOf") and err.context:
        subs = [e for e in err.context if not _is_null_alternative(e)]
        branches = {e.relative_schema_path[0] for e in subs}
        if len(branches) == 1:
            for sub in subs:
                yield from flatten_schema_error(sub)
            return
        wanted = []
        for sub in sorted(subs, key=lambda e: list(map(str, e.relative_schema_path))):
            if sub.validator == "pattern":
                w = f"pattern {sub.validator_value!r}"
            elif sub.validator == "enum":
                w = f"one of {sub.validator_value!r}"
            else:
                w = sub.message
            if w not in wanted:
                wanted.append(w)
        shown = repr(err.instance) if not isinstance(err.instance, (dict, list)) else "value"
        yield list(err.absolute_path), f"{shown} matches none of the accepted forms: " + " | ".join(wanted)
        return
    yield list(err.absolute_path), err.message


def dataset_label(catalog, path):
    parts = list(path)
    if len(parts) >= 2 and parts[0] == "dataset" and isinstance(parts[1], int):
        ds = catalog["dataset"][parts[1]]
        if isinstance(ds, dict) and isinstance(ds.get("identifier"), str) and ds["identifier"]:
            return ds["identifier"]
        return f"dataset[{parts[1]}]"
    return "(catalog)"


def is_abs_uri(v):
    if not isinstance(v, str) or not v or any(c.isspace() for c in v):
        return False
    u = urlparse(v)
    if not u.scheme:
        return False
    if u.scheme in ("http", "https"):
        return bool(u.netloc)
    return True


def check_dcat_us(path, schema_dir, rep):
    """Returns the number of datasets (or None if the file could not be read)."""
    from jsonschema import Draft4Validator

    P = "dcat-us"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise Fatal(f"cannot read {path}: {e}") from e
    try:
        catalog = json.loads(text)
    except ValueError as e:
        rep.error(P, path, f"not valid JSON: {e}")
        return None
    if not isinstance(catalog, dict):
        rep.error(P, "$", "a DCAT-US 1.1 catalog is a JSON object with a \"dataset\" array")
        return None

    registry, catalog_uri = load_schema_registry(schema_dir)
    schema = registry.contents(catalog_uri)
    validator = Draft4Validator(
        schema, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER
    )
    found = []
    for err in validator.iter_errors(catalog):
        for item in flatten_schema_error(err):
            if item not in found:
                found.append(item)
    for parts, msg in sorted(found, key=lambda f: [(0, p, "") if isinstance(p, int) else (1, 0, p) for p in f[0]]):
        rep.error(P, f"{dataset_label(catalog, parts)} {json_path(parts)}", "[schema] " + msg)

    check_dcat_us_rules(catalog, rep)
    datasets = catalog.get("dataset")
    if not isinstance(datasets, list):
        return None
    n_dist = sum(len(d["distribution"]) for d in datasets
                 if isinstance(d, dict) and isinstance(d.get("distribution"), list))
    rep.info(P, f"datasets={len(datasets)} distributions={n_dist}")
    return len(datasets)


def check_dcat_us_rules(catalog, rep):
    """The rules people expect of a data.json, checked explicitly (some overlap the schema,
    some go beyond the non-federal schema, which e.g. does not require keyword/modified)."""
    P = "dcat-us"

    def err(label, parts, msg):
        rep.error(P, f"{label} {json_path(parts)}", "[rule] " + msg)

    if catalog.get("conformsTo") != POD_CONFORMS_TO:
        err("(catalog)", ["conformsTo"], f"must be {POD_CONFORMS_TO!r}, got {catalog.get('conformsTo')!r}")
    for key in ("@context", "@id", "describedBy"):
        if key in catalog and not is_abs_uri(catalog[key]):
            err("(catalog)", [key], f"must be an absolute URI, got {catalog[key]!r}")

    datasets = catalog.get("dataset")
    if not isinstance(datasets, list):
        err("(catalog)", ["dataset"], "must be an array of datasets")
        return
    if not datasets:
        rep.warn(P, "(catalog) $.dataset", "catalog lists no datasets")

    seen = {}
    for i, ds in enumerate(datasets):
        base = ["dataset", i]
        if not isinstance(ds, dict):
            err(f"dataset[{i}]", base, "must be an object")
            continue
        ident = ds.get("identifier")
        label = ident if isinstance(ident, str) and ident else f"dataset[{i}]"

        def nonempty_str(key, parts=None):
            v = ds.get(key)
            if not isinstance(v, str) or not v.strip():
                err(label, parts or base + [key], f"{key} is required and must be a non-empty string, got {v!r}")

        nonempty_str("identifier")
        nonempty_str("title")
        nonempty_str("description")
        nonempty_str("modified")

        if isinstance(ident, str) and ident:
            if ident in seen:
                err(label, base + ["identifier"], f"identifier is not unique (also dataset[{seen[ident]}])")
            else:
                seen[ident] = i

        kw = ds.get("keyword")
        if not isinstance(kw, list) or not kw or not all(isinstance(k, str) and k.strip() for k in kw):
            err(label, base + ["keyword"], f"keyword must be a non-empty array of non-empty strings, got {kw!r}")

        pub = ds.get("publisher")
        if not isinstance(pub, dict) or not isinstance(pub.get("name"), str) or not pub["name"].strip():
            err(label, base + ["publisher", "name"], "publisher.name is required (non-empty string)")

        cp = ds.get("contactPoint")
        if not isinstance(cp, dict):
            err(label, base + ["contactPoint"], "contactPoint is required (object with fn and hasEmail)")
        else:
            if not isinstance(cp.get("fn"), str) or not cp["fn"].strip():
                err(label, base + ["contactPoint", "fn"], "contactPoint.fn is required (non-empty string)")
            email = cp.get("hasEmail")
            if not isinstance(email, str) or not email.startswith("mailto:") or "@" not in email:
                err(label, base + ["contactPoint", "hasEmail"],
                    f"contactPoint.hasEmail is required and must be \"mailto:user@host\", got {email!r}")

        if ds.get("accessLevel") not in ACCESS_LEVELS:
            err(label, base + ["accessLevel"],
                f"accessLevel must be one of {', '.join(repr(a) for a in ACCESS_LEVELS)}, got {ds.get('accessLevel')!r}")

        for key in ("license", "landingPage", "describedBy", "conformsTo"):
            if ds.get(key) is not None and not is_abs_uri(ds[key]):
                err(label, base + [key], f"{key} must be an absolute URI, got {ds[key]!r}")
        refs = ds.get("references")
        if isinstance(refs, list):
            for j, r in enumerate(refs):
                if not is_abs_uri(r):
                    err(label, base + ["references", j], f"must be an absolute URI, got {r!r}")

        dists = ds.get("distribution")
        if dists is None:
            continue
        if not isinstance(dists, list):
            err(label, base + ["distribution"], "distribution must be an array")
            continue
        for j, d in enumerate(dists):
            dp = base + ["distribution", j]
            if not isinstance(d, dict):
                err(label, dp, "distribution must be an object")
                continue
            if d.get("downloadURL") is None and d.get("accessURL") is None:
                err(label, dp, "distribution needs a downloadURL or an accessURL")
            if "downloadURL" in d:
                mt = d.get("mediaType")
                if not isinstance(mt, str) or not mt.strip():
                    err(label, dp + ["mediaType"], "a distribution with downloadURL must have mediaType")
            for key in ("downloadURL", "accessURL", "conformsTo", "describedBy"):
                if d.get(key) is not None and not is_abs_uri(d[key]):
                    err(label, dp + [key], f"{key} must be an absolute URI, got {d[key]!r}")


# ----------------------------------------------------------------------------- DCAT-AP


def find_remote_contexts(node, path="$"):
    """Yield (json path, reference) for every @context (or @import) that is not inline."""
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}.{k}"
            if k == "@context":
                items = v if isinstance(v, list) else [v]
                for n, item in enumerate(items):
                    if isinstance(item, str):
                        yield (f"{p}[{n}]" if isinstance(v, list) else p), item
            elif k == "@import" and isinstance(v, str):
                yield p, v
            yield from find_remote_contexts(v, p)
    elif isinstance(node, list):
        for n, item in enumerate(node):
            yield from find_remote_contexts(item, f"{path}[{n}]")


def check_dcat_ap(path, rep):
    """Returns the number of datasets linked from the catalog (or None if unreadable)."""
    import rdflib
    from rdflib import BNode, Literal, URIRef
    from rdflib.namespace import DCAT, DCTERMS, RDF

    P = "dcat-ap"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise Fatal(f"cannot read {path}: {e}") from e
    try:
        doc = json.loads(text)
    except ValueError as e:
        rep.error(P, path, f"not valid JSON: {e}")
        return None

    remote = list(find_remote_contexts(doc))
    if remote:
        for where, ref in remote:
            print(f"FATAL [dcat-ap] {where}: remote JSON-LD context {ref!r} is not allowed; "
                  "this check runs offline, the @context must be inline (an object)")
        raise Fatal("remote @context in " + str(path))
    tops = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(t, dict) and isinstance(t.get("@context"), (dict, list)) for t in tops):
        rep.warn(P, "$", "no inline top-level @context: prefixed names will not expand")

    g = rdflib.Graph()
    try:
        with warnings.catch_warnings():
            # rdflib 7.6's JSON-LD parser uses its own deprecated ConjunctiveGraph internally.
            warnings.simplefilter("ignore", DeprecationWarning)
            g.parse(data=text, format="json-ld", base=Path(path).resolve().as_uri())
    except Exception as e:  # rdflib raises many kinds
        rep.error(P, path, f"rdflib cannot parse the JSON-LD: {type(e).__name__}: {e}")
        return None

    def name(n):
        return n.n3(g.namespace_manager) if not isinstance(n, BNode) else f"_:{n}"

    # Properties whose IRI did not expand (undefined prefix in the @context).
    for pred in sorted(set(g.predicates())):
        scheme = urlparse(str(pred)).scheme
        if scheme not in ("http", "https", "urn"):
            rep.error(P, str(pred), "predicate did not expand to an http(s) IRI: undefined prefix in @context?")

    catalogs = sorted(set(g.subjects(RDF.type, DCAT.Catalog)))
    if len(catalogs) != 1:
        rep.error(P, "(graph)", f"expected exactly one dcat:Catalog, found {len(catalogs)}"
                  + (": " + ", ".join(name(c) for c in catalogs) if catalogs else ""))
    all_datasets = set(g.subjects(RDF.type, DCAT.Dataset))
    linked = []
    for cat in catalogs:
        for p in (DCTERMS.title, DCTERMS.description, DCTERMS.publisher):
            if g.value(cat, p) is None:
                rep.warn(P, name(cat), f"catalog has no {name(p)} (mandatory for a DCAT-AP 3 Catalogue)")
        linked += list(g.objects(cat, DCAT.dataset))
    linked_set = set(linked)
    if catalogs and not linked:
        rep.warn(P, name(catalogs[0]), "catalog links no dataset (dcat:dataset)")

    def need_literal(node, prop, what):
        vals = list(g.objects(node, prop))
        if not vals:
            rep.error(P, name(node), f"{what} has no {name(prop)}")
        elif not any(isinstance(v, Literal) and str(v).strip() for v in vals):
            rep.error(P, name(node), f"{what} {name(prop)} must be a non-empty literal, got {vals[0]!r}")

    dist_nodes = set(g.subjects(RDF.type, DCAT.Distribution))
    for ds in sorted(linked_set, key=str):
        if isinstance(ds, Literal):
            rep.error(P, name(ds), "dcat:dataset must point to a node, not a literal")
            continue
        if ds not in all_datasets:
            rep.error(P, name(ds), "linked by dcat:dataset but not typed dcat:Dataset")
        need_literal(ds, DCTERMS.title, "dataset")
        need_literal(ds, DCTERMS.description, "dataset")
        need_literal(ds, DCTERMS.identifier, "dataset")
        dist_nodes |= {d for d in g.objects(ds, DCAT.distribution)}
    for ds in sorted(all_datasets - linked_set, key=str):
        rep.warn(P, name(ds), "dcat:Dataset not linked from the catalog by dcat:dataset")
    # Distributions of unlinked datasets are checked too.
    for ds in all_datasets:
        dist_nodes |= {d for d in g.objects(ds, DCAT.distribution)}

    for d in sorted(dist_nodes, key=str):
        if isinstance(d, Literal):
            rep.error(P, name(d), "dcat:distribution must point to a node, not a literal")
            continue
        if (d, RDF.type, DCAT.Distribution) not in g:
            rep.error(P, name(d), "distribution is not typed dcat:Distribution")
        access = list(g.objects(d, DCAT.accessURL))
        if not access:
            rep.error(P, name(d), "distribution has no dcat:accessURL (mandatory in DCAT-AP 3)")
        for prop in (DCAT.accessURL, DCAT.downloadURL):
            for v in g.objects(d, prop):
                if not isinstance(v, URIRef):
                    rep.error(P, name(d), f"{name(prop)} must be an IRI, got literal {str(v)!r}: write "
                              "{\"@id\": \"...\"} or declare the term with \"@type\": \"@id\" in the @context")
        lic = list(g.objects(d, DCTERMS.license))
        if not lic:
            rep.error(P, name(d), "distribution has no dct:license")
        for v in lic:
            if isinstance(v, Literal):
                rep.warn(P, name(d), f"dct:license should be an IRI (a dct:LicenseDocument), got literal {str(v)!r}")
        for prop in (DCAT.mediaType, DCTERMS.format):
            for v in g.objects(d, prop):
                if isinstance(v, Literal):
                    rep.warn(P, name(d), f"{name(prop)} is a literal {str(v)!r}; DCAT-AP 3 expects an IRI "
                             "(IANA media type / EU file-type vocabulary)")

    rep.info(P, f"catalogs={len(catalogs)} datasets={len(linked_set)} "
             f"distributions={len(dist_nodes)} triples={len(g)}")
    return len(linked_set)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_json", help="DCAT-US 1.1 data.json")
    ap.add_argument("dcat_jsonld", help="DCAT-AP 3 JSON-LD document (inline @context)")
    ap.add_argument("expected_datasets", nargs="?", type=int,
                    help="number of datasets both files must describe")
    ap.add_argument("--schema-dir", type=Path, default=DEFAULT_SCHEMA_DIR,
                    help=f"DCAT-US 1.1 JSON Schema files (default {DEFAULT_SCHEMA_DIR})")
    args = ap.parse_args(argv)

    rep = Report()
    try:
        n_us = check_dcat_us(args.data_json, args.schema_dir, rep)
        n_ap = check_dcat_ap(args.dcat_jsonld, rep)
    except Fatal as e:
        print(f"FATAL {e}")
        return 2

    if args.expected_datasets is not None:
        for part, n in (("dcat-us", n_us), ("dcat-ap", n_ap)):
            if n is not None and n != args.expected_datasets:
                rep.error(part, "(catalog)", f"expected {args.expected_datasets} datasets, found {n}")
    elif n_us is not None and n_ap is not None and n_us != n_ap:
        rep.warn("both", "(catalog)", f"data.json has {n_us} datasets, the JSON-LD {n_ap}")

    status = "OK" if rep.errors == 0 else "INVALID"
    print(f"{status}: {rep.errors} error(s), {rep.warnings} warning(s)")
    return 0 if rep.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
