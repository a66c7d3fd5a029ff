//! The quality reports people read: one layer version's diagnosis (JSON and an HTML
//! page), and the city-wide report the Secretariat takes to each ministry (every layer
//! grouped by ministry with grade, score, top issues, size, last update and use; totals
//! per ministry; JSON, CSV and HTML). Pure functions of the stored records; the
//! diagnosis itself is computed in `layers::diagnose`.

use std::collections::BTreeMap;

use layers::diagnose::{Diagnosis, Grade, Severity};
use layers::store::LayerMeta;
use serde_json::{json, Value};

use crate::download::csv_field;
use crate::ogc::html::{esc, page};

/// One layer version's report as JSON.
pub fn layer_json(m: &LayerMeta, d: &Diagnosis, usage: Option<&Value>, base: &str) -> Value {
    json!({
        "layer": m.id,
        "version": m.version,
        "title": m.title,
        "ministry": m.ministry,
        "features": m.feature_count,
        "updated": m.created_at,
        "source_file": m.source_file,
        "grade": d.grade,
        "grade_es": d.grade.label_es(),
        "grade_en": d.grade.label_en(),
        "score": d.score,
        "diagnosis": d,
        "usage": usage.cloned().unwrap_or(json!({"total": 0})),
        "links": [
            {"rel": "self", "href": format!("{base}/api/layers/{}/quality?version={}", m.id, m.version), "type": "application/json"},
            {"rel": "alternate", "href": format!("{base}/api/layers/{}/quality?version={}&f=html", m.id, m.version), "type": "text/html"},
            {"rel": "collection", "href": format!("{base}/collections/{}", m.id), "type": "application/json"},
        ],
    })
}

fn grade_badge(g: Grade) -> String {
    let (bg, fg) = match g {
        Grade::Usable => ("#1b7837", "#fff"),
        Grade::UsableWithCaveats => ("#fdb863", "#1a1a1a"),
        Grade::NotUsable => ("#b2182b", "#fff"),
    };
    format!(
        "<span style=\"background:{bg};color:{fg};padding:.1rem .5rem;border-radius:.3rem\">{} / {}</span>",
        g.label_es(),
        g.label_en()
    )
}

/// One layer version's report as an HTML page: the problems first, worst first.
pub fn layer_html(m: &LayerMeta, d: &Diagnosis, usage: Option<&Value>) -> String {
    let mut b = String::new();
    b.push_str(&format!(
        "<p>{} — <strong>{}/100</strong></p><p class=\"muted\">{} v{} · {} · {} elementos / features · actualizada / updated {} · {}</p>",
        grade_badge(d.grade),
        d.score,
        esc(&m.id),
        m.version,
        esc(&m.ministry),
        m.feature_count,
        esc(&m.created_at),
        esc(&m.source_file)
    ));
    if let Some(u) = usage {
        b.push_str(&format!(
            "<p>Uso en {} días / use in {} days: <strong>{}</strong> solicitudes / requests {}</p>",
            u["days"],
            u["days"],
            u["total"],
            esc(&u["by_kind"].to_string())
        ));
    }
    b.push_str(&format!(
        "<p>Decide / decided by: {}</p>",
        esc(&d.reasons.join(", "))
    ));
    b.push_str("<table><thead><tr><th scope=\"col\">gravedad / severity</th><th scope=\"col\">problema / problem</th><th scope=\"col\">elementos / features</th><th scope=\"col\">puntos / points</th><th scope=\"col\">corrección / fix</th><th scope=\"col\">ejemplos (id)</th></tr></thead><tbody>");
    for c in &d.checks {
        let sev = match c.severity {
            Severity::Error => "error",
            Severity::Warning => "aviso / warning",
            Severity::Info => "info",
        };
        let ex: Vec<String> = c
            .examples
            .iter()
            .map(|id| {
                format!(
                    "<a href=\"/collections/{}/items/{id}\">{id}</a>",
                    esc(&m.id)
                )
            })
            .collect();
        b.push_str(&format!(
            "<tr><td>{sev}{}</td><td>{}<br><span class=\"muted\" lang=\"en\">{}</span><br><code>{}</code></td><td>{} ({:.1}%)</td><td>-{}</td><td>{}</td><td>{}</td></tr>",
            if c.blocking { " <strong>(bloquea / blocks)</strong>" } else { "" },
            esc(&c.message_es),
            esc(&c.message_en),
            esc(&c.code),
            c.count,
            c.share * 100.0,
            c.penalty,
            esc(c.fix.as_deref().unwrap_or("")),
            ex.join(", ")
        ));
    }
    b.push_str("</tbody></table><h2>Campos / fields</h2><table><thead><tr><th scope=\"col\">campo / field</th><th scope=\"col\">tipo / type</th><th scope=\"col\">vacío / missing</th><th scope=\"col\">valores distintos / distinct</th></tr></thead><tbody>");
    for f in &d.fields {
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}{}</td></tr>",
            esc(&f.name),
            esc(&f.ftype),
            f.missing_share * 100.0,
            f.distinct,
            if f.distinct_capped { "+" } else { "" }
        ));
    }
    b.push_str(&format!(
        "</tbody></table><p class=\"muted\">Área esperada / expected area: {} · región / region: {} · calculado / computed {} · <a href=\"?version={}&amp;f=json\">JSON</a> · <a href=\"/api/quality?f=html\">informe de la ciudad / city report</a></p>",
        esc(&d.area.name),
        esc(&d.region.name),
        esc(&d.computed_at),
        m.version
    ));
    page(
        &format!("Calidad / quality: {}", m.title),
        &[
            ("DataHub", "/".into()),
            ("calidad / quality", "/api/quality?f=html".into()),
        ],
        &b,
    )
}

