//! Property-based fuzzing (proptest) of what an upload hands the ingest: CSV bytes
//! (sniffing of delimiter, header, encoding, coordinate columns), zip archives
//! (valid ones mutated, random bytes, hostile entry names), coordinate text and CRS
//! text. Each input gives a table, a placement, an archive or a clean error, never a
//! panic; nothing is ever written outside the destination folder.
//!
//! `make test` runs a short pass (`DATAHUB_FUZZ_CASES`, default 300; a quarter for
//! the targets that write files); `make fuzz` a long one. Failing inputs are kept
//! by proptest under `proptest-regressions/` and replayed first by every later run.

use std::io::Write;

use proptest::prelude::*;

use crate::ingest::archive::{extract_zip, Limits};
use crate::table::{coords, Table, TableOptions};

fn cases(share: u32) -> u32 {
    std::env::var("DATAHUB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(300)
        .div_ceil(share)
}

const REGION: coords::RegionBox = [-101.25, 23.1, -98.4, 27.85];

/// CSV-like text: fields from a pool that sniffing cares about, joined by one of
/// the delimiters, some rows ragged, sometimes Latin-1 bytes or a BOM.
fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        prop::sample::select(vec![
            "lon",
            "lat",
            "longitud",
            "latitud",
            "x",
            "y",
            "coordenadas",
            "CVE_MUN",
            "nombre",
            "25.6866",
            "-100.3161",
            "25,6866",
            "-100,3161",
            "25°40'12.5\"N",
            "\"25.68, -100.31\"",
            "N/D",
            "",
            "\"",
            "\"\"",
            "1e400",
            "-",
            "*",
            "Total",
            "POINT(-100.3 25.7)",
            "POINT (",
            "2024-01-31",
            "31/01/2024",
            "19039",
            "ñandú",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
    ];
    let row = prop::collection::vec(field, 0..8);
    (
        prop::collection::vec(row, 0..30),
        prop::sample::select(vec![",", ";", "\t", "|"]),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(rows, delim, bom, crlf, junk)| {
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice(b"\xef\xbb\xbf");
            }
            for r in rows {
                out.extend_from_slice(r.join(delim).as_bytes());
                out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            out.extend_from_slice(&junk);
            out
        })
}

/// A small valid zip, then some of its bytes overwritten.
fn zip_bytes() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::collection::vec(
        prop::sample::select(vec![
            "a.csv",
            "dir/b.shp",
            "../escape.txt",
            "/abs/x.dbf",
            "dir/../../up.prj",
            "c:\\w.txt",
            "ok/",
            "ñ.geojson",
            "",
        ]),
        1..4,
    );
    (
        names,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(names, flips, deflate)| {
            let mut buf = std::io::Cursor::new(Vec::new());
            {
                let mut z = zip::ZipWriter::new(&mut buf);
                let opts =
                    zip::write::SimpleFileOptions::default().compression_method(if deflate {
                        zip::CompressionMethod::Deflated
                    } else {
                        zip::CompressionMethod::Stored
                    });
                for n in names {
                    if z.start_file(n, opts).is_ok() {
                        let _ = z.write_all(b"lon,lat\n-100.3,25.7\n");
                    }
                }
                let _ = z.finish();
            }
            let mut bytes = buf.into_inner();
            for (at, b) in flips {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = b;
                }
            }
            bytes
        })
}

/// Every path under `root`, relative.
fn tree(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).map(|r| r.to_path_buf()).unwrap_or(p));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(4)))]

    #[test]
    fn csv_tables_never_panic(bytes in csv_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, &bytes).unwrap();
        for opts in [TableOptions::default(), TableOptions { no_geometry: true, ..Default::default() }] {
            if let Ok(t) = Table::open(&p, "csv", &opts, None, Limits::default()) {
                let _ = t.placement(&opts, &REGION);
                let _ = t.for_each_row(|_, _| Ok(true));
            }
        }
    }

    #[test]
    fn zips_never_panic_nor_escape(bytes in zip_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("in.zip");
        std::fs::write(&z, &bytes).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let _ = extract_zip(&z, &dest, Limits { max_uncompressed: 1 << 20, ..Limits::default() });
        // Only the archive and what is under out/ exist in the temp folder.
        for p in tree(dir.path()) {
            prop_assert!(p.starts_with("out") || p == std::path::Path::new("in.zip"), "{}", p.display());
        }
    }

    #[test]
    fn random_bytes_as_zip_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("in.zip");
        std::fs::write(&z, &bytes).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let _ = extract_zip(&z, &dest, Limits::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1)))]

    #[test]
    fn coordinate_text_never_panics(s in ".{0,40}", comma in any::<bool>()) {
        let _ = coords::parse_number(&s, comma);
        let _ = coords::parse_coord(&s, comma);
        if let Some((a, b)) = coords::parse_pair(&s, comma) {
            let _ = coords::order_of(a, b, &REGION);
        }
        let _ = coords::tokens(&s);
    }

    #[test]
    fn crs_text_is_classified_without_panics(s in ".{0,80}") {
        // Classification only: whatever is accepted is an EPSG code, WKT or JSON.
        match crate::crs::user_crs(&s) {
            Some(crate::crs::UserCrs::Epsg(c)) => prop_assert!(c > 0),
            Some(crate::crs::UserCrs::ProjJson) => {
                let json = s.trim().starts_with('{');
                prop_assert!(json, "{:?}", s);
            }
            Some(crate::crs::UserCrs::Wkt) => {
                let wkt = s.contains('[') || s.contains('(');
                prop_assert!(wkt, "{:?}", s);
            }
            None => {}
        }
    }
}
