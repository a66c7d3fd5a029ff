//! Property-based fuzzing (proptest) of what the network hands the server: CQL2
//! filters in both encodings, the items query string (bbox, datetime, limit, crs,
//! property filters), tile coordinates and the upload metadata. Each target checks
//! that any input gives a value or a clean error, never a panic, and that what
//! parses evaluates without one.
//!
//! `make test` runs a short pass (`DATAHUB_FUZZ_CASES`, default 300 per target);
//! `make fuzz` a long one. A failing input is shrunk and saved by proptest under
//! `proptest-regressions/` (committed), so it is replayed first by every later run:
//! each crash found becomes a test.

use proptest::prelude::*;

use crate::cql2;
use crate::features;
use layers::fgb::{Field, FieldType, RawValue};

pub(crate) fn cases() -> u32 {
    std::env::var("DATAHUB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn schema() -> Vec<Field> {
    let f = |n: &str, t| Field {
        name: n.into(),
        ftype: t,
    };
    vec![
        f("nombre", FieldType::String),
        f("valor", FieldType::Float),
        f("n", FieldType::Long),
        f("fecha", FieldType::Date),
        f("activo", FieldType::Bool),
    ]
}

/// Pieces of CQL2 text, so that generated filters get past the first token often.
fn cql2_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "nombre",
            "valor",
            "n",
            "fecha",
            "activo",
            "geometry",
            "AND",
            "OR",
            "NOT",
            "LIKE",
            "IN",
            "BETWEEN",
            "IS",
            "NULL",
            "CASEI",
            "ACCENTI",
            "DATE",
            "TIMESTAMP",
            "S_INTERSECTS",
            "BBOX",
            "POINT",
            "POLYGON",
            "TRUE",
            "FALSE",
            "(",
            ")",
            ",",
            "=",
            "<>",
            "<",
            "<=",
            ">",
            ">=",
            "'%a_'",
            "'x'",
            "''",
            "'2024-01-31'",
            "-1.5",
            "1e309",
            "3",
            "'%%%%x'",
            "\\",
            "\"nombre\"",
            "'",
            "--",
            "/*",
        ])
        .prop_map(str::to_string),
        "[-0-9.eE]{1,12}",
        "'[^']{0,12}'",
        ".{0,3}",
    ]
}

fn cql2_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(cql2_token(), 0..40).prop_map(|t| t.join(" ")),
        ".{0,200}",
    ]
}

