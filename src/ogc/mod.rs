//! OGC API – Features documents: landing page, conformance, collections, queryables
//! (JSON), their HTML renderings ([`html`]), the OpenAPI 3.0 description
//! ([`openapi`]) and the output CRSs ([`crs`]). Builders are pure functions of the
//! loaded layers and the base URL; HTTP wiring stays in `crate::http`.

pub mod crs;
pub mod html;
pub mod openapi;

use std::collections::HashMap;
use std::sync::Mutex;

use layers::fgb::{FieldType, RawValue};
use layers::index::LoadedLayer;
use serde_json::{json, Value};

use crate::features::{temporal_field, time_span};

/// Conformance classes declared at `/conformance`: only what is implemented and
/// tested.
pub const CONFORMANCE: &[&str] = &[
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/accent-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
];

pub const TITLE: &str = "Monterrey DataHub";
pub const DESCRIPTION: &str = "Datos geoespaciales de las secretarías del Municipio de \
     Monterrey / Spatial data of the ministries of the City of Monterrey";

pub const OPENAPI_TYPE: &str = "application/vnd.oai.openapi+json;version=3.0";

fn link(href: String, rel: &str, typ: &str, title: &str) -> Value {
    json!({"href": href, "rel": rel, "type": typ, "title": title})
}

pub fn landing(base: &str) -> Value {
    json!({
        "title": TITLE,
        "description": DESCRIPTION,
        "links": [
            link(format!("{base}/?f=json"), "self", "application/json", "this document"),
            link(format!("{base}/?f=html"), "alternate", "text/html", "this document as HTML"),
            link(format!("{base}/api"), "service-desc", OPENAPI_TYPE, "the API definition (OpenAPI 3.0)"),
            link(format!("{base}/api.html"), "service-doc", "text/html", "the API documentation"),
            link(format!("{base}/conformance"), "conformance", "application/json", "conformance classes implemented"),
            link(format!("{base}/collections"), "data", "application/json", "the layers (collections)"),
        ]
    })
}

pub fn conformance(base: &str) -> Value {
    json!({
        "conformsTo": CONFORMANCE,
        "links": [
            link(format!("{base}/conformance?f=json"), "self", "application/json", "this document"),
            link(format!("{base}/conformance?f=html"), "alternate", "text/html", "this document as HTML"),
        ],
    })
}

/// First and last value of each layer version's temporal property, computed once
/// (a scan of the layer) and kept while that version is current.
#[derive(Default)]
pub struct TemporalExtents {
    cache: Mutex<HashMap<(String, u32), Option<Interval>>>,
}

/// (first, last) as RFC 3339 date-times.
pub type Interval = (String, String);

impl TemporalExtents {
    pub fn get(&self, l: &LoadedLayer) -> Option<Interval> {
        let key = (l.meta.id.clone(), l.meta.version);
        if let Some(v) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return v.clone();
        }
        let v = scan_temporal(l);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|k, _| k.0 != key.0);
        c.insert(key, v.clone());
        v
    }
}

fn scan_temporal(l: &LoadedLayer) -> Option<Interval> {
    let (idx, _) = temporal_field(&l.meta.schema)?;
    let mut lo: Option<(i64, String)> = None;
    let mut hi: Option<(i64, String)> = None;
    for pos in 0..l.len() as u32 {
        let Some((_, offset)) = l.at(pos) else {
            continue;
        };
        let _ = l.for_each_value(offset, |i, v| {
            let RawValue::Str(s) = v else { return };
            if i != idx {
                return;
            }
            let Some(text) = std::str::from_utf8(s).ok() else {
                return;
            };
            let Some((a, b)) = time_span(text) else {
                return;
            };
            if lo.as_ref().is_none_or(|x| a < x.0) {
                lo = Some((a, text.to_string()));
            }
            if hi.as_ref().is_none_or(|x| b > x.0) {
                hi = Some((b, text.to_string()));
            }
        });
    }
    let to_rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    Some((to_rfc(lo?.0)?, to_rfc(hi?.0)?))
}

