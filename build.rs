//! Embeds the pinned MapLibre GL JS build (`web/node_modules/maplibre-gl/dist`,
//! installed by `npm ci` from `web/package-lock.json`) into the binary, so the map
//! works wherever the binary runs. Each file's SHA-256 must be the one recorded in
//! `web/maplibre-gl.sha256`: a different or tampered MapLibre fails the build.
//! Also writes a gzipped copy, served to clients that accept it.

use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let sums_path = root.join("web/maplibre-gl.sha256");
    println!("cargo:rerun-if-changed={}", sums_path.display());
    let sums = std::fs::read_to_string(&sums_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", sums_path.display()));
    let dist = root.join("web/node_modules/maplibre-gl/dist");
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (want, name) = line
            .split_once("  ")
            .unwrap_or_else(|| panic!("{}: bad line '{line}'", sums_path.display()));
        let src = dist.join(name);
        println!("cargo:rerun-if-changed={}", src.display());
        let bytes = std::fs::read(&src).unwrap_or_else(|e| {
            panic!(
                "MapLibre GL JS is embedded in the binary, but {} cannot be read ({e}). \
                 Install the pinned version first: `make web/node_modules` (or `cd web && npm ci`)",
                src.display()
            )
        });
        let got = hex(&Sha256::digest(&bytes));
        if got != want {
            panic!(
                "{} has SHA-256 {got}, not the pinned {want} (web/maplibre-gl.sha256): \
                 reinstall with `cd web && rm -rf node_modules && npm ci`, or, when upgrading \
                 MapLibre on purpose, record the new checksums",
                src.display()
            );
        }
        std::fs::write(out.join(name), &bytes).expect("write OUT_DIR copy");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip");
        std::fs::write(out.join(format!("{name}.gz")), gz.finish().expect("gzip"))
            .expect("write OUT_DIR gzip");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
