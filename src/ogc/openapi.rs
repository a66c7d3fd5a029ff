//! The OpenAPI 3.0 description served at `/api`: every endpoint and parameter,
//! with one path per collection so each collection's queryables appear as the
//! query parameters they are (OGC API – Features Part 3, queryables-query-parameters).

use layers::index::LoadedLayer;
use serde_json::{json, Map, Value};

use super::{crs, json_schema_type, DESCRIPTION, TITLE};
use crate::features::{DEFAULT_LIMIT, MAX_LIMIT};

fn param_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn ok(description: &str, types: &[(&str, Value)]) -> Value {
    let mut content = Map::new();
    for (t, schema) in types {
        content.insert((*t).to_string(), json!({"schema": schema}));
    }
    json!({
        "200": {"description": description, "content": content},
        "400": {"$ref": "#/components/responses/BadRequest"},
        "404": {"$ref": "#/components/responses/NotFound"},
        "500": {"$ref": "#/components/responses/ServerError"},
    })
}

fn html() -> (&'static str, Value) {
    ("text/html", json!({"type": "string"}))
}

fn get(op_id: &str, summary: &str, tag: &str, params: Vec<Value>, responses: Value) -> Value {
    json!({"get": {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "parameters": params,
        "responses": responses,
    }})
}

