//! Safe unpacking of zip archives (zipped Shapefiles, .gdb.zip, KMZ) into a staging dir.
//!
//! Uploaded archives are untrusted: entry names may climb out of the target dir
//! (`../../etc/passwd`), and a few kilobytes can expand to terabytes. Names are checked
//! before anything is written, declared sizes are checked against [`Limits`], and
//! the bytes actually written are counted too, because declared sizes can lie.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use crate::{Error, Result};

/// Caps for unpacking one archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total uncompressed bytes.
    pub max_uncompressed: u64,
    /// Largest compression ratio tolerated for an entry over 10 MiB.
    pub max_ratio: u64,
    /// Number of entries.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed: 8 << 30,
            max_ratio: 1000,
            max_entries: 10_000,
        }
    }
}

fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

/// Checks what a zip declares before anything is inflated (entry count, names that
/// climb out, entries that expand more than `max_ratio`); returns the declared total.
/// Also used for zip-based spreadsheets, which their reader inflates in memory.
pub fn check_entries(zip: &mut zip::ZipArchive<File>, name: &str, limits: Limits) -> Result<u64> {
    if zip.len() > limits.max_entries {
        return Err(Error::bad(format!(
            "{name} has {} entries, more than the limit of {}",
            zip.len(),
            limits.max_entries
        )));
    }
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| Error::bad(format!("{name}: entry {i} is corrupt: {e}")))?;
        if entry.enclosed_name().is_none() {
            return Err(Error::bad(format!(
                "{name}: entry '{}' points outside the archive (path traversal); refused",
                entry.name()
            )));
        }
        let size = entry.size();
        let packed = entry.compressed_size().max(1);
        if size > 10 << 20 && size / packed > limits.max_ratio {
            return Err(Error::bad(format!(
                "{name}: entry '{}' expands {}x ({} from {}); refused as a zip bomb",
                entry.name(),
                size / packed,
                mib(size),
                mib(packed)
            )));
        }
        declared = declared.saturating_add(size);
    }
    Ok(declared)
}

/// Unpacks `zip_path` into `dest` (which must exist), or fails without leaving
/// anything the caller has to clean beyond `dest` itself.
pub fn extract_zip(zip_path: &Path, dest: &Path, limits: Limits) -> Result<()> {
    let name = zip_path.display();
    let file = File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        Error::bad(format!(
            "{name} is not a readable zip archive (corrupt or truncated): {e}"
        ))
    })?;
    let declared = check_entries(&mut zip, &name.to_string(), limits)?;
    if declared > limits.max_uncompressed {
        return Err(Error::bad(format!(
            "{name} would unpack to {}, more than the limit of {}",
            mib(declared),
            mib(limits.max_uncompressed)
        )));
    }
    let mut written: u64 = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| Error::bad(format!("{name}: entry {i} cannot be read: {e}")))?;
        let Some(rel) = entry.enclosed_name() else {
            continue;
        };
        let out = dest.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut f = File::create(&out).map_err(|e| Error::io(&out, e))?;
        let budget = limits.max_uncompressed - written.min(limits.max_uncompressed);
        let n = io::copy(&mut (&mut entry).take(budget + 1), &mut f)
            .map_err(|e| Error::bad(format!("{name}: entry '{}' is corrupt: {e}", entry.name())))?;
        written += n;
        if n > budget {
            return Err(Error::bad(format!(
                "{name} unpacks to more than {} (its headers understate it); refused as a zip bomb",
                mib(limits.max_uncompressed)
            )));
        }
    }
    Ok(())
}
