//! Geometry checks: features rejected at ingest (and why), geometries stored invalid
//! or repaired, Z/M and curves dropped, mixed geometry kinds, spikes and repeated
//! vertices found by the scan.

use super::*;

pub(super) fn checks(
    b: &mut Builder,
    meta: &LayerMeta,
    n: u64,
    spikes: Counted,
    dup_vertices: Counted,
) {
    let report = &meta.report;
    // Geometry, from the ingest report and the stored features.
    let rejected = report.features_rejected;
    if rejected > 0 {
        // The problems that made the ingest leave features out (rows of a join that
        // matched no zone among them).
        let why: Vec<(&String, &crate::quality::Problem)> = report
            .problems
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "empty_geometry" | "transform_failed" | "bad_coordinates" | "not_joined"
                )
            })
            .collect();
        let kinds: Vec<String> = why
            .iter()
            .map(|(k, p)| format!("{k}: {}", p.count))
            .collect();
        let ex: Vec<i64> = why
            .iter()
            .flat_map(|(_, p)| p.examples.iter().map(|e| e.feature))
            .collect();
        let read = report.features_read.max(1);
        let mut bb = Builder {
            n: read,
            checks: Vec::new(),
        };
        bb.add(
            "geometry.rejected",
            Severity::Error,
            rejected,
            ex,
            None,
            format!("{rejected} de {read} elementos de la fuente no se guardaron (sin geometría o coordenadas inválidas: {}); los ejemplos son números de elemento de la fuente", kinds.join(", ")),
            format!("{rejected} of {read} source features were not stored (no geometry or invalid coordinates: {}); examples are source feature numbers", kinds.join(", ")),
            Some("corrija o complete las coordenadas en la fuente / fix or fill in the coordinates at the source".into()),
        );
        b.checks.extend(bb.checks);
    }
    let from_report = |code: &str| report.problems.get(code);
    if let Some(p) = from_report("invalid_geometry_kept") {
        b.add(
            "geometry.invalid_kept",
            Severity::Error,
            p.count,
            p.examples.iter().map(|e| e.feature).collect(),
            None,
            format!("{} geometrías inválidas que no se pudieron reparar con seguridad (autointersección, anillos mal formados)", p.count),
            format!("{} invalid geometries that could not be repaired safely (self-intersection, malformed rings)", p.count),
            Some("corrija las geometrías en el SIG de origen (QGIS: Vector ▸ Herramientas de geometría ▸ Comprobar validez)".into()),
        );
    }
    if let Some(p) = from_report("invalid_geometry_repaired") {
        let detail = p
            .examples
            .first()
            .map(|e| e.detail.clone())
            .unwrap_or_default();
        b.add(
            "geometry.invalid_repaired",
            Severity::Warning,
            p.count,
            p.examples.iter().map(|e| e.feature).collect(),
            None,
            format!("{} geometrías inválidas (p. ej. {detail}) reparadas automáticamente; revise que la reparación conserva lo que representan", p.count),
            format!("{} invalid geometries (e.g. {detail}) repaired automatically; check the repair keeps what they represent", p.count),
            None,
        );
    }
    for (code, es, en) in [
        (
            "z_dropped",
            "valores Z (altura) descartados: la capa se guarda en 2D",
            "Z (height) values dropped: the layer is stored in 2D",
        ),
        (
            "m_dropped",
            "valores M (medida) descartados",
            "M (measure) values dropped",
        ),
    ] {
        if let Some(p) = from_report(code) {
            b.add(
                &format!("geometry.{code}"),
                Severity::Info,
                p.count,
                p.examples.iter().map(|e| e.feature).collect(),
                None,
                format!("{}: {es}", p.count),
                format!("{}: {en}", p.count),
                None,
            );
        }
    }
    let families: HashSet<&str> = meta
        .geometry_types
        .iter()
        .map(|t| t.trim_start_matches("Multi"))
        .collect();
    if families.len() > 1 {
        let mut f: Vec<&str> = families.into_iter().collect();
        f.sort_unstable();
        b.add(
            "geometry.mixed_types",
            Severity::Warning,
            n,
            Vec::new(),
            None,
            format!(
                "la capa mezcla tipos de geometría ({}): muchos SIG esperan un solo tipo por capa",
                f.join(", ")
            ),
            format!(
                "the layer mixes geometry types ({}): many GIS expect one type per layer",
                f.join(", ")
            ),
            Some("separe la fuente en una capa por tipo de geometría".into()),
        );
    }
    b.add(
        "geometry.spikes",
        Severity::Warning,
        spikes.0,
        spikes.1,
        None,
        format!(
            "{} geometrías con picos (el trazo regresa sobre sí mismo)",
            spikes.0
        ),
        format!(
            "{} geometries with spikes (the outline turns back on itself)",
            spikes.0
        ),
        None,
    );
    b.add(
        "geometry.duplicate_vertices",
        Severity::Warning,
        dup_vertices.0,
        dup_vertices.1,
        None,
        format!(
            "{} geometrías con vértices consecutivos repetidos",
            dup_vertices.0
        ),
        format!(
            "{} geometries with repeated consecutive vertices",
            dup_vertices.0
        ),
        None,
    );
}
