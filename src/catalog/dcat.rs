//! Open-data feeds of the public layers: DCAT-US 1.1 (`/catalog/data.json`, the
//! Project Open Data schema Mexico's national open-data guide follows) and DCAT-AP 3
//! in JSON-LD (`/catalog/dcat.jsonld`), plus a metadata-quality score per layer on the
//! EU Metadata Quality Assessment (MQA) dimensions.
//!
//! Both feeds are built from the same [`Dataset`] view of a layer record, so they
//! agree; fields a record lacks fall back to its ministry's (publisher, contact email),
//! never to invented values.

use layers::store::{Access, LayerMeta};
use serde_json::{json, Value};

use super::Ministry;
use crate::download::DownloadFormat;

/// The catalogue's publisher.
pub const CITY: &str = "Municipio de Monterrey";
pub const DCAT_US_SCHEMA: &str = "https://project-open-data.cio.gov/v1.1/schema";

/// A public layer as the feeds describe it.
pub struct Dataset<'a> {
    pub meta: &'a LayerMeta,
    pub ministry: Option<&'a Ministry>,
    /// When its first kept version was published.
    pub issued: Option<String>,
}

/// Licence names people write, and their URIs.
pub fn license_uri(license: &str) -> Option<&'static str> {
    let l = layers::text::words(license);
    match l.as_str() {
        "terminos de libre uso mx" | "libre uso mx" | "libreusomx" => {
            Some("https://www.datos.gob.mx/libreusomx")
        }
        "cc by 4 0" | "cc by" | "creative commons attribution 4 0" => {
            Some("https://creativecommons.org/licenses/by/4.0/")
        }
        "cc0" | "cc0 1 0" => Some("https://creativecommons.org/publicdomain/zero/1.0/"),
        "odbl" | "odbl 1 0" => Some("https://opendatacommons.org/licenses/odbl/1-0/"),
        _ if license.starts_with("https://") || license.starts_with("http://") => None,
        _ => None,
    }
}

/// The licence as a URI: a known name's URI, or the text itself when it is one.
fn license_link(license: &str) -> Option<String> {
    license_uri(license).map(str::to_string).or_else(|| {
        (license.starts_with("https://") || license.starts_with("http://"))
            .then(|| license.to_string())
    })
}

/// EU frequency vocabulary term for an ISO 8601 repeating duration.
fn eu_frequency(f: &str) -> Option<&'static str> {
    let d = f.strip_prefix("R/").unwrap_or(f);
    Some(match d {
        "P1D" => "DAILY",
        "P1W" | "P7D" => "WEEKLY",
        "P2W" | "P14D" => "BIWEEKLY",
        "P1M" => "MONTHLY",
        "P2M" => "BIMONTHLY",
        "P3M" => "QUARTERLY",
        "P4M" => "QUADRIMONTHLY",
        "P6M" => "BIANNUAL",
        "P1Y" | "P12M" => "ANNUAL",
        "P2Y" => "BIENNIAL",
        "P3Y" => "TRIENNIAL",
        "PT1H" => "HOURLY",
        _ => return None,
    })
}

/// EU file-type term of a download format.
fn eu_file_type(d: DownloadFormat) -> Option<&'static str> {
    Some(match d {
        DownloadFormat::GeoJson => "GEOJSON",
        DownloadFormat::Csv => "CSV",
        DownloadFormat::Gpkg => "GPKG",
        DownloadFormat::Shp => "SHP",
        DownloadFormat::Kml => "KML",
        DownloadFormat::Xlsx => "XLSX",
        DownloadFormat::Fgb => return None,
    })
}

fn media_type(d: DownloadFormat) -> &'static str {
    // Parameters (`; charset=`) are not part of a media type in the feeds' patterns.
    d.media_type().split(';').next().unwrap_or("").trim()
}

impl Dataset<'_> {
    fn publisher_name(&self) -> String {
        self.ministry
            .map(|m| m.name.clone())
            .unwrap_or_else(|| self.meta.ministry.clone())
    }

    fn email(&self) -> Option<String> {
        self.meta
            .contact_email
            .clone()
            .or_else(|| self.ministry.and_then(|m| m.email.clone()))
    }

    fn contact_name(&self) -> String {
        self.meta
            .contact_name
            .clone()
            .unwrap_or_else(|| self.publisher_name())
    }

    fn description(&self) -> String {
        if self.meta.description.trim().is_empty() {
            format!("{} ({})", self.meta.title, self.publisher_name())
        } else {
            self.meta.description.clone()
        }
    }

    /// Keywords; DCAT-US wants at least one, so a record without any offers its theme
    /// and ministry.
    fn keywords(&self) -> Vec<String> {
        if !self.meta.keywords.is_empty() {
            return self.meta.keywords.clone();
        }
        let mut k: Vec<String> = self.meta.theme.iter().cloned().collect();
        k.push(self.meta.ministry.clone());
        k
    }

    fn accrual(&self) -> Option<String> {
        let f = self.meta.update_frequency.as_deref()?;
        Some(if f.starts_with('R') {
            f.to_string()
        } else {
            format!("R/{f}")
        })
    }
}

