//! HTML renderings of the OGC API resources, so a person can browse the API with a
//! browser: landing page, conformance, collections, one collection, items (with a
//! preview map drawn as inline SVG: no script, no CDN) and one feature, and the API
//! documentation. Spanish first, English after the slash. Every value is escaped.

use serde_json::Value;

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1a1a1a;background:#fff}\
header{background:#5b1a2e;color:#fff;padding:.6rem 1rem}header a{color:#fff}\
main{padding:1rem;max-width:72rem}nav.crumbs{font-size:.9rem;margin-bottom:.5rem}\
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;\
text-align:left;vertical-align:top}th{background:#f0f0f0}a{color:#0b4f8a}\
code{background:#f4f4f4;padding:0 .2rem}svg.preview{border:1px solid #bbb;background:#f8f8f4}\
.muted{color:#555}";

/// A complete page. `crumbs`: (label, href) from the landing page down.
pub fn page(title: &str, crumbs: &[(&str, String)], body: &str) -> String {
    let nav: Vec<String> = crumbs
        .iter()
        .map(|(label, href)| format!("<a href=\"{}\">{}</a>", esc(href), esc(label)))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"es\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>{t} – Monterrey DataHub</title><style>{STYLE}</style></head>\
         <body><header><strong><a href=\"/\">Monterrey DataHub</a></strong></header><main>\
         <nav class=\"crumbs\" aria-label=\"ruta\">{nav}</nav><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
        nav = nav.join(" / "),
    )
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn links_list(doc: &Value) -> String {
    let mut o = String::from("<ul>");
    for l in doc["links"].as_array().into_iter().flatten() {
        o.push_str(&format!(
            "<li><a href=\"{}\">{}</a> <span class=\"muted\">({}, {})</span></li>",
            esc(s(l, "href")),
            esc(s(l, "title")),
            esc(s(l, "rel")),
            esc(s(l, "type"))
        ));
    }
    o.push_str("</ul>");
    o
}

fn home(base: &str) -> (&'static str, String) {
    ("Inicio / Home", format!("{base}/?f=html"))
}

pub fn landing(doc: &Value, base: &str) -> String {
    let body = format!(
        "<p>{}</p><h2>Enlaces / Links</h2>{}",
        esc(s(doc, "description")),
        links_list(doc)
    );
    page(s(doc, "title"), &[home(base)], &body)
}

pub fn conformance(doc: &Value, base: &str) -> String {
    let mut body = String::from("<ul>");
    for c in doc["conformsTo"].as_array().into_iter().flatten() {
        let c = c.as_str().unwrap_or("");
        body.push_str(&format!("<li><a href=\"{0}\">{0}</a></li>", esc(c)));
    }
    body.push_str("</ul>");
    page("Conformidad / Conformance", &[home(base)], &body)
}

pub fn collections(doc: &Value, base: &str) -> String {
    let mut body = String::from(
        "<table><tr><th>Capa / Layer</th><th>Secretaría / Ministry</th>\
         <th>Elementos / Features</th><th>Geometría / Geometry</th><th>Versión</th></tr>",
    );
    for c in doc["collections"].as_array().into_iter().flatten() {
        let id = s(c, "id");
        body.push_str(&format!(
            "<tr><td><a href=\"{base}/collections/{}?f=html\">{}</a><br><code>{}</code>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(id),
            esc(s(c, "title")),
            esc(id),
            if c["synthetic"].as_bool() == Some(true) {
                " <em>(datos sintéticos / synthetic data)</em>"
            } else {
                ""
            },
            esc(s(c, "ministry")),
            c["count"].as_u64().unwrap_or(0),
            esc(&join_strs(&c["geometryTypes"])),
            c["version"].as_u64().unwrap_or(0),
        ));
    }
    body.push_str("</table>");
    page(
        "Colecciones / Collections",
        &[
            home(base),
            ("Colecciones", format!("{base}/collections?f=html")),
        ],
        &body,
    )
}

fn join_strs(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn collection(doc: &Value, queryables: &Value, base: &str) -> String {
    let id = s(doc, "id");
    let mut body = format!("<p>{}</p><table>", esc(s(doc, "description")));
    let row = |k: &str, v: String| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
    body.push_str(&row(
        "Identificador / Id",
        format!("<code>{}</code>", esc(id)),
    ));
    body.push_str(&row("Secretaría / Ministry", esc(s(doc, "ministry"))));
    body.push_str(&row(
        "Elementos / Features",
        doc["count"].as_u64().unwrap_or(0).to_string(),
    ));
    body.push_str(&row(
        "Geometría / Geometry",
        esc(&join_strs(&doc["geometryTypes"])),
    ));
    if let Some(b) = doc["extent"]["spatial"]["bbox"][0].as_array() {
        let nums: Vec<String> = b.iter().map(|x| x.to_string()).collect();
        body.push_str(&row("Extensión / Extent (CRS84)", esc(&nums.join(", "))));
    }
    if let Some(t) = doc["extent"]["temporal"]["interval"][0].as_array() {
        let a: Vec<&str> = t.iter().filter_map(Value::as_str).collect();
        body.push_str(&row("Periodo / Temporal extent", esc(&a.join(" – "))));
    }
    body.push_str(&row("SRC de origen / Source CRS", esc(s(doc, "sourceCrs"))));
    body.push_str(&row(
        "Versión / Version",
        format!(
            "{} ({})",
            doc["version"].as_u64().unwrap_or(0),
            esc(s(doc, "updated"))
        ),
    ));
    body.push_str(&row("SRC disponibles / CRSs", esc(&join_strs(&doc["crs"]))));
    body.push_str(
        "</table><h2>Atributos consultables / Queryables</h2><table>\
                   <tr><th>Nombre / Name</th><th>Tipo / Type</th></tr>",
    );
    if let Some(props) = queryables["properties"].as_object() {
        for (name, p) in props {
            let t = match (s(p, "type"), s(p, "format")) {
                ("", f) => f.to_string(),
                (t, "") => t.to_string(),
                (t, f) => format!("{t} ({f})"),
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(name),
                esc(&t)
            ));
        }
    }
    body.push_str("</table><h2>Enlaces / Links</h2>");
    body.push_str(&links_list(doc));
    page(
        s(doc, "title"),
        &[
            home(base),
            ("Colecciones", format!("{base}/collections?f=html")),
            (id, format!("{base}/collections/{id}?f=html")),
        ],
        &body,
    )
}

/// A GeoJSON value shown in a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

/// The map drawn above features: MapLibre GL JS (served by DataHub from `web/`),
/// an SVG drawing when MapLibre is not installed, none for projected output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preview {
    MapLibre,
    Svg,
    None,
}

fn preview(feats: &[Value], kind: Preview, base: &str) -> String {
    match kind {
        Preview::None => String::new(),
        Preview::Svg => svg_preview(feats),
        Preview::MapLibre => maplibre_preview(feats, base),
    }
}

/// A small MapLibre map of the features, offline: a plain background and the
/// features themselves (points, lines, fills), fitted to their extent.
fn maplibre_preview(feats: &[Value], base: &str) -> String {
    let Some(b) = bounds(feats) else {
        return String::new();
    };
    let fc = serde_json::json!({"type": "FeatureCollection", "features": feats});
    // Inline JSON in a script element: no '<' at all (it only occurs inside JSON
    // strings, where \u003c means the same), so nothing can close or confuse it.
    let data = fc.to_string().replace('<', "\\u003c");
    format!(
        "<link rel=\"stylesheet\" href=\"{base}/web/maplibre/maplibre-gl.css\">\
         <div id=\"map\" style=\"width:100%;max-width:720px;height:360px;border:1px solid #bbb\" \
         role=\"img\" aria-label=\"Mapa de vista previa / preview map\"></div>\
         <script src=\"{base}/web/maplibre/maplibre-gl.js\"></script>\
         <script type=\"application/json\" id=\"features\">{data}</script>\
         <script>\
         const fc = JSON.parse(document.getElementById('features').textContent);\
         const map = window.previewMap = new maplibregl.Map({{container: 'map', attributionControl: false,\
           bounds: [[{w}, {s}], [{e}, {n}]], fitBoundsOptions: {{padding: 24, maxZoom: 17}},\
           style: {{version: 8, sources: {{f: {{type: 'geojson', data: fc}}}}, layers: [\
             {{id: 'bg', type: 'background', paint: {{'background-color': '#f8f8f4'}}}},\
             {{id: 'fill', type: 'fill', source: 'f', filter: ['==', ['geometry-type'], 'Polygon'],\
               paint: {{'fill-color': '#2e86c1', 'fill-opacity': 0.35}}}},\
             {{id: 'line', type: 'line', source: 'f', filter: ['!=', ['geometry-type'], 'Point'],\
               paint: {{'line-color': '#1b4f72', 'line-width': 1.5}}}},\
             {{id: 'pt', type: 'circle', source: 'f', filter: ['==', ['geometry-type'], 'Point'],\
               paint: {{'circle-color': '#c0392b', 'circle-radius': 4, 'circle-stroke-color': '#fff', 'circle-stroke-width': 1}}}}\
           ]}}}});\
         map.addControl(new maplibregl.NavigationControl());\
         </script>",
        w = b[0],
        s = b[1],
        e = b[2],
        n = b[3],
    )
}

/// Items page: preview, paging links, and a table of the features' properties.
pub fn items(fc: &Value, title: &str, id: &str, base: &str, map: Preview) -> String {
    let feats = fc["features"].as_array().cloned().unwrap_or_default();
    let mut body = format!(
        "<p>{} de {} elementos / {} of {} features.</p>",
        fc["numberReturned"].as_u64().unwrap_or(0),
        fc["numberMatched"].as_u64().unwrap_or(0),
        fc["numberReturned"].as_u64().unwrap_or(0),
        fc["numberMatched"].as_u64().unwrap_or(0),
    );
    body.push_str(&preview(&feats, map, base));
    let mut nav = Vec::new();
    for l in fc["links"].as_array().into_iter().flatten() {
        let label = match s(l, "rel") {
            "prev" => "← Anterior / Previous",
            "next" => "Siguiente / Next →",
            "alternate" => "GeoJSON",
            _ => continue,
        };
        nav.push(format!("<a href=\"{}\">{label}</a>", esc(s(l, "href"))));
    }
    body.push_str(&format!("<p>{}</p>", nav.join(" · ")));
    let mut keys: Vec<String> = Vec::new();
    for f in &feats {
        for k in f["properties"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
        {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    body.push_str("<table><tr><th>id</th>");
    for k in &keys {
        body.push_str(&format!("<th>{}</th>", esc(k)));
    }
    body.push_str("</tr>");
    for f in &feats {
        let fid = match &f["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        body.push_str(&format!(
            "<tr><td><a href=\"{base}/collections/{}/items/{}?f=html\">{}</a></td>",
            esc(id),
            esc(&fid),
            esc(&fid)
        ));
        for k in &keys {
            body.push_str(&format!("<td>{}</td>", cell(&f["properties"][k])));
        }
        body.push_str("</tr>");
    }
    body.push_str("</table>");
    page(
        &format!("{title}: elementos / features"),
        &[
            home(base),
            ("Colecciones", format!("{base}/collections?f=html")),
            (id, format!("{base}/collections/{id}?f=html")),
            ("items", format!("{base}/collections/{id}/items?f=html")),
        ],
        &body,
    )
}

pub fn item(f: &Value, title: &str, id: &str, base: &str, map: Preview) -> String {
    let fid = match &f["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut body = String::new();
    body.push_str(&preview(std::slice::from_ref(f), map, base));
    body.push_str("<table>");
    for (k, v) in f["properties"].as_object().into_iter().flatten() {
        body.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), cell(v)));
    }
    body.push_str(&format!(
        "</table><p><a href=\"{base}/collections/{}/items/{}?f=json\">GeoJSON</a></p>",
        esc(id),
        esc(&fid)
    ));
    page(
        &format!("{title} #{fid}"),
        &[
            home(base),
            ("Colecciones", format!("{base}/collections?f=html")),
            (id, format!("{base}/collections/{id}?f=html")),
            ("items", format!("{base}/collections/{id}/items?f=html")),
        ],
        &body,
    )
}

/// The API documentation, from the OpenAPI document itself (so the two cannot
/// disagree).
pub fn api(doc: &Value, base: &str) -> String {
    let mut body = format!(
        "<p>{}</p><p>Definición / Definition: <a href=\"{base}/api\">OpenAPI 3.0 (JSON)</a></p>",
        esc(s(&doc["info"], "description"))
    );
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            body.push_str(&format!(
                "<h2><code>{} {}</code></h2><p>{}</p>",
                esc(&method.to_uppercase()),
                esc(path),
                esc(s(op, "summary"))
            ));
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if params.is_empty() {
                continue;
            }
            body.push_str("<table><tr><th>Parámetro</th><th>En / In</th><th>Descripción</th></tr>");
            for p in params {
                let p = match p["$ref"].as_str() {
                    Some(r) => {
                        let name = r.rsplit('/').next().unwrap_or("");
                        doc["components"]["parameters"][name].clone()
                    }
                    None => p,
                };
                body.push_str(&format!(
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    esc(s(&p, "name")),
                    esc(s(&p, "in")),
                    esc(s(&p, "description"))
                ));
            }
            body.push_str("</table>");
        }
    }
    page("API", &[home(base)], &body)
}

