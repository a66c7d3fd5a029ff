//! Finding the dataset inside what the user handed us, and opening it with GDAL with the
//! right options: which file in an archive, which layer, which encoding, which CRS.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use gdal::vector::LayerAccess;
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};

use super::archive::{self, Limits};
use crate::crs::SourceCrs;
use crate::{Error, Result};

/// Extensions we open, in the order we prefer them when an archive has several kinds.
const DATA_EXTS: &[&str] = &[
    "gdb", "gpkg", "shp", "fgb", "geojson", "json", "kml", "csv", "tsv", "xlsx", "xlsm", "xls",
    "ods",
];

/// One openable dataset file (or .gdb dir) and how to open it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub ext: String,
    /// Open options for GDAL (encoding, CSV column names...).
    pub open_options: Vec<String>,
    /// Notes for the report (encoding fallback...).
    pub notes: Vec<String>,
}

fn ext_of(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Turns the user's path into candidate datasets, unpacking archives into `work`.
pub fn locate(path: &Path, work: &Path, limits: Limits) -> Result<Vec<Candidate>> {
    let meta = fs::metadata(path)
        .map_err(|e| Error::bad(format!("cannot read {}: {e}", path.display())))?;
    let ext = ext_of(path);
    if meta.is_dir() {
        if ext == "gdb" {
            return Ok(vec![candidate(path, "gdb")?]);
        }
        return scan(path);
    }
    match ext.as_str() {
        "zip" | "kmz" => {
            let dest = work.join("unpacked");
            fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
            archive::extract_zip(path, &dest, limits)?;
            let found = scan(&dest)?;
            if found.is_empty() {
                return Err(Error::bad(format!(
                    "{} contains no geodata file (looked for .shp, .gpkg, .geojson, .kml, .csv, .xlsx, .ods, .fgb, .gdb)",
                    path.display()
                )));
            }
            Ok(found)
        }
        e if DATA_EXTS.contains(&e) => Ok(vec![candidate(path, e)?]),
        _ => {
            sniff_other(path)?;
            Err(Error::bad(format!(
                "{} is not a supported geodata file: expected a zipped Shapefile (.zip), .shp, \
                 GeoPackage (.gpkg), GeoJSON (.geojson/.json), KML/KMZ, CSV, a spreadsheet \
                 (.xlsx, .xls, .ods), FlatGeobuf (.fgb) or File Geodatabase (.gdb, .gdb.zip)",
                path.display()
            )))
        }
    }
}

/// A file with an unknown extension: say what it looks like when we can tell.
fn sniff_other(path: &Path) -> Result<()> {
    let mut head = [0u8; 4];
    if let Ok(mut f) = fs::File::open(path) {
        if f.read(&mut head).unwrap_or(0) == 4 && &head == b"PK\x03\x04" {
            return Err(Error::bad(format!(
                "{} looks like a zip archive: rename it to .zip",
                path.display()
            )));
        }
    }
    Ok(())
}

fn scan(dir: &Path) -> Result<Vec<Candidate>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)
            .map_err(|e| Error::io(&d, e))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("__MACOSX") || name.starts_with("._") {
                continue;
            }
            let ext = ext_of(&p);
            if p.is_dir() {
                if ext == "gdb" {
                    found.push(candidate(&p, "gdb")?);
                } else {
                    stack.push(p);
                }
            } else if DATA_EXTS.contains(&ext.as_str()) && ext != "gdb" {
                found.push(candidate(&p, &ext)?);
            }
        }
    }
    // A Shapefile folder often carries a metadata .json or .csv beside it: when there
    // are .shp/.gpkg/.gdb files, they are the data.
    let strong = found
        .iter()
        .any(|c| matches!(c.ext.as_str(), "shp" | "gpkg" | "gdb" | "fgb"));
    if strong {
        found.retain(|c| matches!(c.ext.as_str(), "shp" | "gpkg" | "gdb" | "fgb"));
    }
    Ok(found)
}

fn sibling(path: &Path, ext: &str) -> Option<PathBuf> {
    let stem = path.file_stem()?.to_str()?.to_string();
    let dir = path.parent()?;
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(stem.as_str()) && ext_of(p) == ext)
}

fn candidate(path: &Path, ext: &str) -> Result<Candidate> {
    let mut c = Candidate {
        path: path.to_path_buf(),
        ext: ext.to_string(),
        open_options: Vec::new(),
        notes: Vec::new(),
    };
    if ext == "shp" {
        shapefile_options(&mut c)?;
    }
    Ok(c)
}

