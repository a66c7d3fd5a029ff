//! The connection to PostgreSQL that the PostgreSQL layer store and catalogue share: a
//! pool (deadpool) driven by a small runtime of its own, called from synchronous code
//! through [`Db::run`], and a listener for the change notifications other replicas send.
//!
//! Why a runtime of its own: the stores are synchronous traits called from blocking
//! threads *and* from async handlers (a token check). A call blocks its caller until the
//! database answers, never the runtime that drives the connections; tokio's own
//! `block_on` would panic inside the server's runtime.
//!
//! Every failure to reach the database is [`Error::Database`] (HTTP 503, "try again"),
//! distinct from a query the database refused (a bug: 500).

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::{Error, Result};

/// The channel every change is announced on (`NOTIFY datahub_changes, '<what>'`).
pub const CHANNEL: &str = "datahub_changes";

/// A pooled client, as [`Db::run`] hands it to a query.
pub type Client = deadpool_postgres::Object;

/// A shared handle on the database.
pub struct Db {
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    config: tokio_postgres::Config,
    /// Host, port and database, for messages (never the password).
    shown: String,
}

/// Maps a driver error: a broken or refused connection is the database being away
/// (503); anything else is a statement the database refused.
pub fn db_err(e: tokio_postgres::Error) -> Error {
    // Connection failures, a server starting up or shutting down, too many
    // connections, a lock wait that timed out: the database is away or busy (503).
    let away = e.code().is_none_or(|c| {
        let c = c.code();
        c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c == "55P03"
    });
    if e.is_closed() || away {
        Error::Database(e.to_string())
    } else {
        let detail = e
            .as_db_error()
            .map(|d| format!("{}: {}", d.code().code(), d.message()))
            .unwrap_or_else(|| e.to_string());
        Error::Internal(format!("database: {detail}"))
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_err(e),
        other => Error::Database(other.to_string()),
    }
}