/// A small map of the features as inline SVG (equirectangular, scaled by the cosine
/// of the latitude so shapes are not stretched).
fn svg_preview(feats: &[Value]) -> String {
    let Some(b) = bounds(feats) else {
        return String::new();
    };
    let geoms: Vec<&Value> = feats.iter().map(|f| &f["geometry"]).collect();
    let (w, h) = (480.0, 320.0);
    let k = ((b[1] + b[3]) / 2.0).to_radians().cos().max(0.1);
    let dx = ((b[2] - b[0]) * k).max(1e-9);
    let dy = (b[3] - b[1]).max(1e-9);
    let scale = ((w - 20.0) / dx).min((h - 20.0) / dy);
    let px = |x: f64, y: f64| (10.0 + (x - b[0]) * k * scale, h - 10.0 - (y - b[1]) * scale);
    let mut out = format!(
        "<svg class=\"preview\" role=\"img\" aria-label=\"Vista previa / preview\" \
         width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    for g in geoms {
        let t = g["type"].as_str().unwrap_or("");
        let c = &g["coordinates"];
        match t {
            "Point" | "MultiPoint" => walk_coords(c, &mut |x, y| {
                let (a, b) = px(x, y);
                out.push_str(&format!(
                    "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3\" fill=\"#c0392b\"/>"
                ));
            }),
            "LineString" | "MultiLineString" | "Polygon" | "MultiPolygon" => {
                let mut d = String::new();
                rings(c, &mut |ring| {
                    for (i, p) in ring.iter().enumerate() {
                        let (x, y) = (p[0].as_f64().unwrap_or(0.0), p[1].as_f64().unwrap_or(0.0));
                        let (a, b) = px(x, y);
                        d.push_str(&format!("{}{a:.1},{b:.1} ", if i == 0 { "M" } else { "L" }));
                    }
                    if t.ends_with("Polygon") {
                        d.push('Z');
                    }
                });
                let fill = if t.ends_with("Polygon") {
                    "fill=\"#2e86c1\" fill-opacity=\"0.35\" fill-rule=\"evenodd\""
                } else {
                    "fill=\"none\""
                };
                out.push_str(&format!(
                    "<path d=\"{d}\" {fill} stroke=\"#1b4f72\" stroke-width=\"1\"/>"
                ));
            }
            _ => {}
        }
    }
    out.push_str("</svg>");
    out
}