/// JSON documents shaped like CQL2 JSON (op/args/property), nested.
fn cql2_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|x| json!(x)),
        any::<i64>().prop_map(|x| json!(x)),
        prop::sample::select(vec![
            "nombre",
            "valor",
            "fecha",
            "=",
            "like",
            "in",
            "and",
            "or",
            "not",
            "between",
            "isNull",
            "s_intersects",
            "casei",
            "accenti",
            "%a%",
            "2024-01-01",
            "",
        ])
        .prop_map(|s| json!(s)),
        prop::sample::select(vec!["nombre", "valor", "n", "fecha", "zzz"])
            .prop_map(|p| json!({"property": p})),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            (
                prop::sample::select(vec![
                    "and",
                    "or",
                    "not",
                    "=",
                    "<>",
                    "<",
                    ">=",
                    "like",
                    "in",
                    "between",
                    "isNull",
                    "s_intersects",
                    "casei",
                    "accenti",
                    "t_after",
                    "nope",
                ]),
                prop::collection::vec(inner.clone(), 0..5)
            )
                .prop_map(|(op, args)| json!({"op": op, "args": args})),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "op",
                    "args",
                    "property",
                    "date",
                    "timestamp",
                    "bbox",
                    "interval",
                    "type",
                    "coordinates",
                ])
                .prop_map(str::to_string),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn eval_everywhere(e: &cql2::Expr) {
    let s = schema();
    let rows: [Vec<Option<RawValue<'_>>>; 2] = [
        vec![
            Some(RawValue::Str(b"Ni\xc3\xb1os")),
            Some(RawValue::F64(1.5)),
            Some(RawValue::I64(-3)),
            Some(RawValue::Str(b"2024-02-29")),
            Some(RawValue::Bool(true)),
        ],
        vec![
            None,
            Some(RawValue::F64(f64::NAN)),
            None,
            Some(RawValue::Str(b"x")),
            None,
        ],
    ];
    let g: geo::Geometry<f64> = geo::Point::new(-100.3, 25.7).into();
    for values in &rows {
        let _ = e.eval(&cql2::Row {
            values,
            schema: &s,
            geometry: Some(&g),
        });
    }
    let _ = e.required_bbox();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn cql2_text_never_panics(f in cql2_text()) {
        if let Ok(e) = cql2::parse_text(&f, &schema()) {
            eval_everywhere(&e);
        }
    }

    #[test]
    fn cql2_json_never_panics(v in cql2_json()) {
        if let Ok(e) = cql2::parse_json(&v.to_string(), &schema()) {
            eval_everywhere(&e);
        }
    }

    #[test]
    fn cql2_json_text_never_panics(s in ".{0,200}") {
        let _ = cql2::parse_json(&s, &schema());
    }

    #[test]
    fn items_query_never_panics(
        pairs in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "bbox", "bbox-crs", "datetime", "limit", "offset", "crs", "f",
                    "filter", "filter-lang", "filter-crs", "nombre", "valor", "n",
                    "fecha", "activo", "zzz", "",
                ]),
                prop_oneof![
                    "[-0-9.,eE ]{0,40}",
                    "[0-9TZ:/.-]{0,40}",
                    prop::sample::select(vec![
                        "..", "../2024-01-01", "2024-01-01T00:00:00Z/..", "P1M/2024-01-01",
                        "-180,-90,180,90", "170,-10,-170,10", "1,2,3", "nan,0,1,1",
                        "http://www.opengis.net/def/crs/EPSG/0/32614", "EPSG:4326",
                        "json", "html", "gpkg", "cql2-json", "nombre = 'x'",
                    ])
                    .prop_map(str::to_string),
                    ".{0,20}",
                ],
            ),
            0..6,
        )
    ) {
        let raw: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let _ = features::parse_items_query(Some(&raw), &schema());
    }

    #[test]
    fn bbox_and_datetime_never_panic(b in ".{0,60}", d in ".{0,60}") {
        let _ = features::parse_bbox_numbers(&b);
        let _ = features::parse_datetime(&d);
        let _ = features::time_span(&d);
    }

    #[test]
    fn tile_coordinates_never_panic(z in any::<u32>(), x in any::<u64>(), y in any::<u64>()) {
        if let Ok(t) = tiles::grid::TileId::new(z, x, y) {
            prop_assert!(u64::from(t.x) < (1u64 << t.z) && u64::from(t.y) < (1u64 << t.z));
        }
    }

    #[test]
    fn upload_metadata_never_panics(v in cql2_json(), s in ".{0,100}") {
        for text in [v.to_string(), s] {
            if let Ok(m) = crate::http::catalog::parse_meta(&text) {
                let _ = m.edit();
                let _ = m.table();
            }
        }
    }

    #[test]
    fn upload_metadata_fields_never_panic(
        fields in prop::collection::btree_map(
            prop::sample::select(vec![
                "id", "title", "access", "temporal", "crs", "join", "key", "as",
                "crosswalk", "lon", "lat", "x", "y", "coords", "coord_order",
                "header_row", "no_geometry", "update_frequency", "keywords", "license",
                "contact_email", "language",
            ])
            .prop_map(str::to_string),
            cql2_json(),
            0..6,
        )
    ) {
        let text = serde_json::Value::Object(fields.into_iter().collect()).to_string();
        if let Ok(m) = crate::http::catalog::parse_meta(&text) {
            let _ = m.edit();
            let _ = m.table();
        }
    }
}
