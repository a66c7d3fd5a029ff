//! Which backend this process uses, chosen once at start: the data folder (FlatGeobuf
//! files and SQLite, the embedded default that `make run` uses), or PostgreSQL/PostGIS
//! shared by several replicas (`--database`, `DATAHUB_DATABASE`, `database` in the
//! TOML). Everything else holds the two trait objects and never asks which it is.

use std::sync::Arc;
use std::time::Duration;

use layers::pg::Db;
use layers::store::postgres::PgStore;
use layers::store::{FsStore, LayerStore};

use crate::catalog::postgres::PgCatalog;
use crate::catalog::{CatalogStore, SqliteCatalog};
use crate::config::Settings;

/// The stores a process works with.
#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn LayerStore>,
    pub catalog: Arc<dyn CatalogStore>,
    /// Present with the PostgreSQL backend: what replication and health need.
    pub pg: Option<Pg>,
}

/// The PostgreSQL side of a [`Backend`].
#[derive(Clone)]
pub struct Pg {
    pub db: Arc<Db>,
    pub store: Arc<PgStore>,
    pub catalog: Arc<PgCatalog>,
}

impl Backend {
    /// Opens the configured backend. With PostgreSQL, waits up to `wait` for the
    /// database (saying so every few seconds), creates its schema if missing and,
    /// when `copy` (the command reads layers), brings this process's copy of the
    /// layers up to date.
    pub fn open(settings: &Settings, wait: Duration, copy: bool) -> layers::Result<Backend> {
        match &settings.database {
            None => {
                let store: Arc<dyn LayerStore> =
                    Arc::new(FsStore::open(&settings.data, settings.keep_versions)?);
                let catalog: Arc<dyn CatalogStore> = Arc::new(SqliteCatalog::open(&settings.data)?);
                Ok(Backend {
                    store,
                    catalog,
                    pg: None,
                })
            }
            Some(url) => {
                let db = Arc::new(Db::connect(url, wait)?);
                let store = Arc::new(PgStore::open(
                    db.clone(),
                    &settings.data,
                    settings.keep_versions,
                )?);
                let catalog = Arc::new(PgCatalog::open(db.clone())?);
                if copy {
                    store.sync()?;
                }
                Ok(Backend {
                    store: store.clone(),
                    catalog: catalog.clone(),
                    pg: Some(Pg { db, store, catalog }),
                })
            }
        }
    }
}
