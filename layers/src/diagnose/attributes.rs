//! Attribute checks, field by field: mojibake, repeated identifiers, numbers or dates
//! stored as text, codes stored as numbers, mixed date formats, spellings of one
//! value, values out of range, empty and constant fields, incomplete fields; and the
//! profile of each field.

use super::*;

pub(super) fn checks(
    b: &mut Builder,
    schema: &[crate::fgb::Field],
    acc: &mut [FieldAcc],
    n: u64,
) -> Vec<FieldProfile> {
    // Attributes.
    let mut fields = Vec::new();
    let mut incomplete: Vec<(String, f64)> = Vec::new();
    for (f, a) in schema.iter().zip(acc.iter_mut()) {
        let present = n - a.missing.min(n);
        let missing_share = if n == 0 {
            0.0
        } else {
            a.missing as f64 / n as f64
        };
        fields.push(FieldProfile {
            name: f.name.clone(),
            ftype: f.ftype.json_type().into(),
            missing_share,
            distinct: a.distinct_len() as u64,
            distinct_capped: a.capped,
        });
        let name = f.name.as_str();
        if n > 0 && present == 0 {
            b.add(
                "attributes.empty_field",
                Severity::Warning,
                n,
                Vec::new(),
                Some(name),
                format!("el campo «{name}» está vacío en todos los elementos"),
                format!("field '{name}' is empty in every feature"),
                None,
            );
            continue;
        }
        if missing_share >= 0.05 {
            incomplete.push((name.to_string(), missing_share));
        }
        if present >= 2 && a.distinct_len() == 1 && !a.capped {
            b.add(
                "attributes.constant_field",
                Severity::Info,
                present,
                Vec::new(),
                Some(name),
                format!("el campo «{name}» tiene el mismo valor en todos los elementos"),
                format!("field '{name}' has the same value in every feature"),
                None,
            );
        }
        if a.dup_id_count > 0 {
            b.add(
                "attributes.non_unique_id",
                Severity::Error,
                a.dup_id_count,
                std::mem::take(&mut a.dup_ids),
                Some(name),
                format!(
                    "el identificador «{name}» se repite en {} elementos",
                    a.dup_id_count
                ),
                format!("identifier '{name}' repeats in {} features", a.dup_id_count),
                Some("asigne un identificador único a cada registro".into()),
            );
        }
        if a.mojibake_count > 0 {
            b.add(
                "attributes.mojibake",
                Severity::Error,
                a.mojibake_count,
                std::mem::take(&mut a.mojibake),
                Some(name),
                format!("«{name}»: {} textos con caracteres dañados (p. ej. «Ã±» en lugar de «ñ»): la codificación se leyó mal", a.mojibake_count),
                format!("'{name}': {} texts with broken characters (e.g. 'Ã±' for 'ñ'): the encoding was read wrongly", a.mojibake_count),
                Some("exporte la fuente en UTF-8, o declare su codificación (.cpg del Shapefile)".into()),
            );
        }
        if matches!(f.ftype, FieldType::Int | FieldType::Long) && a.numbers.len() >= 2 {
            code_as_number(b, name, &a.numbers);
        }
        if f.ftype == FieldType::String && a.text_values >= 5 {
            let tv = a.text_values as f64;
            // Codes (CVEGEO "19039", folios, postal codes) are text on purpose: by their
            // name, their fixed width or their leading zeros.
            let code = crate::table::looks_like_code(name)
                || (a.numeric_text == a.text_values && a.numeric_len.0 == a.numeric_len.1);
            if a.numeric_text as f64 >= 0.9 * tv && a.leading_zero == 0 && !code {
                b.add(
                    "attributes.numbers_as_text",
                    Severity::Warning,
                    a.numeric_text,
                    Vec::new(),
                    Some(name),
                    format!("«{name}» guarda números como texto: no se puede sumar ni promediar"),
                    format!("'{name}' stores numbers as text: it cannot be summed or averaged"),
                    Some(format!("defina «{name}» como campo numérico en la fuente")),
                );
            } else if a.date_text as f64 >= 0.9 * tv {
                b.add(
                    "attributes.dates_as_text",
                    Severity::Warning,
                    a.date_text,
                    Vec::new(),
                    Some(name),
                    format!("«{name}» guarda fechas como texto"),
                    format!("'{name}' stores dates as text"),
                    Some(format!("defina «{name}» como campo de fecha (AAAA-MM-DD)")),
                );
            }
            if a.date_formats.len() > 1 {
                let mut fm: Vec<(&str, u64)> =
                    a.date_formats.iter().map(|(k, v)| (*k, v.0)).collect();
                fm.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
                let minority: u64 = fm.iter().skip(1).map(|x| x.1).sum();
                let ex: Vec<i64> = a
                    .date_formats
                    .iter()
                    .filter(|(k, _)| **k != fm[0].0)
                    .map(|(_, v)| v.1)
                    .collect();
                let list = fm
                    .iter()
                    .map(|(k, c)| format!("{k}: {c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                b.add(
                    "attributes.mixed_date_formats",
                    Severity::Warning,
                    minority,
                    ex,
                    Some(name),
                    format!("«{name}» mezcla formatos de fecha ({list}): 05/01 puede ser 5 de enero o 1 de mayo"),
                    format!("'{name}' mixes date formats ({list}): 05/01 may be 5 January or 1 May"),
                    Some("use un solo formato, AAAA-MM-DD".into()),
                );
            }
            // Categories written several ways.
            if !a.capped && a.distinct.len() <= 200 && a.distinct.len() < a.text_values as usize {
                let mut groups: HashMap<String, Vec<(&String, u64, i64)>> = HashMap::new();
                for (v, (c, ex)) in &a.distinct {
                    groups
                        .entry(crate::text::compact(v))
                        .or_default()
                        .push((v, *c, *ex));
                }
                let mut variants: Vec<Vec<(&String, u64, i64)>> = groups.into_values().collect();
                // Abbreviations ("Mty.") join the group of the long form they shorten.
                variants.sort_by_key(|g| std::cmp::Reverse(g.iter().map(|x| x.1).sum::<u64>()));
                let mut merged: Vec<Vec<(&String, u64, i64)>> = Vec::new();
                for g in variants {
                    let short = g
                        .iter()
                        .all(|(v, _, _)| v.chars().count() <= 5 || v.ends_with('.'));
                    if short {
                        if let Some(target) = merged.iter_mut().find(|m| {
                            m.iter()
                                .any(|(l, _, _)| g.iter().any(|(s, _, _)| abbreviates(s, l)))
                        }) {
                            target.extend(g);
                            continue;
                        }
                    }
                    merged.push(g);
                }
                let mut count = 0;
                let mut ex = Vec::new();
                let mut shown = Vec::new();
                for g in merged.iter_mut().filter(|g| g.len() > 1) {
                    g.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
                    count += g.iter().skip(1).map(|x| x.1).sum::<u64>();
                    ex.extend(g.iter().skip(1).map(|x| x.2));
                    shown.push(
                        g.iter()
                            .map(|x| format!("«{}»", x.0))
                            .collect::<Vec<_>>()
                            .join(" / "),
                    );
                }
                shown.sort();
                b.add(
                    "attributes.inconsistent_spelling",
                    Severity::Warning,
                    count,
                    ex,
                    Some(name),
                    format!(
                        "«{name}» escribe la misma categoría de varias formas: {}",
                        shown.join("; ")
                    ),
                    format!(
                        "'{name}' writes the same category several ways: {}",
                        shown.join("; ")
                    ),
                    Some("unifique la escritura (un catálogo de valores)".into()),
                );
            }
        }
        if a.numbers.len() >= 20 {
            let mut xs: Vec<f64> = a.numbers.iter().map(|x| x.0).collect();
            let (q1, q3) = quartiles(&mut xs);
            let iqr = q3 - q1;
            // Fill values that stand for "no data", and negatives in a field that is
            // otherwise never negative.
            let sentinel = |x: f64| {
                x.fract() == 0.0
                    && matches!(
                        x as i64,
                        -99 | -999 | -9999 | -99999 | 9999 | 99999 | 999999
                    )
            };
            let negatives = a.numbers.iter().filter(|(x, _)| *x < 0.0).count();
            let lone_negative =
                |x: f64| x < 0.0 && (negatives as f64) < 0.01 * a.numbers.len() as f64;
            // Quantities (populations, amounts) span orders of magnitude: when the
            // middle half of the positive values spans a factor of 10 or more they are
            // compared in log10, 3 interquartile ranges beyond the middle half; other
            // fields (and those with many negatives: temperatures, levels) in linear
            // units, 10 interquartile ranges beyond.
            let signed = negatives as f64 >= 0.01 * a.numbers.len() as f64;
            let mut logs: Vec<f64> = a
                .numbers
                .iter()
                .filter(|x| x.0 > 0.0 && !sentinel(x.0))
                .map(|x| x.0.log10())
                .collect();
            let (l1, l3) = quartiles(&mut logs);
            let liqr = l3 - l1;
            let far = |x: f64| {
                if !signed && liqr >= 1.0 {
                    // The middle half spans a factor of 10 or more: a quantity.
                    x > 0.0
                        && logs.len() >= 20
                        && (x.log10() < l1 - 3.0 * liqr || x.log10() > l3 + 3.0 * liqr)
                } else {
                    iqr > 0.0 && (x < q1 - 10.0 * iqr || x > q3 + 10.0 * iqr)
                }
            };
            let out: Vec<&(f64, i64)> = a
                .numbers
                .iter()
                .filter(|(x, _)| far(*x) || sentinel(*x) || lone_negative(*x))
                .collect();
            b.add(
                "attributes.out_of_range",
                Severity::Warning,
                out.len() as u64,
                out.iter().map(|x| x.1).collect(),
                Some(name),
                format!("«{name}»: {} valores fuera del rango plausible (muy lejos de los valores usuales, valores de relleno como -99 o -9999, o negativos aislados)", out.len()),
                format!("'{name}': {} values outside the plausible range (far from the usual values, fill values like -99 or -9999, or lone negatives)", out.len()),
                None,
            );
        }
    }
    if !incomplete.is_empty() {
        let mean: f64 = incomplete.iter().map(|x| x.1).sum::<f64>() / schema.len().max(1) as f64;
        let list = incomplete
            .iter()
            .map(|(f, s)| format!("{f} {:.0}%", s * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        b.add(
            "attributes.incomplete",
            Severity::Warning,
            ((mean * n as f64).round() as u64).max(1),
            Vec::new(),
            None,
            format!("campos incompletos (vacíos o nulos): {list}"),
            format!("incomplete fields (empty or null): {list}"),
            None,
        );
    }
    fields
}

/// Codes stored as numbers (INEGI keys such as CVE_MUN 39 for "039"): the leading
/// zeros are lost, so the key no longer joins to other tables.
fn code_as_number(b: &mut Builder, name: &str, numbers: &[(f64, i64)]) {
    let width = crate::table::join::part_width(name);
    let code_name = width.is_some()
        || crate::table::coords::tokens(name)
            .iter()
            .any(|w| w.starts_with("cve") || w == "clave" || w == "cp" || w == "codigo");
    if !code_name {
        return;
    }
    let digits = |x: f64| {
        if x.abs() < 1.0 {
            1
        } else {
            (x.abs().log10().floor() as usize) + 1
        }
    };
    let max = numbers.iter().map(|(x, _)| digits(*x)).max().unwrap_or(0);
    let want = width.unwrap_or(max).max(max);
    let short: Vec<&(f64, i64)> = numbers
        .iter()
        .filter(|(x, _)| x.fract() == 0.0 && *x >= 0.0 && digits(*x) < want)
        .collect();
    if short.is_empty() {
        return;
    }
    let ex = short[0].0 as i64;
    let padded = format!("{ex:0want$}");
    b.add(
        "attributes.code_as_number",
        Severity::Warning,
        short.len() as u64,
        short.iter().map(|x| x.1).collect(),
        Some(name),
        format!(
            "«{name}» guarda claves como números: {} valores perdieron sus ceros a la izquierda (p. ej. {ex} en lugar de «{padded}») y ya no enlazan con otras tablas",
            short.len()
        ),
        format!(
            "'{name}' stores codes as numbers: {} values lost their leading zeros (e.g. {ex} for '{padded}') and no longer join to other tables",
            short.len()
        ),
        Some(format!("guarde «{name}» como texto de {want} caracteres con ceros a la izquierda")),
    );
}