fn shapefile_options(c: &mut Candidate) -> Result<()> {
    let name = c.path.display().to_string();
    if sibling(&c.path, "shx").is_none() {
        return Err(Error::bad(format!(
            "{name}: the .shx file is missing; a Shapefile needs its .shp, .shx and .dbf \
             (and .prj) files together"
        )));
    }
    let Some(dbf) = sibling(&c.path, "dbf") else {
        return Err(Error::bad(format!(
            "{name}: the .dbf file (attributes) is missing; a Shapefile needs its .shp, .shx \
             and .dbf (and .prj) files together"
        )));
    };
    if sibling(&c.path, "cpg").is_some() {
        return Ok(()); // GDAL honours the declared code page
    }
    // Streamed: the header, then the records in chunks until the first byte that
    // is not UTF-8 (a .dbf may be gigabytes).
    use std::io::{Read, Seek};
    let io = |e| Error::io(&dbf, e);
    let mut f = fs::File::open(&dbf).map_err(io)?;
    let mut header = [0u8; 32];
    if f.read_exact(&mut header).is_err() {
        return Err(Error::bad(format!(
            "{}: not a valid .dbf file",
            dbf.display()
        )));
    }
    if header[29] != 0 {
        return Ok(()); // LDID code page in the header: GDAL honours it
    }
    let header_len = u16::from_le_bytes([header[8], header[9]]) as u64;
    f.seek(std::io::SeekFrom::Start(header_len)).map_err(io)?;
    if is_utf8(&mut std::io::BufReader::new(f)).map_err(io)? {
        c.open_options.push("ENCODING=UTF-8".into());
    } else {
        c.open_options.push("ENCODING=CP1252".into());
        c.notes.push(
            "the .dbf declares no encoding (no .cpg, no LDID) and is not UTF-8: read as CP1252 (Windows Latin 1)"
                .into(),
        );
    }
    Ok(())
}

/// Whether everything `r` yields is UTF-8, read in chunks (a sequence split between
/// two chunks is carried over); stops at the first invalid byte.
fn is_utf8(r: &mut impl std::io::Read) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 16];
    let mut carry = 0;
    loop {
        let n = r.read(&mut buf[carry..])?;
        if n == 0 {
            return Ok(carry == 0);
        }
        let filled = carry + n;
        match std::str::from_utf8(&buf[..filled]) {
            Ok(_) => carry = 0,
            // Only an incomplete sequence at the very end may continue.
            Err(e) if e.error_len().is_none() => {
                let valid = e.valid_up_to();
                buf.copy_within(valid..filled, 0);
                carry = filled - valid;
            }
            Err(_) => return Ok(false),
        }
    }
}

