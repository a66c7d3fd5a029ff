//! `tiles`: Mapbox Vector Tiles from plain geometries.
//!
//! - [`grid`]: the XYZ Web Mercator grid: tile ids, their bounds in lon/lat and metres,
//!   and the transform into tile coordinates.
//! - [`render`]: one MVT layer of one tile: clip to the buffered tile, simplify in pixel
//!   space, quantize, fix MVT winding, drop what collapsed, thin to a size cap.
//! - [`points`]: point layers' Morton-ordered index: which points a tile draws, with
//!   per-zoom generalisation and the size cap's thinning, without reading geometries.
//! - [`mvt`]: the protobuf encoding of MVT 2.1 (layers, features, tags, commands).
//!
//! This crate knows geometry, not GDAL, not HTTP and not who is asking: callers hand
//! it features in lon/lat through [`render::TileFeature`].

pub mod grid;
pub mod mvt;
pub mod points;
pub mod render;