/// [min x, min y, max x, max y] of the features' coordinates; `None` when they have none.
fn bounds(feats: &[Value]) -> Option<[f64; 4]> {
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for f in feats {
        walk_coords(&f["geometry"]["coordinates"], &mut |x, y| {
            b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
        });
    }
    (b[0] <= b[2]).then_some(b)
}

fn walk_coords(v: &Value, f: &mut dyn FnMut(f64, f64)) {
    if let Some(a) = v.as_array() {
        if let (Some(x), Some(y)) = (
            a.first().and_then(Value::as_f64),
            a.get(1).and_then(Value::as_f64),
        ) {
            f(x, y);
        } else {
            for c in a {
                walk_coords(c, f);
            }
        }
    }
}

/// Calls `f` with every innermost position array (a ring or a line).
fn rings(v: &Value, f: &mut dyn FnMut(&Vec<Value>)) {
    if let Some(a) = v.as_array() {
        if a.first()
            .and_then(|p| p.as_array())
            .and_then(|p| p.first())
            .is_some_and(Value::is_number)
        {
            f(a);
        } else {
            for c in a {
                rings(c, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_everything_it_prints() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        let fc = json!({"type": "FeatureCollection", "numberMatched": 1, "numberReturned": 1,
            "features": [{"type": "Feature", "id": 1, "geometry": {"type": "Polygon",
              "coordinates": [[[-100.3, 25.6], [-100.2, 25.6], [-100.2, 25.7], [-100.3, 25.6]]]},
              "properties": {"nombre": "<script>alert(1)</script>"}}], "links": []});
        let h = items(&fc, "Colonias", "colonias", "http://x", Preview::Svg);
        assert!(!h.contains("<script>alert"));
        assert!(h.contains("&lt;script&gt;"));
        assert!(h.contains("<svg") && h.contains("<path"));
        // The MapLibre preview embeds the features as JSON that cannot close its
        // script element.
        let h = items(&fc, "Colonias", "colonias", "http://x", Preview::MapLibre);
        assert!(!h.contains("<script>alert") && !h.contains("</script>alert"));
        assert!(h.contains("\\u003cscript>alert"));
        assert!(h.contains("maplibre-gl.js") && h.contains("new maplibregl.Map"));
    }
}
