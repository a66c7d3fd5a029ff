//! Settings: flags and `DATAHUB_*` environment variables (handled by clap) win over an
//! optional TOML file (`--config`), which wins over the defaults below. Unknown keys
//! in the file are an error, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Keys accepted in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub addr: Option<SocketAddr>,
    pub data: Option<PathBuf>,
    pub keep_versions: Option<usize>,
    pub refresh_secs: Option<u64>,
    pub max_unzipped_mb: Option<u64>,
    /// Largest file accepted by the upload API (413 beyond).
    pub max_upload_mb: Option<u64>,
    /// `[tiles]` and `[tiles.layers.<id>]`.
    pub tiles: Option<crate::tileserve::TileSettings>,
    /// No longer used (MapLibre GL JS is compiled into the binary); accepted so
    /// that existing files keep working.
    pub web_dir: Option<PathBuf>,
    /// `[quality]`: expected area, wider region and grade thresholds of the diagnosis.
    pub quality: Option<layers::diagnose::DiagnoseConfig>,
    /// `[map]`: the web map's basemap.
    pub map: Option<MapSettings>,
    /// `[limits]`: budgets and slots of expensive requests, trusted proxies.
    pub limits: Option<crate::limits::LimitSettings>,
    /// `[webhooks]`: retries and timeouts of notifications to subscribers.
    pub webhooks: Option<crate::webhooks::WebhookSettings>,
    /// PostgreSQL/PostGIS shared by replicas (`postgres://user:pass@host/db`); absent:
    /// the data folder is the store.
    pub database: Option<String>,
    /// How long a starting server waits for the database (default 600 s).
    pub database_wait_s: Option<u64>,
}

/// The web map's basemap. Default: none (a plain background with the neighbourhood
/// boundaries layer on top), which works offline.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MapSettings {
    /// A MapLibre style URL used as the basemap (its origin is allowed by the page's CSP).
    pub basemap_style: Option<String>,
    /// Or a raster tile template, e.g. `https://tile.openstreetmap.org/{z}/{x}/{y}.png`.
    pub basemap_tiles: Option<String>,
    pub basemap_attribution: Option<String>,
    /// The layer drawn as boundaries when the map opens (default `colonias`).
    pub boundaries: Option<String>,
}

impl MapSettings {
    /// The origins (scheme://host[:port]) the configured basemap is loaded from.
    pub fn origins(&self) -> Vec<String> {
        [&self.basemap_style, &self.basemap_tiles]
            .into_iter()
            .flatten()
            .filter_map(|u| {
                let (scheme, rest) = u.split_once("://")?;
                if scheme != "https" && scheme != "http" {
                    return None;
                }
                let host = rest.split('/').next()?;
                // Subdomain templates ({s}.tile…) become a CSP wildcard.
                let host = match host.strip_prefix("{s}.") {
                    Some(h) => format!("*.{h}"),
                    None => host.to_string(),
                };
                // Only plain host[:port] characters may go into the CSP header.
                host.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*'))
                    .then(|| format!("{scheme}://{host}"))
            })
            .collect()
    }
}

impl FileSettings {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub keep_versions: usize,
    /// How often the server looks for versions published by other processes.
    pub refresh_secs: u64,
    pub max_unzipped_mb: u64,
    pub max_upload_mb: u64,
    pub tiles: crate::tileserve::TileSettings,
    pub quality: layers::diagnose::DiagnoseConfig,
    pub map: MapSettings,
    pub limits: crate::limits::Limits,
    /// The PostgreSQL backend's connection string (None: the data folder).
    pub database: Option<String>,
    pub database_wait: std::time::Duration,
    pub webhooks: crate::webhooks::WebhookSettings,
}

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

impl Settings {
    pub fn resolve(
        file: FileSettings,
        addr: Option<SocketAddr>,
        data: Option<PathBuf>,
        keep_versions: Option<usize>,
    ) -> Self {
        let default_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080));
        Settings {
            addr: addr.or(file.addr).unwrap_or(default_addr),
            data: data.or(file.data).unwrap_or_else(|| PathBuf::from("data")),
            keep_versions: keep_versions.or(file.keep_versions).unwrap_or(5),
            refresh_secs: file.refresh_secs.unwrap_or(2).max(1),
            max_unzipped_mb: file.max_unzipped_mb.unwrap_or(8192),
            max_upload_mb: file.max_upload_mb.unwrap_or(2048).max(1),
            tiles: file.tiles.unwrap_or_default(),
            quality: file.quality.unwrap_or_default(),
            map: file.map.unwrap_or_default(),
            limits: crate::limits::Limits::from(&file.limits.unwrap_or_default()),
            database: file.database.filter(|d| !d.trim().is_empty()),
            database_wait: std::time::Duration::from_secs(file.database_wait_s.unwrap_or(600)),
            webhooks: file.webhooks.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<FileSettings>("adr = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.to_string().contains("unknown field"));
    }

    #[test]
    fn basemap_origins_go_into_the_csp() {
        let m = MapSettings {
            basemap_tiles: Some("https://{s}.tile.example.org/{z}/{x}/{y}.png".into()),
            basemap_style: Some("http://maps.local:8081/style.json".into()),
            ..Default::default()
        };
        assert_eq!(
            m.origins(),
            ["http://maps.local:8081", "https://*.tile.example.org"]
        );
        let bad = MapSettings {
            basemap_style: Some("https://x.org;script-src *\"/s".into()),
            ..Default::default()
        };
        assert!(bad.origins().is_empty());
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileSettings = toml::from_str("data = \"/srv/x\"\nkeep_versions = 9").unwrap();
        let s = Settings::resolve(file, None, Some("/y".into()), None);
        assert_eq!(s.data, PathBuf::from("/y"));
        assert_eq!(s.keep_versions, 9);
        assert_eq!(s.addr.to_string(), DEFAULT_ADDR);
    }
}
