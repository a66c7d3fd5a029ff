//! The error type of the `layers` crate: every failure names what is wrong and where.
//!
//! Errors come in two kinds: the user's input is wrong (a bad file, an unknown CRS,
//! an unknown layer) and the service itself failed (I/O, GDAL, a corrupt store).
//! [`Error::is_user_error`] tells them apart so callers map the first to exit code 2
//! or HTTP 4xx and the second to 5xx.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input file or the request is wrong; the message says how to fix it.
    #[error("{0}")]
    BadInput(String),
    /// A layer id that does not exist in the store.
    #[error("layer '{0}' does not exist")]
    UnknownLayer(String),
    /// Another process is ingesting the same layer right now.
    #[error("layer '{0}' is being ingested by another process; try again when it finishes")]
    Busy(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GDAL error: {0}")]
    Gdal(String),
    #[error("PROJ error: {0}")]
    Proj(String),
    #[error("stored layer is corrupt: {0}")]
    Corrupt(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A bound on the work was reached (a time budget, the client went away, a
    /// limit on concurrent work or free disk): the service is fine, try later or
    /// ask for less. The message names the setting.
    #[error("{0}")]
    Limit(String),
    /// A version that is no longer kept (retention dropped it) was asked for.
    #[error("{0}")]
    Gone(String),
    /// The request conflicts with the layer's state now (a draft whose base version
    /// was replaced); the message says what to do.
    #[error("{0}")]
    Conflict(String),
    /// The shared database (PostgreSQL) cannot be reached: what is loaded keeps being
    /// served, changes are refused until it is back.
    #[error("the database is unavailable ({0}); layers already loaded are still served, changes are refused until it is back: try again shortly")]
    Database(String),
}

impl Error {
    pub fn bad(msg: impl Into<String>) -> Self {
        Error::BadInput(msg.into())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the caller (not the service) has to change something.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::BadInput(_)
                | Error::UnknownLayer(_)
                | Error::Busy(_)
                | Error::Gone(_)
                | Error::Conflict(_)
        )
    }
}

impl From<gdal::errors::GdalError> for Error {
    fn from(e: gdal::errors::GdalError) -> Self {
        Error::Gdal(e.to_string())
    }
}
