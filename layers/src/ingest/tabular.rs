//! The ingest of a table (CSV or spreadsheet): the [`crate::table::Table`] is opened
//! and profiled, its rows placed by coordinates or by a key join, and each row sent
//! down the same pipeline as GDAL's features (transform, validation, encoding).

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Batches, Raw};
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
pub fn prepare(
    store: &dyn crate::store::LayerStore,
    cand: &super::source::Candidate,
    req: &super::IngestRequest,
) -> Result<Prepared> {
    let opts = &req.table;
    let region = &req.diagnose.region;
    let user_crs = req.crs.as_deref();
    let sheet = req.source_layer.as_deref();
    let table = Table::open(&cand.path, &cand.ext, opts, sheet, req.limits)?;
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
    if opts.no_geometry && (zones.is_some() || placement.is_some()) {
        return Err(Error::bad(
            "--no-geometry stores a table without a place; leave it out to place the rows by \
             their coordinates or by --join",
        ));
    }
    if placement.is_none() && zones.is_none() && !opts.no_geometry {
        return Err(Error::bad(format!(
            "the table has no coordinate columns: name them with --lon COL --lat COL (or --x/--y \
             with --crs for metres, or --coords COL for one column with both), or place the rows \
             by a key with --join ZONE_LAYER:FIELD (e.g. --join municipios:CVEGEO), or store a \
             table with no place (a budget, a directory) with --no-geometry; recognised \
             names are lon/lng/longitude/longitud/x and lat/latitude/latitud/y with any prefix or \
             suffix, or a WKT column; its columns are: {}",
            crate::table::name_list(table.columns.iter().map(|c| c.name.as_str()))
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
            if opts.no_geometry {
                notes.push("stored without geometry (--no-geometry): a table with no place".into());
            }
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
pub fn read_rows(
    p: &Prepared,
    opts: &TableOptions,
    out: &mut Batches<'_>,
    stop: &AtomicBool,
) -> Result<Option<JoinReport>> {
    let mut joiner = match (&p.zones, &opts.join) {
        (Some(z), Some(spec)) => Some(Joiner::new(z, spec, &p.table.columns)?),
        _ => None,
    };
    let cols = &p.table.columns;
    let dc = p.table.decimal_comma;
    let mut n = 0i64;
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
        // false: the writer failed; its error is reported.
        Ok(out.push(Raw {
            fid_hint: n,
            row: line as i64,
            wkb: None,
            geom,
            unplaced: joiner.is_some(),
            no_geometry: opts.no_geometry,
            notes,
            values,
        }))
    })?;
    Ok(joiner.map(Joiner::finish))
}

pub fn row_word(t: &Table) -> &'static str {
    if t.format == "CSV" {
        "file line"
    } else {
        "sheet row"
    }
}