fn collection_url(base: &str, id: &str) -> String {
    format!("{base}/collections/{id}")
}

/// `GET /catalog/data.json`: DCAT-US 1.1.
pub fn data_json(datasets: &[Dataset<'_>], base: &str) -> Value {
    let items: Vec<Value> = datasets.iter().map(|d| us_dataset(d, base)).collect();
    json!({
        "@context": "https://project-open-data.cio.gov/v1.1/schema/catalog.jsonld",
        "@id": format!("{base}/catalog/data.json"),
        "@type": "dcat:Catalog",
        "conformsTo": DCAT_US_SCHEMA,
        "describedBy": "https://project-open-data.cio.gov/v1.1/schema/catalog.json",
        "dataset": items,
    })
}

fn us_dataset(d: &Dataset<'_>, base: &str) -> Value {
    let m = d.meta;
    let url = collection_url(base, &m.id);
    let mut distribution: Vec<Value> = crate::download::formats_for(m)
        .map(|f| {
            json!({
                "@type": "dcat:Distribution",
                "title": f.title(),
                "downloadURL": format!("{url}/items?f={}", f.param()),
                "mediaType": media_type(f),
                "format": f.title(),
            })
        })
        .collect();
    distribution.push(json!({
        "@type": "dcat:Distribution",
        "title": "OGC API – Features",
        "description": "Consulta por bbox, filtros CQL2 y paginación / bbox, CQL2 filters and paging",
        "accessURL": url,
        "format": "API",
        "mediaType": "application/json",
        "conformsTo": "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    }));
    distribution.push(json!({
        "@type": "dcat:Distribution",
        "title": "Teselas vectoriales (TileJSON) / Vector tiles (TileJSON)",
        "accessURL": format!("{base}/tiles/{}.json", m.id),
        "format": "TileJSON",
        "mediaType": "application/json",
        "conformsTo": "https://github.com/mapbox/tilejson-spec/tree/master/3.0.0",
    }));
    let mut out = json!({
        "@type": "dcat:Dataset",
        "identifier": url,
        "title": m.title,
        "description": d.description(),
        "keyword": d.keywords(),
        "modified": m.created_at,
        "publisher": {
            "@type": "org:Organization",
            "name": d.publisher_name(),
            "subOrganizationOf": {"@type": "org:Organization", "name": CITY},
        },
        "contactPoint": {"@type": "vcard:Contact", "fn": d.contact_name()},
        "accessLevel": "public",
        "landingPage": format!("{url}?f=html"),
        "language": [m.language],
        "distribution": distribution,
    });
    if let Some(e) = d.email() {
        out["contactPoint"]["hasEmail"] = json!(format!("mailto:{e}"));
    }
    match license_link(&m.license) {
        Some(l) => out["license"] = json!(l),
        None => out["rights"] = json!(m.license.chars().take(255).collect::<String>()),
    }
    if let Some(b) = m.bbox {
        out["spatial"] = json!(format!("{},{},{},{}", b[0], b[1], b[2], b[3]));
    }
    if let Some(t) = &m.temporal {
        out["temporal"] = json!(t);
    }
    if let Some(a) = d.accrual() {
        out["accrualPeriodicity"] = json!(a);
    }
    if let Some(t) = &m.theme {
        out["theme"] = json!([t]);
    }
    if let Some(i) = &d.issued {
        out["issued"] = json!(i);
    }
    out
}

const LANG_SPA: &str = "http://publications.europa.eu/resource/authority/language/SPA";

/// `GET /catalog/dcat.jsonld`: DCAT-AP 3 (catalogue, datasets, distributions).
pub fn dcat_ap(datasets: &[Dataset<'_>], base: &str, modified: Option<&str>) -> Value {
    let items: Vec<Value> = datasets.iter().map(|d| ap_dataset(d, base)).collect();
    let mut catalog = json!({
        "@id": format!("{base}/catalog/dcat.jsonld#catalog"),
        "@type": "dcat:Catalog",
        "dct:title": [{"@value": "DataHub Monterrey: datos abiertos geográficos", "@language": "es"},
                      {"@value": "DataHub Monterrey: open geographic data", "@language": "en"}],
        "dct:description": [{"@value": "Capas geográficas públicas de las secretarías del Municipio de Monterrey.", "@language": "es"}],
        "dct:publisher": {"@id": format!("{base}/#publisher"), "@type": "foaf:Agent", "foaf:name": CITY},
        "dct:language": {"@id": LANG_SPA},
        "foaf:homepage": {"@id": format!("{base}/")},
        "dcat:dataset": items,
    });
    if let Some(m) = modified {
        catalog["dct:modified"] = json!({"@value": m, "@type": "xsd:dateTime"});
    }
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "vcard": "http://www.w3.org/2006/vcard/ns#",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
            "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
            "locn": "http://www.w3.org/ns/locn#",
            "adms": "http://www.w3.org/ns/adms#",
            "gsp": "http://www.opengis.net/ont/geosparql#",
            "dqv": "http://www.w3.org/ns/dqv#",
        },
        "@graph": [catalog],
    })
}

fn lit(s: &str, lang: &str) -> Value {
    json!({"@value": s, "@language": lang.split('-').next().unwrap_or("es")})
}

fn ap_dataset(d: &Dataset<'_>, base: &str) -> Value {
    let m = d.meta;
    let url = collection_url(base, &m.id);
    let license = license_link(&m.license)
        .map(|l| json!({"@id": l}))
        .unwrap_or_else(|| json!({"@type": "dct:LicenseDocument", "rdfs:label": m.license}));
    let mut dists: Vec<Value> = crate::download::formats_for(m)
        .map(|f| {
            let mut x = json!({
                "@id": format!("{url}#dist-{}", f.param()),
                "@type": "dcat:Distribution",
                "dct:title": f.title(),
                "dcat:accessURL": {"@id": url},
                "dcat:downloadURL": {"@id": format!("{url}/items?f={}", f.param())},
                "dcat:mediaType": {"@id": format!("http://www.iana.org/assignments/media-types/{}", media_type(f))},
                "dct:license": license,
            });
            if let Some(t) = eu_file_type(f) {
                x["dct:format"] =
                    json!({"@id": format!("http://publications.europa.eu/resource/authority/file-type/{t}")});
            }
            x
        })
        .collect();
    dists.push(json!({
        "@id": format!("{url}#dist-ogcapi"),
        "@type": "dcat:Distribution",
        "dct:title": "OGC API – Features",
        "dcat:accessURL": {"@id": url},
        "dct:conformsTo": {"@id": "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"},
        "dcat:mediaType": {"@id": "http://www.iana.org/assignments/media-types/application/geo+json"},
        "dct:license": license,
    }));
    dists.push(json!({
        "@id": format!("{url}#dist-tiles"),
        "@type": "dcat:Distribution",
        "dct:title": "Mapbox Vector Tiles (TileJSON 3.0.0)",
        "dcat:accessURL": {"@id": format!("{base}/tiles/{}.json", m.id)},
        "dcat:mediaType": {"@id": "http://www.iana.org/assignments/media-types/application/vnd.mapbox-vector-tile"},
        "dct:license": license,
    }));
    let lang = &m.language;
    let mut contact = json!({"@type": "vcard:Kind", "vcard:fn": d.contact_name()});
    if let Some(e) = d.email() {
        contact["vcard:hasEmail"] = json!({"@id": format!("mailto:{e}")});
    }
    let mut x = json!({
        "@id": url,
        "@type": "dcat:Dataset",
        "dct:identifier": m.id,
        "dct:title": lit(&m.title, lang),
        "dct:description": lit(&d.description(), lang),
        "dcat:keyword": d.keywords().iter().map(|k| lit(k, lang)).collect::<Vec<_>>(),
        "dct:publisher": {"@id": format!("{base}/api/ministries#{}", m.ministry), "@type": "foaf:Agent", "foaf:name": d.publisher_name()},
        "dcat:contactPoint": contact,
        "dcat:landingPage": {"@id": format!("{url}?f=html")},
        "dct:modified": {"@value": m.created_at, "@type": "xsd:dateTime"},
        "dct:accessRights": {"@id": "http://publications.europa.eu/resource/authority/access-right/PUBLIC"},
        "dcat:distribution": dists,
    });
    if m.language.starts_with("es") {
        x["dct:language"] = json!({"@id": LANG_SPA});
    }
    if let Some(b) = m.bbox {
        x["dct:spatial"] = json!({
            "@type": "dct:Location",
            "dcat:bbox": {
                "@value": format!(
                    "POLYGON(({0} {1},{2} {1},{2} {3},{0} {3},{0} {1}))",
                    b[0], b[1], b[2], b[3]
                ),
                "@type": "gsp:wktLiteral",
            },
        });
    }
    if let Some((a, b)) = m.temporal.as_deref().and_then(|t| t.split_once('/')) {
        let typ = |s: &str| {
            if s.len() == 10 {
                "xsd:date"
            } else {
                "xsd:dateTime"
            }
        };
        x["dct:temporal"] = json!({
            "@type": "dct:PeriodOfTime",
            "dcat:startDate": {"@value": a, "@type": typ(a)},
            "dcat:endDate": {"@value": b, "@type": typ(b)},
        });
    }
    if let Some(f) = m.update_frequency.as_deref().and_then(eu_frequency) {
        x["dct:accrualPeriodicity"] = json!({"@id": format!("http://publications.europa.eu/resource/authority/frequency/{f}")});
    }
    if let Some(t) = &m.theme {
        x["dcat:theme"] = json!(lit(t, lang));
    }
    if let Some(i) = &d.issued {
        x["dct:issued"] = json!({"@value": i, "@type": "xsd:dateTime"});
    }
    x
}

/// One MQA criterion: points earned of points possible.
fn crit(name: &str, ok: bool, points: u32) -> (Value, u32) {
    (
        json!({"criterion": name, "met": ok, "points": if ok { points } else { 0 }, "max": points}),
        if ok { points } else { 0 },
    )
}

/// Metadata quality on the EU MQA dimensions (405 points): findability 100,
/// accessibility 100, interoperability 110, reusability 75, contextuality 20; bands
/// bad (0–120), sufficient (121–220), good (221–350), excellent (351–405).
///
/// What can only be measured on a live URL (access and download URLs answering 200)
/// is scored for the endpoints this service itself serves for the layer.
pub fn mqa(d: &Dataset<'_>) -> Value {
    let m = d.meta;
    let has = |s: &Option<String>| s.as_deref().is_some_and(|x| !x.trim().is_empty());
    let license_known = license_uri(&m.license).is_some();
    let dims: [(&str, Vec<(Value, u32)>); 5] = [
        (
            "findability",
            vec![
                crit("keywords", !m.keywords.is_empty(), 30),
                crit("categories (theme)", has(&m.theme), 30),
                crit("spatial coverage", m.bbox.is_some(), 20),
                crit("temporal coverage", has(&m.temporal), 20),
            ],
        ),
        (
            "accessibility",
            vec![
                crit("access URL answers", true, 50),
                crit("download URL given", true, 20),
                crit("download URL answers", true, 30),
            ],
        ),
        (
            "interoperability",
            vec![
                crit("format", true, 20),
                crit("media type", true, 10),
                crit("format from vocabulary", true, 10),
                crit("non-proprietary format", true, 20),
                crit("machine-readable format", true, 20),
                crit(
                    "DCAT-AP compliant (title, description, publisher, contact)",
                    !m.description.trim().is_empty() && d.email().is_some(),
                    30,
                ),
            ],
        ),
        (
            "reusability",
            vec![
                crit("licence", !m.license.trim().is_empty(), 20),
                crit("licence from vocabulary", license_known, 10),
                crit("access restrictions", true, 10),
                crit("access restrictions from vocabulary", true, 5),
                crit(
                    "contact point",
                    has(&m.contact_email) || has(&m.contact_name),
                    20,
                ),
                crit("publisher", d.ministry.is_some(), 10),
            ],
        ),
        (
            "contextuality",
            vec![
                crit("rights", !m.license.trim().is_empty(), 5),
                crit("file size", false, 5),
                crit("date of issue", d.issued.is_some(), 5),
                crit("modification date", !m.created_at.is_empty(), 5),
            ],
        ),
    ];
    let mut total = 0;
    let mut out = serde_json::Map::new();
    for (name, crits) in dims {
        let pts: u32 = crits.iter().map(|c| c.1).sum();
        let max: u32 = crits
            .iter()
            .map(|c| c.0["max"].as_u64().unwrap_or(0) as u32)
            .sum();
        total += pts;
        out.insert(
            name.into(),
            json!({"points": pts, "max": max, "criteria": crits.into_iter().map(|c| c.0).collect::<Vec<_>>()}),
        );
    }
    let band = match total {
        351.. => "excellent",
        221..=350 => "good",
        121..=220 => "sufficient",
        _ => "bad",
    };
    let band_es = match band {
        "excellent" => "excelente",
        "good" => "buena",
        "sufficient" => "suficiente",
        _ => "deficiente",
    };
    json!({
        "points": total,
        "max": 405,
        "band": band,
        "band_es": band_es,
        "dimensions": out,
        "note": "file size is not scored: downloads are generated on request; access and download URLs are this service's own endpoints",
        "public": m.access == Access::Public,
    })
}
