//! In-process figures for the layer foundation: R-tree build (load of a published
//! 1 M-point version) and bbox queries returning ~1,000 points, with and without
//! decoding them to GeoJSON. The layer is generated and ingested at bench time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot set up should panic

use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion};
use layers::index::LoadedLayer;
use layers::ingest::{ingest, IngestRequest};
use layers::store::{FsStore, LayerStore};

const N: usize = 1_000_000;

fn setup() -> (tempfile::TempDir, layers::store::StoredVersion) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    writeln!(f, "lon,lat,nombre,valor").unwrap();
    // 1,000 x 1,000 grid over Monterrey (0.24 x 0.16 degrees) with a little jitter.
    let mut x: u64 = 42;
    for i in 0..N {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jx = ((x >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 0.0001;
        let jy = ((x >> 16 & 0xff_ffff) as f64 / (1u64 << 24) as f64 - 0.5) * 0.0001;
        let lon = -100.42 + 0.24 * (i % 1000) as f64 / 1000.0 + jx;
        let lat = 25.62 + 0.16 * (i / 1000) as f64 / 1000.0 + jy;
        writeln!(f, "{lon:.6},{lat:.6},punto {i},{}", i % 97).unwrap();
    }
    drop(f);
    layers::ingest::init_gdal();
    let store = FsStore::open(dir.path().join("data"), 2).unwrap();
    let req = IngestRequest {
        synthetic: true,
        ..IngestRequest::new(csv, "puntos", "bench")
    };
    ingest(&store, &req, &|_| {}).unwrap();
    let v = store.current("puntos").unwrap().unwrap();
    (dir, v)
}

fn bench(c: &mut Criterion) {
    let (_dir, version) = setup();
    let mut g = c.benchmark_group("index_1M_points");
    g.sample_size(10);
    g.bench_function("load_and_build_rtree", |b| {
        b.iter(|| LoadedLayer::load(&version).unwrap())
    });
    let layer = LoadedLayer::load(&version).unwrap();
    // ~1,000 of 1 M points: 1/1000 of the area, i.e. ~0.0076 x 0.0051 degrees.
    let bbox = [-100.30, 25.70, -100.30 + 0.24 / 31.6, 25.70 + 0.16 / 31.6];
    let hits = layer.query_bbox(bbox).len();
    eprintln!("bbox query returns {hits} features");
    g.sample_size(100);
    g.bench_function("bbox_query_ids_1000", |b| b.iter(|| layer.query_bbox(bbox)));
    g.bench_function("bbox_query_geojson_1000", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for pos in layer.query_bbox(bbox) {
                let (_, off) = layer.at(pos).unwrap();
                layer.write_geojson(off, &mut out).unwrap();
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
