//! Per-tile time of point tiles through the service's real path (point index → chosen
//! points → attributes read from the FlatGeobuf file → MVT → gzip), uncached, on a
//! generated 1 M-point layer over Monterrey (the viewport-grid workload's layer of
//! `tests/bench/tiles.sh`). `cargo bench --bench point_tiles` (in `make bench`).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use datahub::tileserve::{TileService, TileSettings};
use layers::index::Registry;
use layers::ingest::{ingest, IngestRequest};
use layers::store::FsStore;
use tiles::grid::TileId;

// The server's allocator (src/main.rs), so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The tile of zoom `z` over Monterrey's centre (-100.30, 25.70).
fn tile(z: u32) -> TileId {
    let n = f64::from(1u32 << z);
    let lat = 25.70f64.to_radians();
    let x = ((-100.30 + 180.0) / 360.0 * n) as u64;
    let y = ((1.0 - lat.tan().asinh() / std::f64::consts::PI) / 2.0 * n) as u64;
    TileId::new(z, x, y).expect("tile over Monterrey")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("million-mty.csv");
    {
        // The same generator as tests/bench/run.sh: uniform over the city, 2 fields.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
        writeln!(f, "lon,lat,categoria,valor").expect("write");
        let mut s: u64 = 11;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for i in 0..1_000_000u32 {
            let (lon, lat) = (-100.42 + 0.24 * next(), 25.62 + 0.16 * next());
            writeln!(f, "{lon:.6},{lat:.6},c{},{}", i % 7, i % 1000).expect("write");
        }
    }
    let store = FsStore::open(dir.path().join("data"), 3).expect("store");
    ingest(&store, &IngestRequest::new(csv, "puntos", "bench"), &|_| {}).expect("ingest");
    let registry = Registry::new(std::sync::Arc::new(store));
    registry.refresh().expect("load");
    let layer = registry.get("puntos").expect("loaded");
    let service = TileService::new(TileSettings::default());
    let t0 = Instant::now();
    service.prepare(std::slice::from_ref(&layer));
    println!(
        "point index of 1,000,000 points built in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let layers = [Arc::clone(&layer)];
    for z in [0u32, 6, 8, 10, 12, 14, 16] {
        let t = tile(z);
        let body = service.render(&layers, t).expect("render");
        let name = format!("point_tile_z{z}");
        println!(
            "{name}: {} bytes, {} gzipped, {} dropped by the size cap",
            body.raw_len,
            body.gzip.len(),
            body.dropped
        );
        c.bench_function(&name, |b| {
            b.iter(|| service.render(&layers, t).expect("render"))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