/// A layer's line in the city-wide report.
fn layer_row(m: &LayerMeta, d: Option<&Diagnosis>, usage: Option<&Value>) -> Value {
    let top: Vec<&str> = d
        .map(|d| {
            d.checks
                .iter()
                .filter(|c| c.penalty > 0)
                .take(3)
                .map(|c| c.message_es.as_str())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "layer": m.id,
        "title": m.title,
        "version": m.version,
        "features": m.feature_count,
        "updated": m.created_at,
        "grade": d.map(|d| d.grade),
        "score": d.map(|d| d.score),
        "top_issues": top,
        "use_30d": usage.map_or(0, |u| u["total"].as_u64().unwrap_or(0)),
        "use_by_kind": usage.map_or(json!({}), |u| u["by_kind"].clone()),
        "last_used": usage.and_then(|u| u["last_used"].as_str().map(str::to_string)),
    })
}

/// The city-wide report: ministries (alphabetical) with their layers and totals.
pub fn city_json(metas: &[LayerMeta], usage: &BTreeMap<String, Value>) -> Value {
    let mut by: BTreeMap<&str, Vec<&LayerMeta>> = BTreeMap::new();
    for m in metas {
        by.entry(m.ministry.as_str()).or_default().push(m);
    }
    let mut totals = json!({"layers": 0, "usable": 0, "usable_with_caveats": 0, "not_usable": 0, "not_diagnosed": 0});
    let ministries: Vec<Value> = by
        .into_iter()
        .map(|(ministry, mut ls)| {
            ls.sort_by(|a, b| a.id.cmp(&b.id));
            let mut t = BTreeMap::from([
                ("usable", 0u64),
                ("usable_with_caveats", 0),
                ("not_usable", 0),
                ("not_diagnosed", 0),
            ]);
            for m in &ls {
                let k = match m.diagnosis.as_ref().map(|d| d.grade) {
                    Some(Grade::Usable) => "usable",
                    Some(Grade::UsableWithCaveats) => "usable_with_caveats",
                    Some(Grade::NotUsable) => "not_usable",
                    None => "not_diagnosed",
                };
                *t.entry(k).or_default() += 1;
            }
            for (k, v) in &t {
                totals[*k] = json!(totals[*k].as_u64().unwrap_or(0) + v);
            }
            totals["layers"] = json!(totals["layers"].as_u64().unwrap_or(0) + ls.len() as u64);
            let summary = format!(
                "{ministry}: {} capas, {} utilizables, {} con reservas, {} no utilizables",
                ls.len(),
                t["usable"],
                t["usable_with_caveats"],
                t["not_usable"]
            );
            json!({
                "ministry": ministry,
                "layers": ls.len(),
                "usable": t["usable"],
                "usable_with_caveats": t["usable_with_caveats"],
                "not_usable": t["not_usable"],
                "not_diagnosed": t["not_diagnosed"],
                "summary_es": summary,
                "items": ls.iter().map(|m| layer_row(m, m.diagnosis.as_ref(), usage.get(&m.id))).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"totals": totals, "usage_days": 30, "ministries": ministries})
}

/// The city-wide report as CSV: one row per layer.
pub fn city_csv(doc: &Value) -> String {
    let mut s = String::from(
        "ministry,layer,title,version,features,updated,grade,score,top_issues,use_30d,last_used\r\n",
    );
    for m in doc["ministries"].as_array().into_iter().flatten() {
        for l in m["items"].as_array().into_iter().flatten() {
            let top: Vec<&str> = l["top_issues"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let cells = [
                m["ministry"].as_str().unwrap_or("").to_string(),
                l["layer"].as_str().unwrap_or("").to_string(),
                l["title"].as_str().unwrap_or("").to_string(),
                l["version"].to_string(),
                l["features"].to_string(),
                l["updated"].as_str().unwrap_or("").to_string(),
                l["grade"].as_str().unwrap_or("").to_string(),
                l["score"]
                    .as_u64()
                    .map(|x| x.to_string())
                    .unwrap_or_default(),
                top.join(" | "),
                l["use_30d"].to_string(),
                l["last_used"].as_str().unwrap_or("").to_string(),
            ];
            let row: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
            s.push_str(&row.join(","));
            s.push_str("\r\n");
        }
    }
    s
}

/// The city-wide report as an HTML page.
pub fn city_html(doc: &Value) -> String {
    let t = &doc["totals"];
    let mut b = format!(
        "<p>{} capas / layers: <strong>{}</strong> utilizables / usable, <strong>{}</strong> con reservas / with caveats, <strong>{}</strong> no utilizables / not usable. <a href=\"/api/quality?f=csv\">CSV</a> · <a href=\"/api/quality?f=json\">JSON</a></p>",
        t["layers"], t["usable"], t["usable_with_caveats"], t["not_usable"]
    );
    for m in doc["ministries"].as_array().into_iter().flatten() {
        b.push_str(&format!(
            "<h2>{}</h2><p>{}</p><table><thead><tr><th scope=\"col\">capa / layer</th><th scope=\"col\">calificación / grade</th><th scope=\"col\">puntaje</th><th scope=\"col\">principales problemas / top issues</th><th scope=\"col\">elementos</th><th scope=\"col\">actualizada</th><th scope=\"col\">uso 30 días / use</th></tr></thead><tbody>",
            esc(m["ministry"].as_str().unwrap_or("")),
            esc(m["summary_es"].as_str().unwrap_or(""))
        ));
        for l in m["items"].as_array().into_iter().flatten() {
            let id = l["layer"].as_str().unwrap_or("");
            let grade = serde_json::from_value::<Grade>(l["grade"].clone())
                .map(grade_badge)
                .unwrap_or_else(|_| "sin diagnóstico / not diagnosed".into());
            let top: Vec<String> = l["top_issues"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(esc)
                .collect();
            b.push_str(&format!(
                "<tr><td><a href=\"/api/layers/{}/quality?f=html\">{}</a><br><span class=\"muted\">{}</span></td><td>{grade}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(id),
                esc(l["title"].as_str().unwrap_or("")),
                esc(id),
                l["score"],
                top.join("<br>"),
                l["features"],
                esc(l["updated"].as_str().unwrap_or("")),
                l["use_30d"]
            ));
        }
        b.push_str("</tbody></table>");
    }
    page(
        "Calidad de los datos de la ciudad / city data quality",
        &[("DataHub", "/".into())],
        &b,
    )
}