/// `/collections/{id}`: OGC members first, then DataHub's own (ministry, counts,
/// version, source).
pub fn collection(l: &LoadedLayer, base: &str, temporal: Option<Interval>) -> Value {
    let m = &l.meta;
    let url = format!("{base}/collections/{}", m.id);
    let mut c = json!({
        "id": m.id,
        "title": m.title,
        "description": m.description,
        "keywords": m.keywords,
        "itemType": "feature",
        "crs": crs::SUPPORTED.iter().map(|c| c.uri).collect::<Vec<_>>(),
        "storageCrs": crs::CRS84,
        "links": [
            link(format!("{url}?f=json"), "self", "application/json", "this collection"),
            link(format!("{url}?f=html"), "alternate", "text/html", "this collection as HTML"),
            // No query string: clients (GDAL's OAPIF driver) append /{featureId} to it.
            link(format!("{url}/items"), "items", "application/geo+json", "features (GeoJSON)"),
            link(format!("{url}/items?f=html"), "items", "text/html", "features (HTML)"),
            link(format!("{url}/queryables"), "http://www.opengis.net/def/rel/ogc/1.0/queryables", "application/schema+json", "queryable properties"),
            link(format!("{base}/tiles/{}.json", m.id), "related", "application/json", "vector tiles (TileJSON 3.0.0)"),
            link(format!("{base}/api/layers/{}/quality", m.id), "describedby", "application/json", "data-quality diagnosis"),
        ],
        "ministry": m.ministry,
        "license": m.license,
        "language": m.language,
        "count": l.len(),
        "version": m.version,
        "updated": m.created_at,
        "synthetic": m.synthetic,
        "geometryTypes": m.geometry_types,
        "sourceCrs": m.source_crs.epsg.map(|c| format!("EPSG:{c}")).unwrap_or_else(|| m.source_crs.name.clone()),
    });
    // Whole-layer downloads, one link per format.
    if let Some(links) = c["links"].as_array_mut() {
        for d in crate::download::formats_for(m) {
            links.push(link(
                format!("{url}/items?f={}", d.param()),
                "enclosure",
                d.media_type(),
                &format!("descarga / download: {}", d.title()),
            ));
        }
    }
    let mut extent = serde_json::Map::new();
    if let Some(b) = m.bbox {
        c["bbox"] = json!(b);
        extent.insert("spatial".into(), json!({"bbox": [b], "crs": crs::CRS84}));
    }
    if let Some((a, b)) = temporal {
        extent.insert(
            "temporal".into(),
            json!({"interval": [[a, b]], "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}),
        );
    }
    if !extent.is_empty() {
        c["extent"] = Value::Object(extent);
    }
    c
}

pub fn collections(cols: Vec<Value>, base: &str) -> Value {
    json!({
        "links": [
            link(format!("{base}/collections?f=json"), "self", "application/json", "this document"),
            link(format!("{base}/collections?f=html"), "alternate", "text/html", "this document as HTML"),
        ],
        "crs": crs::SUPPORTED.iter().map(|c| c.uri).collect::<Vec<_>>(),
        "collections": cols,
    })
}

/// JSON Schema type and format of a stored field.
pub fn json_schema_type(t: FieldType) -> Value {
    match t {
        FieldType::Bool => json!({"type": "boolean"}),
        FieldType::Int | FieldType::Long => json!({"type": "integer"}),
        FieldType::Float => json!({"type": "number"}),
        FieldType::String => json!({"type": "string"}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Datetime => json!({"type": "string", "format": "date-time"}),
    }
}

/// `/collections/{id}/queryables` (Part 3): every attribute, with its type, and the
/// geometry. Each can be used as `?name=value` on `/items`.
pub fn queryables(l: &LoadedLayer, base: &str) -> Value {
    let m = &l.meta;
    let mut props = serde_json::Map::new();
    let geom_format = match m.geometry_types.as_slice() {
        [one] => format!("geometry-{}", one.to_ascii_lowercase()),
        _ => "geometry-any".to_string(),
    };
    props.insert(
        "geometry".into(),
        json!({"title": "geometry", "format": geom_format, "x-ogc-role": "primary-geometry"}),
    );
    for f in &m.schema {
        let mut t = json_schema_type(f.ftype);
        t["title"] = json!(f.name);
        props.insert(f.name.clone(), t);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{base}/collections/{}/queryables", m.id),
        "type": "object",
        "title": m.title,
        "properties": props,
        "additionalProperties": false,
    })
}