/// The one table (CSV, spreadsheet) among the candidates, when the source is a
/// table: read by [`crate::table`], not GDAL. Several tables in one archive are told
/// apart by `--source-layer` (the file name without extension).
pub fn table_candidate(cands: &[Candidate], wanted: Option<&str>) -> Result<Option<Candidate>> {
    let tables: Vec<&Candidate> = cands
        .iter()
        .filter(|c| crate::table::TABLE_EXTS.contains(&c.ext.as_str()))
        .collect();
    if tables.is_empty() || tables.len() != cands.len() {
        return Ok(None);
    }
    if tables.len() == 1 {
        return Ok(Some(tables[0].clone()));
    }
    let stem = |c: &Candidate| {
        c.path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string()
    };
    match wanted {
        Some(w) => tables
            .iter()
            .find(|c| stem(c) == w)
            .map(|c| Some((*c).clone()))
            .ok_or_else(|| {
                Error::bad(format!(
                    "source layer '{w}' not found; the archive has: {}",
                    tables
                        .iter()
                        .map(|c| stem(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }),
        None => Err(Error::bad(format!(
            "the archive has {} tables; choose one with --source-layer NAME: {}",
            tables.len(),
            tables
                .iter()
                .map(|c| stem(c))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// An opened source layer.
pub struct Opened {
    pub dataset: Dataset,
    pub layer_index: usize,
    pub layer_name: String,
    pub candidate: Candidate,
}

pub fn open_dataset(c: &Candidate) -> Result<Dataset> {
    let opts: Vec<&str> = c.open_options.iter().map(String::as_str).collect();
    let drivers: Option<&[&str]> = match c.ext.as_str() {
        "shp" => Some(&["ESRI Shapefile"]),
        "kml" => Some(&["LIBKML", "KML"]),
        "gdb" => Some(&["OpenFileGDB"]),
        "gpkg" => Some(&["GPKG"]),
        "fgb" => Some(&["FlatGeobuf"]),
        "geojson" | "json" => Some(&["GeoJSON"]),
        _ => None,
    };
    Dataset::open_ex(
        &c.path,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_VECTOR | GdalOpenFlags::GDAL_OF_READONLY,
            allowed_drivers: drivers,
            open_options: if opts.is_empty() { None } else { Some(&opts) },
            sibling_files: None,
        },
    )
    .map_err(|e| {
        Error::bad(format!(
            "{} cannot be read as {}: {e}",
            c.path.display(),
            c.ext.to_uppercase()
        ))
    })
}

/// Picks the one source layer to ingest among all candidates' layers.
pub fn choose(cands: Vec<Candidate>, wanted: Option<&str>, root: &Path) -> Result<Opened> {
    let mut names: Vec<(usize, usize, String)> = Vec::new(); // (cand, layer idx, name)
    let mut datasets = Vec::new();
    for (ci, c) in cands.iter().enumerate() {
        let ds = open_dataset(c)?;
        for li in 0..ds.layer_count() {
            let layer = ds.layer(li)?;
            let mut name = layer.name();
            if c.ext == "shp" {
                // Several Shapefiles in one zip: name them by path inside the archive.
                name = c
                    .path
                    .strip_prefix(root)
                    .unwrap_or(&c.path)
                    .with_extension("")
                    .to_string_lossy()
                    .trim_start_matches('/')
                    .to_string();
                if cands.len() == 1 {
                    name = layer.name();
                }
            }
            names.push((ci, li, name));
        }
        datasets.push(Some(ds));
    }
    if names.is_empty() {
        return Err(Error::bad("the source has no layers".to_string()));
    }
    let pick = match wanted {
        Some(w) => names
            .iter()
            .position(|(_, _, n)| {
                n == w || Path::new(n).file_name().and_then(|f| f.to_str()) == Some(w)
            })
            .ok_or_else(|| {
                Error::bad(format!(
                    "source layer '{w}' not found; the source has: {}",
                    names
                        .iter()
                        .map(|n| n.2.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        None if names.len() == 1 => 0,
        None => {
            return Err(Error::bad(format!(
                "the source has {} layers; choose one with --source-layer NAME: {}",
                names.len(),
                names
                    .iter()
                    .map(|n| n.2.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let (ci, li, name) = names.swap_remove(pick);
    let dataset = datasets[ci]
        .take()
        .ok_or_else(|| Error::Internal("dataset taken twice".into()))?;
    Ok(Opened {
        dataset,
        layer_index: li,
        layer_name: name,
        candidate: cands[ci].clone(),
    })
}

/// A hint at the real CRS of a source whose coordinates do not fit what was declared:
/// from the centre of its extent, swapped lon/lat or a projected CRS that puts it in
/// `region`. None when the coordinates look right (or there are none).
pub fn crs_hint(opened: &Opened, region: &crate::diagnose::Area) -> Option<String> {
    let layer = opened.dataset.layer(opened.layer_index).ok()?;
    let e = layer.get_extent().ok()?;
    let (cx, cy) = ((e.MinX + e.MaxX) / 2.0, (e.MinY + e.MaxY) / 2.0);
    if !cx.is_finite() || !cy.is_finite() {
        return None;
    }
    let name = &region.name;
    let inside = |x: f64, y: f64| {
        x >= region.bbox[0] && x <= region.bbox[2] && y >= region.bbox[1] && y <= region.bbox[3]
    };
    if cx.abs() <= 180.0 && cy.abs() <= 90.0 && inside(cx, cy) {
        return None;
    }
    if inside(cy, cx) {
        return Some(format!(
            "the coordinates look like latitude/longitude swapped (centre x = {cx:.5}, y = {cy:.5}; swapped it falls in {name}): swap the longitude and latitude columns / las columnas de longitud y latitud parecen intercambiadas"
        ));
    }
    if cx.abs() <= 180.0 && cy.abs() <= 90.0 {
        return None;
    }
    let c = crate::diagnose::crs_candidates(cx, cy, region);
    Some(match c.first() {
        Some((code, label)) => format!(
            "the coordinates are not degrees (centre x = {cx:.1}, y = {cy:.1}); read as EPSG:{code} ({label}) they fall in {name}: try --crs EPSG:{code} / las coordenadas no son grados; pruebe --crs EPSG:{code}"
        ),
        None => format!(
            "the coordinates are not degrees (centre x = {cx:.1}, y = {cy:.1}: metres or feet?) and no usual Mexican CRS puts them in {name}: give the source CRS with --crs EPSG:n"
        ),
    })
}

/// The source CRS: `--crs` wins; then what the source declares; then the format's
/// default (GeoJSON, KML, CSV are lon/lat WGS 84 by their specs). A Shapefile, GeoPackage
/// or FlatGeobuf without one is refused: guessing would put data in the wrong place.
pub fn source_crs(
    opened: &Opened,
    user: Option<&str>,
    notes: &mut Vec<String>,
    region: &crate::diagnose::Area,
) -> Result<SourceCrs> {
    let layer = opened.dataset.layer(opened.layer_index)?;
    let declared = layer.spatial_ref();
    if let Some(def) = user {
        let crs = SourceCrs::from_user(def)?;
        if let Some(d) = declared.and_then(|s| SourceCrs::from_srs(s, "source").ok()) {
            if d.epsg != crs.epsg || crs.epsg.is_none() {
                notes.push(format!(
                    "--crs {} overrides the CRS declared by the source ({})",
                    crs.label(),
                    d.label()
                ));
            }
        }
        return Ok(crs);
    }
    let c = &opened.candidate;
    if let Some(srs) = declared {
        return SourceCrs::from_srs(srs, "source");
    }
    match c.ext.as_str() {
        "shp" => {
            let prj = sibling(&c.path, "prj");
            // A .prj is a line of WKT: more than 1 MiB is not one (read no more).
            let text = prj
                .as_ref()
                .and_then(|p| {
                    use std::io::Read;
                    let mut b = Vec::new();
                    fs::File::open(p)
                        .and_then(|f| f.take(1 << 20).read_to_end(&mut b))
                        .ok()
                        .map(|_| b)
                })
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .trim_start_matches('\u{feff}')
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            if text.is_empty() {
                let what = if prj.is_some() {
                    "an empty .prj file"
                } else {
                    "no .prj file"
                };
                let hint = match crs_hint(opened, region) {
                    Some(h) => format!(". Hint: {h}"),
                    None => {
                        ". Its coordinates look like lon/lat degrees: if so, --crs EPSG:4326".into()
                    }
                };
                return Err(Error::bad(format!(
                    "{}: the Shapefile has {what}, so its coordinate system is unknown. \
                     DataHub does not guess: give it with --crs, e.g. --crs EPSG:6372 (INEGI \
                     Lambert), --crs EPSG:32614 (UTM 14N) or --crs EPSG:4326 (lon/lat){hint}",
                    c.path.display()
                )));
            }
            // Multi-line or BOM-prefixed ESRI .prj files that GDAL's driver rejects.
            let one_line: String = text.lines().map(str::trim).collect();
            // Only as WKT (ESRI's or OGC's): the general parser would also follow a
            // URL or open a file named in a hostile .prj.
            let srs = gdal::spatial_ref::SpatialRef::from_esri(&one_line)
                .or_else(|_| gdal::spatial_ref::SpatialRef::from_wkt(&one_line))
                .map_err(|_| {
                    Error::bad(format!(
                        "{}: the .prj file cannot be read as a coordinate system; fix it or \
                         give the CRS with --crs EPSG:n",
                        c.path.display()
                    ))
                })?;
            SourceCrs::from_srs(srs, "source")
        }
        "geojson" | "json" | "kml" => {
            notes.push(format!(
                "no CRS declared: {} is lon/lat WGS 84 (EPSG:4326) by its specification",
                c.ext.to_uppercase()
            ));
            let mut crs = SourceCrs::wgs84()?;
            crs.how = "format default".into();
            Ok(crs)
        }
        _ => Err(Error::bad(format!(
            "{}: the layer declares no coordinate system; give it with --crs EPSG:n",
            c.path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_checked_across_chunk_boundaries() {
        let mut text = "a".repeat((1 << 16) - 1).into_bytes();
        text.extend_from_slice("ñandú".as_bytes()); // 'ñ' split between chunks
        assert!(is_utf8(&mut &text[..]).unwrap());
        text.push(0xF1); // Latin-1 'ñ' at the end
        assert!(!is_utf8(&mut &text[..]).unwrap());
        assert!(!is_utf8(&mut &b"ca\xF1ada"[..]).unwrap());
    }
}
