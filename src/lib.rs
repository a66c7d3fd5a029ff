//! `datahub`: the Monterrey DataHub service and command line.
//!
//! Map of the crate (the data flows top to bottom):
//!
//! - [`config`]: settings from flags, `DATAHUB_*` variables and an optional TOML file,
//!   parsed once into typed structs.
//! - `layers` (separate crate): ingest → CRS → quality → store → index.
//! - [`cql2`]: CQL2 text/JSON filters: parsing, checking against queryables, evaluation.
//! - [`features`]: OGC API – Features semantics over a loaded layer: parameters,
//!   paging, GeoJSON documents. Knows nothing of axum.
//! - [`ogc`]: OGC API – Features documents (landing, conformance, collections,
//!   queryables, OpenAPI), their HTML pages, and output CRSs (Part 2).
//! - [`download`]: whole results as files (GeoJSON streamed; FlatGeobuf, CSV,
//!   GeoPackage, Shapefile, KML through GDAL).
//! - [`http`]: axum routers, the one place errors become status codes, graceful
//!   shutdown, the background refresh that picks up new versions.
//! - [`tileserve`]: vector tiles of loaded layers (through the `tiles` crate), TileJSON,
//!   and the tile cache.
//! - [`analysis`]: neighbourhood decision support: aggregate a layer by zones,
//!   nearest features, coverage, zone profiles, class breaks.
//! - [`changes`]: what changed between versions (diff summaries, GeoJSON of the
//!   changes, `since` for incremental sync, feature history).
//! - [`quality`]: the data-quality reports (one layer version; the city-wide report by
//!   ministry) as JSON, CSV and HTML.
//! - [`app`]: the publishing operations (publish, edit, restore, delete, undelete)
//!   shared by the command line and the HTTP API.
//! - [`limits`]: slots, time budgets and cancellation of expensive requests.
//! - [`usage`]: requests per layer and day (tile, items, download, analysis).
//! - [`webhooks`]: subscriptions: signed notifications of new versions, retried,
//!   in order, logged.
//! - [`demo`]: the generated (synthetic) Monterrey demo layers used by `make run`.

pub mod analysis;
pub mod app;
pub mod backend;
pub mod catalog;
pub mod changes;
pub mod config;
pub mod cql2;
pub mod demo;
pub mod download;
pub mod features;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod ogc;
pub mod quality;
pub mod tileserve;
pub mod usage;
pub mod webhooks;

#[cfg(test)]
mod fuzz;
