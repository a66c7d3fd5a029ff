//! `layers`: a ministry's source file becomes a clean, versioned, indexed layer.
//!
//! The flow reads top to bottom, one module per step:
//!
//! - [`ingest`]: open any source (zip, shp, gpkg, geojson, kml/kmz, csv, fgb, gdb) with
//!   GDAL, safely unpacking archives first, and stream its features through a pipeline.
//! - [`crs`]: the only code that calls PROJ: identify the source CRS and transform to
//!   the storage CRS (EPSG:4326, lon/lat order).
//! - [`quality`]: what was wrong with each geometry, what was repaired, what was rejected;
//!   the ingest report stored with every version.
//! - [`diagnose`]: the data-quality diagnosis of a stored version (is it usable, and
//!   why not), stored with it.
//! - [`store`]: layer versions on disk (FlatGeobuf + `meta.json`), atomic publish,
//!   retention; behind the [`store::LayerStore`] trait.
//! - [`index`]: one bulk-loaded R-tree per published version, bbox queries, and
//!   decoding of stored features to GeoJSON.
//! - [`diff`]: what changed between two versions (features added, removed,
//!   modified; columns added, removed, retyped, renamed).
//! - [`table`]: CSV and spreadsheets as ministries send them (title rows, merged
//!   cells, codes, dates), their coordinates under any name, and key joins to zones.
//! - [`text`]: the one text normalization (case, accents, punctuation,
//!   abbreviations) used by search, filters, the diagnosis and name joins.
//!
//! Nothing here knows about HTTP: the service crate maps [`Error`] to status codes.

pub mod crs;
pub mod diagnose;
pub mod diff;
pub mod error;
pub mod fgb;
pub mod index;
pub mod ingest;
pub mod pg;
pub mod quality;
pub mod store;
pub mod table;
pub mod text;

#[cfg(test)]
mod fuzz;

pub use error::{Error, Result};