/// The whole document for the layers currently loaded.
pub fn document(layers: &[std::sync::Arc<LoadedLayer>], base: &str) -> Value {
    let obj = |r: &str| json!({"$ref": format!("#/components/schemas/{r}")});
    let mut paths = Map::new();
    paths.insert(
        "/".into(),
        get(
            "getLandingPage",
            "Landing page: links to the API definition, conformance and collections",
            "Capabilities",
            vec![param_ref("f")],
            ok(
                "The landing page",
                &[("application/json", obj("landingPage")), html()],
            ),
        ),
    );
    paths.insert(
        "/conformance".into(),
        get(
            "getConformance",
            "The conformance classes this server implements",
            "Capabilities",
            vec![param_ref("f")],
            ok(
                "Conformance classes",
                &[("application/json", obj("confClasses")), html()],
            ),
        ),
    );
    paths.insert(
        "/api".into(),
        get(
            "getOpenAPI",
            "This API definition (OpenAPI 3.0)",
            "Capabilities",
            vec![],
            ok(
                "The OpenAPI document",
                &[(super::OPENAPI_TYPE, json!({"type": "object"}))],
            ),
        ),
    );
    paths.insert(
        "/api.html".into(),
        get(
            "getAPIDocumentation",
            "This API definition as a human-readable page",
            "Capabilities",
            vec![],
            ok("Documentation", &[html()]),
        ),
    );
    paths.insert(
        "/collections".into(),
        get(
            "getCollections",
            "The layers (collections) published",
            "Capabilities",
            vec![param_ref("f")],
            ok(
                "The collections",
                &[("application/json", obj("collections")), html()],
            ),
        ),
    );
    paths.insert(
        "/health".into(),
        get(
            "getHealth",
            "Liveness and the number of loaded layers",
            "Service",
            vec![],
            ok(
                "Service status",
                &[("application/json", json!({"type": "object"}))],
            ),
        ),
    );
    for l in layers {
        let id = &l.meta.id;
        let tag = format!("{} ({id})", l.meta.title);
        let p = format!("/collections/{id}");
        paths.insert(
            p.clone(),
            get(
                &format!("describe_{id}"),
                &format!("Description of '{}'", l.meta.title),
                &tag,
                vec![param_ref("f")],
                ok(
                    "The collection",
                    &[("application/json", obj("collection")), html()],
                ),
            ),
        );
        paths.insert(
            format!("{p}/queryables"),
            get(
                &format!("queryables_{id}"),
                &format!("Queryable properties of '{}'", l.meta.title),
                &tag,
                vec![],
                ok(
                    "JSON Schema of the queryables",
                    &[("application/schema+json", json!({"type": "object"}))],
                ),
            ),
        );
        let temporal = crate::features::temporal_field(&l.meta.schema).is_some();
        // datetime only where the collection has a temporal property (else it is a 400).
        let mut params: Vec<Value> = crate::features::ITEMS_PARAMS
            .iter()
            .filter(|n| temporal || **n != "datetime")
            .map(|n| param_ref(n))
            .collect();
        for f in &l.meta.schema {
            params.push(json!({
                "name": f.name,
                "in": "query",
                "required": false,
                "style": "form",
                "explode": false,
                "description": format!("Only features whose '{}' equals this value", f.name),
                "schema": json_schema_type(f.ftype),
            }));
        }
        paths.insert(
            format!("{p}/items"),
            get(
                &format!("items_{id}"),
                &format!("Features of '{}'", l.meta.title),
                &tag,
                params,
                ok(
                    "A page of features",
                    &[
                        ("application/geo+json", obj("featureCollectionGeoJSON")),
                        html(),
                    ],
                ),
            ),
        );
        paths.insert(
            format!("{p}/items/{{featureId}}"),
            get(
                &format!("item_{id}"),
                &format!("One feature of '{}'", l.meta.title),
                &tag,
                vec![param_ref("featureId"), param_ref("crs"), param_ref("f")],
                ok(
                    "The feature",
                    &[("application/geo+json", obj("featureGeoJSON")), html()],
                ),
            ),
        );
    }
    paths.insert(
        "/tiles/{layers}/{z}/{x}/{y}.mvt".into(),
        json!({"get": {
            "operationId": "getTile",
            "summary": "A Mapbox Vector Tile (XYZ, Web Mercator) of one or more layers (comma-separated ids)",
            "tags": ["Tiles"],
            "parameters": [
                {"name": "layers", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "z", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": 22}},
                {"name": "x", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}},
                {"name": "y", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}},
            ],
            "responses": {
                "200": {"description": "The tile", "content": {"application/vnd.mapbox-vector-tile": {"schema": {"type": "string", "format": "binary"}}}},
                "204": {"description": "No feature in this tile"},
                "304": {"description": "Not modified (If-None-Match)"},
                "400": {"$ref": "#/components/responses/BadRequest"},
                "404": {"$ref": "#/components/responses/NotFound"},
            }
        }}),
    );
    paths.insert(
        "/tiles/{layers}.json".into(),
        json!({"get": {
            "operationId": "getTileJSON",
            "summary": "TileJSON 3.0.0 of one or more layers",
            "tags": ["Tiles"],
            "parameters": [{"name": "layers", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "TileJSON", "content": {"application/json": {"schema": {"type": "object"}}}},
                "404": {"$ref": "#/components/responses/NotFound"},
            }
        }}),
    );

    let crs_uris: Vec<&str> = crs::SUPPORTED.iter().map(|c| c.uri).collect();
    let link = json!({
        "type": "object",
        "required": ["href", "rel"],
        "properties": {
            "href": {"type": "string"}, "rel": {"type": "string"}, "type": {"type": "string"},
            "title": {"type": "string"}, "hreflang": {"type": "string"},
        }
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": TITLE,
            "description": DESCRIPTION,
            "version": env!("CARGO_PKG_VERSION"),
            "contact": {"name": "Municipio de Monterrey"},
            "license": {"name": "Términos de Libre Uso MX", "url": "https://datos.gob.mx/libreusomx"},
        },
        "servers": [{"url": base}],
        "tags": [{"name": "Capabilities"}, {"name": "Tiles"}, {"name": "Service"}],
        "paths": paths,
        "components": {
            "parameters": {
                "f": {"name": "f", "in": "query", "required": false, "style": "form", "explode": false, "description": "Response format (otherwise the Accept header decides)", "schema": {"type": "string", "enum": ["json", "html"]}},
                "bbox": {"name": "bbox", "in": "query", "required": false, "style": "form", "explode": false,
                    "description": "Only features whose geometry intersects this box: minx,miny,maxx,maxy (or 6 numbers for 3D), in the axis order of bbox-crs (CRS84: lon,lat)",
                    "schema": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}},
                "bbox-crs": {"name": "bbox-crs", "in": "query", "required": false, "style": "form", "explode": false, "description": "CRS of bbox (default CRS84)", "schema": {"type": "string", "format": "uri", "enum": crs_uris}},
                "crs": {"name": "crs", "in": "query", "required": false, "style": "form", "explode": false, "description": "CRS of the returned geometries (default CRS84); the response names it in Content-Crs", "schema": {"type": "string", "format": "uri", "enum": crs_uris}},
                "datetime": {"name": "datetime", "in": "query", "required": false, "style": "form", "explode": false, "description": "Only features whose date property is this instant or within this interval (start/end, '..' for an open end)", "schema": {"type": "string"}},
                "filter": {"name": "filter", "in": "query", "required": false, "style": "form", "explode": false, "description": "CQL2 filter on the queryables: comparisons, AND/OR/NOT, LIKE, IN, BETWEEN, IS NULL, CASEI/ACCENTI, DATE/TIMESTAMP, S_INTERSECTS(geometry, <WKT or BBOX>)", "schema": {"type": "string"}},
                "filter-lang": {"name": "filter-lang", "in": "query", "required": false, "style": "form", "explode": false, "description": "Encoding of filter", "schema": {"type": "string", "enum": ["cql2-text", "cql2-json"], "default": "cql2-text"}},
                "filter-crs": {"name": "filter-crs", "in": "query", "required": false, "style": "form", "explode": false, "description": "CRS of the geometry literals in filter (default CRS84)", "schema": {"type": "string", "format": "uri", "enum": crs_uris}},
                "limit": {"name": "limit", "in": "query", "required": false, "style": "form", "explode": false, "description": "Features per page", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
                "offset": {"name": "offset", "in": "query", "required": false, "style": "form", "explode": false, "description": "Features to skip (paging; the next link carries it)", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                "featureId": {"name": "featureId", "in": "path", "required": true, "description": "The feature's id (stable across versions when the layer has a key field)", "schema": {"type": "string"}},
            },
            "schemas": {
                "link": link,
                "exception": {"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}, "description": {"type": "string"}}},
                "landingPage": {"type": "object", "required": ["links"], "properties": {"title": {"type": "string"}, "description": {"type": "string"}, "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}}},
                "confClasses": {"type": "object", "required": ["conformsTo"], "properties": {"conformsTo": {"type": "array", "items": {"type": "string"}}}},
                "collection": {"type": "object", "required": ["id", "links"], "properties": {"id": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"}, "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}, "extent": {"type": "object"}, "itemType": {"type": "string"}, "crs": {"type": "array", "items": {"type": "string"}}, "storageCrs": {"type": "string"}}},
                "collections": {"type": "object", "required": ["links", "collections"], "properties": {"links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}, "collections": {"type": "array", "items": {"$ref": "#/components/schemas/collection"}}}},
                "featureGeoJSON": {"type": "object", "required": ["type", "geometry", "properties"], "properties": {"type": {"type": "string", "enum": ["Feature"]}, "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]}, "geometry": {"nullable": true, "type": "object"}, "properties": {"nullable": true, "type": "object"}}},
                "featureCollectionGeoJSON": {"type": "object", "required": ["type", "features"], "properties": {"type": {"type": "string", "enum": ["FeatureCollection"]}, "features": {"type": "array", "items": {"$ref": "#/components/schemas/featureGeoJSON"}}, "links": {"type": "array", "items": {"$ref": "#/components/schemas/link"}}, "timeStamp": {"type": "string", "format": "date-time"}, "numberMatched": {"type": "integer", "minimum": 0}, "numberReturned": {"type": "integer", "minimum": 0}}},
            },
            "responses": {
                "BadRequest": {"description": "A parameter is wrong; the description says which and why", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/exception"}}}},
                "NotFound": {"description": "No such collection, feature or endpoint", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/exception"}}}},
                "ServerError": {"description": "Server error (details in the server log)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/exception"}}}},
            },
        },
    })
}
