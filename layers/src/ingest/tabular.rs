//! The ingest of a table (CSV or spreadsheet): the [`crate::table::Table`] is opened
//! and profiled, its rows placed by coordinates or by a key join, and each row sent
//! down the same pipeline as GDAL's features (transform, validation, encoding).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::Sender;

use super::{Progress, Raw, BATCH};
use crate::crs::SourceCrs;
use crate::fgb::{Field, FieldType, Value2};
use crate::quality::Kind;
use crate::table::coords::{self, Placement};
use crate::table::join::{JoinReport, Joiner, Zones};
use crate::table::{Table, TableOptions};
use crate::{Error, Result};

/// A table ready to stream.
pub struct Prepared {
    pub table: Table,
    pub placement: Option<Placement>,
    pub zones: Option<Zones>,
    pub crs: SourceCrs,
    /// Stored schema: kept table columns, then the zone key (joins).
    pub schema: Vec<Field>,
    /// Table column index of each stored field (None: the zone key).
    pub field_cols: Vec<Option<usize>>,
    pub notes: Vec<String>,
}

/// Opens the table and decides how its rows are placed.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    store: &dyn crate::store::LayerStore,
    path: &std::path::Path,
    ext: &str,
    opts: &TableOptions,
    sheet: Option<&str>,
    user_crs: Option<&str>,
    region: &crate::diagnose::Area,
    limits: super::Limits,
) -> Result<Prepared> {
    let table = Table::open(path, ext, opts, sheet, limits)?;
    let mut notes = table.notes.clone();
    let (placement, zones) = match &opts.join {
        Some(spec) => {
            if opts.lon.is_some() || opts.x.is_some() || opts.coords.is_some() {
                return Err(Error::bad(
                    "--join places rows by key: it cannot be combined with --lon/--lat, --x/--y or --coords",
                ));
            }
            (None, Some(Zones::load(store, spec)?))
        }
        None => (table.placement(opts, &region.bbox)?, None),
    };
    if placement.is_none() && zones.is_none() {
        let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::bad(format!(
            "the table has no coordinate columns: name them with --lon COL --lat COL (or --x/--y \
             with --crs for metres, or --coords COL for one column with both), or place the rows \
             by a key with --join ZONE_LAYER:FIELD (e.g. --join municipios:CVEGEO); recognised \
             names are lon/lng/longitude/longitud/x and lat/latitude/latitud/y with any prefix or \
             suffix, or a WKT column; its columns are: {}",
            cols.join(", ")
        )));
    }
    let crs = match (&placement, user_crs) {
        (_, Some(def)) if zones.is_none() => SourceCrs::from_user(def)?,
        (_, Some(_)) => {
            return Err(Error::bad(
                "--crs does not apply to --join: the rows take the zone layer's geometry",
            ))
        }
        _ => {
            if placement.is_some() {
                notes.push(
                    "no CRS declared: the coordinates are read as lon/lat WGS 84 (EPSG:4326); \
                     give --crs for projected metres"
                        .into(),
                );
            }
            let mut c = SourceCrs::wgs84()?;
            c.how = "format default".into();
            c
        }
    };
    let coord_cols = placement
        .as_ref()
        .map(Placement::columns)
        .unwrap_or_default();
    let mut schema = Vec::new();
    let mut field_cols = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        if coord_cols.contains(&i) {
            continue;
        }
        schema.push(Field {
            name: c.name.clone(),
            ftype: c.ftype,
        });
        field_cols.push(Some(i));
    }
    if let Some(z) = &zones {
        if !schema.iter().any(|f| f.name.eq_ignore_ascii_case(&z.field)) {
            schema.push(Field {
                name: z.field.clone(),
                ftype: FieldType::String,
            });
            field_cols.push(None);
        }
    }
    Ok(Prepared {
        table,
        placement,
        zones,
        crs,
        schema,
        field_cols,
        notes,
    })
}

/// Streams the rows as batches of [`Raw`] features. Returns the join report.
#[allow(clippy::too_many_arguments)]
pub fn read_rows(
    p: &Prepared,
    opts: &TableOptions,
    tx: &Sender<(u64, Vec<Raw>)>,
    stop: &AtomicBool,
    count: &AtomicU64,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Option<JoinReport>> {
    let total = Some(p.table.data_rows);
    let mut joiner = match (&p.zones, &opts.join) {
        (Some(z), Some(spec)) => Some(Joiner::new(z, spec, &p.table.columns)?),
        _ => None,
    };
    let cols = &p.table.columns;
    let dc = p.table.decimal_comma;
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_no = 0u64;
    let mut n = 0i64;
    let mut send = |batch: &mut Vec<Raw>, last: bool| -> bool {
        if batch.is_empty() {
            return true;
        }
        count.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let full = std::mem::replace(batch, Vec::with_capacity(if last { 0 } else { BATCH }));
        let ok = tx.send((batch_no, full)).is_ok();
        batch_no += 1;
        progress(Progress {
            read: count.load(Ordering::Relaxed),
            total,
        });
        ok
    };
    p.table.for_each_row(|line, cells| {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        n += 1;
        let mut notes = Vec::new();
        let mut zone_value = None;
        let geom = if let Some(j) = joiner.as_mut() {
            match j.place(line, cells, cols) {
                Some((g, v)) => {
                    zone_value = Some(v);
                    Some(g)
                }
                None => None,
            }
        } else if let Some(pl) = &p.placement {
            match coords::point(pl, |i| cells.get(cols[i].src), dc) {
                Ok(Some(g)) => Some(g),
                Ok(None) => {
                    notes.push((
                        Kind::BadCoordinates,
                        format!("{} {line}: no coordinates", row_word(&p.table)),
                    ));
                    None
                }
                Err(e) => {
                    notes.push((
                        Kind::BadCoordinates,
                        format!("{} {line}: {e}", row_word(&p.table)),
                    ));
                    None
                }
            }
        } else {
            None
        };
        let mut values = Vec::with_capacity(p.field_cols.len());
        for fc in &p.field_cols {
            values.push(match fc {
                Some(i) => {
                    let c = &cols[*i];
                    cells
                        .get(c.src)
                        .map_or(Value2::Null, |cell| c.value(cell, dc))
                }
                None => zone_value.clone().map_or(Value2::Null, Value2::Text),
            });
        }
        batch.push(Raw {
            fid_hint: n,
            row: line as i64,
            wkb: None,
            geom,
            unplaced: joiner.is_some(),
            notes,
            values,
        });
        if batch.len() == BATCH && !send(&mut batch, false) {
            return Ok(false);
        }
        Ok(true)
    })?;
    send(&mut batch, true);
    Ok(joiner.map(Joiner::finish))
}

pub fn row_word(t: &Table) -> &'static str {
    if t.format == "CSV" {
        "file line"
    } else {
        "sheet row"
    }
}
