//! Location checks: features at 0,0, outside the region (with the likely cause:
//! swapped lon/lat, metres of a projected CRS) or outside the city's area (a note).

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn checks(
    b: &mut Builder,
    cfg: &DiagnoseConfig,
    report: &crate::quality::IngestReport,
    zero: Counted,
    outside_region: Counted,
    mut swapped: Counted,
    unexplained: Vec<(i64, f64, f64)>,
    outside_area: Counted,
) {
    // Location.
    let region = &cfg.region.name;
    let area = &cfg.area.name;
    if zero.0 > 0 {
        b.add(
            "location.zero_zero",
            Severity::Error,
            zero.0,
            zero.1,
            None,
            format!(
                "{} elementos en (0, 0): coordenadas de relleno, no ubicaciones reales",
                zero.0
            ),
            format!(
                "{} features at (0, 0): placeholder coordinates, not real locations",
                zero.0
            ),
            Some("capture las coordenadas faltantes o deje la geometría vacía".into()),
        );
    }
    // Rejected at ingest, with the reason the coordinates gave.
    if let Some(p) = report.problems.get("swapped_lat_lon") {
        swapped.0 += p.count;
        for e in &p.examples {
            push_ex(&mut swapped.1, e.feature);
        }
    }
    if let Some(p) = report.problems.get("projected_as_degrees") {
        let detail = p
            .examples
            .first()
            .map(|e| e.detail.clone())
            .unwrap_or_default();
        let code = detail
            .split("EPSG:")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or("n")
            .to_string();
        b.add(
            "location.projected_as_degrees",
            Severity::Error,
            p.count,
            p.examples.iter().map(|e| e.feature).collect(),
            None,
            format!("{} elementos traen metros de un sistema proyectado donde se esperaban grados (p. ej. {detail}); no se guardaron", p.count),
            format!("{} features carry metres of a projected CRS where degrees were expected (e.g. {detail}); they were not stored", p.count),
            Some(format!("vuelva a cargar con --crs EPSG:{code}")),
        );
    }
    if swapped.0 > 0 {
        b.add(
            "location.swapped_lat_lon",
            Severity::Error,
            swapped.0,
            swapped.1,
            None,
            format!("{} elementos con latitud y longitud intercambiadas (intercambiadas caen en {region})", swapped.0),
            format!("{} features with latitude and longitude swapped (swapped back they fall in {region})", swapped.0),
            Some("intercambie las columnas de longitud y latitud (x = longitud, y = latitud) / swap the lon and lat columns".into()),
        );
    }
    let mut crs_fix = None;
    if let Some(&(_, x, y)) = unexplained.first() {
        // Stored lon/lat that came from a projected source declared wrongly cannot be
        // undone here, but a layer in the wrong place says so.
        let c = crs_candidates(x, y, &cfg.region);
        crs_fix = c
            .first()
            .map(|(code, name)| format!("--crs EPSG:{code} ({name})"));
    }
    b.add(
        "location.outside_region",
        Severity::Error,
        outside_region.0,
        outside_region.1,
        None,
        format!(
            "{} elementos fuera de {region}{}",
            outside_region.0,
            if unexplained.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} sin causa evidente: ¿el sistema de coordenadas declarado es el correcto?",
                    unexplained.len()
                )
            }
        ),
        format!(
            "{} features outside {region}{}",
            outside_region.0,
            if unexplained.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} without an obvious cause: is the declared coordinate system right?",
                    unexplained.len()
                )
            }
        ),
        crs_fix.map(|c| format!("vuelva a cargar con {c}")),
    );
    // Inside the region but beyond the city: the state's municipalities, a regional
    // road. Worth knowing, not a defect.
    b.add(
        "location.outside_area",
        Severity::Info,
        outside_area.0,
        outside_area.1,
        None,
        format!(
            "{} elementos fuera de {area} (dentro de {region})",
            outside_area.0
        ),
        format!(
            "{} features outside {area} (inside {region})",
            outside_area.0
        ),
        None,
    );
}
