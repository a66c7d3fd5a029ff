//! Duplicate checks: features with the same geometry and attributes (exact), the
//! same record under two identifiers, and identifiers that repeat.

use super::*;

/// Finds the duplicates among the scan's keys and the repeated identifiers (counted
/// into `acc`), then reports the duplicate features.
pub(super) fn checks(
    b: &mut Builder,
    keys: Vec<(u64, u64, u64, i64)>,
    ids: Vec<Vec<(u64, i64)>>,
    acc: &mut [FieldAcc],
    id_like: &[bool],
) {
    // Duplicates: the same geometry with the same attributes (all of them, or all but
    // the identifiers: the same record entered twice under two ids).
    let has_ids = id_like.iter().any(|x| *x);
    let mut exact: HashSet<(u64, u64), Mix> = HashSet::with_capacity_and_hasher(keys.len(), Mix);
    let mut record: HashSet<(u64, u64), Mix> = HashSet::with_capacity_and_hasher(keys.len(), Mix);
    let mut exact_dups = (0u64, Vec::new());
    let mut record_dups = (0u64, Vec::new());
    for (gh, a, non_id, fid) in keys {
        if !exact.insert((gh, a)) {
            exact_dups.0 += 1;
            push_ex(&mut exact_dups.1, fid);
        } else if !record.insert((gh, non_id)) && has_ids {
            record_dups.0 += 1;
            push_ex(&mut record_dups.1, fid);
        }
        record.insert((gh, non_id));
    }
    for (a, vals) in acc.iter_mut().zip(ids) {
        let mut seen: HashSet<u64, Mix> = HashSet::with_capacity_and_hasher(vals.len(), Mix);
        for (h, fid) in vals {
            if !seen.insert(h) {
                a.dup_id_count += 1;
                push_ex(&mut a.dup_ids, fid);
            }
        }
    }
    // Duplicates.
    b.add(
        "duplicates.exact",
        Severity::Error,
        exact_dups.0,
        exact_dups.1,
        None,
        format!(
            "{} elementos duplicados exactos (misma geometría y mismos atributos): contarían doble",
            exact_dups.0
        ),
        format!(
            "{} exact duplicate features (same geometry and attributes): they would count twice",
            exact_dups.0
        ),
        Some("elimine los registros repetidos en la fuente".into()),
    );
    b.add(
        "duplicates.same_record",
        Severity::Warning,
        record_dups.0,
        record_dups.1,
        None,
        format!("{} elementos repiten la geometría y los atributos de otro con distinto identificador: probablemente el mismo registro capturado dos veces", record_dups.0),
        format!("{} features repeat another's geometry and attributes under a different id: probably the same record entered twice", record_dups.0),
        None,
    );
}
