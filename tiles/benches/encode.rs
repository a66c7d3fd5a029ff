//! Per-tile encode time: 5,000 points in a z14 tile, and 169 polygons of 200 vertices
//! that all need clipping at a z12 tile.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use geo::{Coord, Geometry, LineString, Point, Polygon};
use tiles::grid::TileId;
use tiles::mvt::MvtValue;
use tiles::render::{render_layer, RenderOptions, TileFeature};

fn points(tile: TileId) -> Vec<TileFeature> {
    let b = tile.bounds_lonlat(0, 4096);
    (0..5000u64)
        .map(|i| TileFeature {
            id: i,
            geometry: Geometry::Point(Point::new(
                b[0] + (b[2] - b[0]) * ((i * 7919 % 5000) as f64 / 5000.0),
                b[1] + (b[3] - b[1]) * ((i * 104_729 % 5000) as f64 / 5000.0),
            )),
            props: vec![
                ("n".into(), MvtValue::Uint(i)),
                ("tipo".into(), MvtValue::String(format!("t{}", i % 5))),
            ],
        })
        .collect()
}

fn polygons(tile: TileId) -> Vec<TileFeature> {
    let b = tile.bounds_lonlat(0, 4096);
    let (w, h) = ((b[2] - b[0]) / 12.0, (b[3] - b[1]) / 12.0);
    let mut out = Vec::new();
    for i in 0..13u64 {
        for j in 0..13u64 {
            // Circles of 200 vertices on a 13x13 grid that overhangs the tile edges.
            let (cx, cy) = (b[0] - w / 2.0 + w * i as f64, b[1] - h / 2.0 + h * j as f64);
            let ring: Vec<Coord<f64>> = (0..200)
                .map(|k| {
                    let a = std::f64::consts::TAU * f64::from(k) / 200.0;
                    Coord {
                        x: cx + 0.7 * w * a.cos(),
                        y: cy + 0.7 * h * a.sin(),
                    }
                })
                .collect();
            out.push(TileFeature {
                id: i * 13 + j,
                geometry: Geometry::Polygon(Polygon::new(LineString(ring), vec![])),
                props: vec![],
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let t14 = TileId::new(14, 3626, 6982).unwrap();
    let t12 = TileId::new(12, 906, 1745).unwrap();
    let opts = RenderOptions::default();
    c.bench_function("encode_5000_points_z14", |b| {
        b.iter_batched(
            || points(t14),
            |f| {
                let mut buf = Vec::new();
                render_layer("p", t14, f, &opts, &mut buf);
                buf
            },
            criterion::BatchSize::LargeInput,
        )
    });
    c.bench_function("encode_169_polygons_200_vertices_clipped_z12", |b| {
        b.iter_batched(
            || polygons(t12),
            |f| {
                let mut buf = Vec::new();
                render_layer("p", t12, f, &opts, &mut buf);
                buf
            },
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