impl Db {
    /// Connects to `url` (`postgres://user:password@host:port/db` or `host=… dbname=…`),
    /// waiting up to `wait` for the database to answer and saying so every few
    /// seconds: a replica started while the database is down waits for it.
    pub fn connect(url: &str, wait: Duration) -> Result<Db> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::bad(format!(
                "the database address is not a PostgreSQL connection string ({e}); \
                 write it as postgres://user:password@host:5432/database"
            ))
        })?;
        let shown = describe(&config);
        if config.get_options().is_none() {
            // "already exists, skipping" notices of the idempotent schema set-up are
            // not worth a log line each.
            config.options("-c client_min_messages=warning");
        }
        if config.get_application_name().is_none() {
            config.application_name("datahub");
        }
        // A partitioned network must not leave queries waiting for hours (the
        // kernel's default idle time before the first keepalive is 2 h).
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("datahub-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("database runtime: {e}")))?;
        let mgr = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection goes back to the pool clean: no session advisory lock,
                // no open transaction (a panicking step must not leave the layer's
                // record lock held in the pool).
                recycling_method: RecyclingMethod::Clean,
            },
        );
        let pool = {
            // The pool's timers belong to this runtime.
            let _guard = rt.enter();
            Pool::builder(mgr)
                .max_size(16)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(5)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| Error::Internal(format!("database pool: {e}")))?
        };
        let db = Db {
            rt: Some(rt),
            pool,
            config,
            shown,
        };
        let t0 = Instant::now();
        let mut said = Instant::now() - Duration::from_secs(60);
        loop {
            match db.run(|c| async move { c.simple_query("SELECT 1").await.map_err(db_err) }) {
                Ok(_) => break,
                Err(e) if t0.elapsed() < wait => {
                    if said.elapsed() >= Duration::from_secs(5) {
                        tracing::warn!(database = %db.shown, error = %e, "waiting for the database");
                        eprintln!("waiting for the database at {} ({e})", db.shown);
                        said = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => {
                    // The driver's own words, not wrapped twice in "unavailable".
                    let why = match e {
                        Error::Database(m) => m,
                        other => other.to_string(),
                    };
                    return Err(Error::Database(format!(
                        "cannot reach the database at {} after {} s: {why}",
                        db.shown,
                        wait.as_secs()
                    )));
                }
            }
        }
        Ok(db)
    }

    /// Where the database is (host, port, database), for messages and `/health`.
    pub fn describe(&self) -> &str {
        &self.shown
    }

    fn rt(&self) -> Result<&tokio::runtime::Runtime> {
        self.rt
            .as_ref()
            .ok_or_else(|| Error::Internal("database runtime stopped".into()))
    }

    /// Runs `f` with a pooled client on the database runtime and waits for it.
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let pool = self.pool.clone();
        self.block(async move {
            match pool.get().await {
                Ok(c) => f(c).await,
                Err(e) => Err(pool_err(e)),
            }
        })
    }

    /// Runs `fut` on the database runtime and waits for its result.
    pub fn block<T, Fut>(&self, fut: Fut) -> Result<T>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt()?.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Internal("database task ended without answering".into()))?
    }

    /// Whether the database answers now (within 2 s).
    pub fn ping(&self) -> bool {
        self.run(|c| async move {
            tokio::time::timeout(Duration::from_secs(2), c.simple_query("SELECT 1"))
                .await
                .map_err(|_| Error::Database("no answer within 2 s".into()))?
                .map_err(db_err)
        })
        .is_ok()
    }

    /// Connections open and idle in the pool, and the pool's size.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.pool.status();
        (s.size, s.available, s.max_size)
    }

    /// Listens on [`CHANNEL`] for as long as the process lives, on a connection of
    /// its own that is re-established after the database went away (then `on("")`
    /// is called: something may have changed meanwhile, look at everything).
    pub fn listen(&self, on: Arc<dyn Fn(String) + Send + Sync>) -> Result<()> {
        let config = self.config.clone();
        self.rt()?.spawn(async move {
            let mut first = true;
            loop {
                match listen_once(&config, &on, first).await {
                    Ok(()) => tracing::warn!("change notifications ended; reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "no change notifications; retrying"),
                }
                first = false;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(())
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    on: &Arc<dyn Fn(String) + Send + Sync>,
    first: bool,
) -> Result<()> {
    use futures_util::StreamExt;
    let (client, mut conn) = config.connect(NoTls).await.map_err(db_err)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.payload().to_string());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "notification connection failed");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(db_err)?;
    // Whatever was announced before we listened (since the start-up copy, or while
    // we were away) is found by a full look.
    let _ = first;
    on(String::new());
    while let Some(p) = rx.recv().await {
        on(p);
    }
    driver.abort();
    Ok(())
}

fn describe(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", c.get_dbname().unwrap_or("postgres"))
}

impl Drop for Db {
    fn drop(&mut self) {
        // Dropped from inside the server's runtime at exit: a blocking shutdown would
        // panic there, and nothing is left to wait for.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Quotes an identifier for SQL (`"a""b"`).
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A 64-bit advisory-lock key for `what` (stable across processes and versions).
pub fn lock_key(what: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(what.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b)
}

/// A connection checked out for a sequence of statements issued from blocking code
/// (a transaction whose middle step runs a caller's closure). Dropped without
/// [`Held::commit`], its connection is closed, not returned to the pool, so the
/// database rolls the transaction back and releases its locks.
pub struct Held<'a> {
    db: &'a Db,
    client: Option<Client>,
    open: bool,
}

impl Db {
    /// Checks a connection out and starts a transaction on it.
    pub fn begin(&self) -> Result<Held<'_>> {
        let client = self.run(|c| async move {
            c.batch_execute("BEGIN").await.map_err(db_err)?;
            Ok(c)
        })?;
        Ok(Held {
            db: self,
            client: Some(client),
            open: true,
        })
    }
}

impl Held<'_> {
    /// Runs one step on the held connection; `f` hands the client back with its result.
    pub fn step<T, F, Fut>(&mut self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = (Client, Result<T>)> + Send + 'static,
    {
        let c = self
            .client
            .take()
            .ok_or_else(|| Error::Internal("database connection lost in a transaction".into()))?;
        let (c, r) = self.db.block(async move { Ok(f(c).await) })?;
        self.client = Some(c);
        r
    }

    /// Commits; the connection goes back to the pool.
    pub fn commit(mut self) -> Result<()> {
        self.step(|c| async move {
            let r = c.batch_execute("COMMIT").await.map_err(db_err);
            (c, r)
        })?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Some(c) = self.client.take() {
                // Detached from the pool and dropped: the connection closes and the
                // server rolls back whatever this transaction did.
                drop(deadpool_postgres::Object::take(c));
            }
        }
    }
}
