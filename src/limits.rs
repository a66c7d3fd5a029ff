//! Bounds on expensive requests: filtered item queries, downloads and analysis.
//!
//! Three things keep one caller (or eight anonymous ones) from taking the machine:
//! - a [`Gate`]: a fixed number of expensive requests run at once, fewer for
//!   anonymous callers; the others wait a little, then get a 503 naming the setting;
//! - a [`Budget`]: each run has a deadline; the loops that scan features call
//!   [`check`] and stop with [`layers::Error::Limit`] when it passes;
//! - cancellation: the request handler holds a guard whose drop (the client went
//!   away, so axum dropped the handler's future) marks the budget cancelled, and the
//!   same [`check`] stops the blocking work.
//!
//! The budget travels in a thread-local set around the blocking closure, so the scan
//! loops (in `features`, `download`, `analysis`) need no extra parameter; code run
//! outside a [`Pass`] (the CLI, tests) has no budget and never stops.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[limits]` in the TOML file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Seconds a filtered query or an analysis may compute (default 20).
    pub query_budget_s: Option<u64>,
    /// Seconds a download may take to compute and write its file (default 300).
    pub download_budget_s: Option<u64>,
    /// Expensive requests computed at once, all callers (default 2 × CPUs, at least 4).
    pub heavy_queries: Option<usize>,
    /// Of those, how many anonymous callers may hold (default CPUs, at least 2).
    pub anonymous_heavy_queries: Option<usize>,
    /// Seconds a request waits for a free slot before the 503 (default 10).
    pub queue_wait_s: Option<u64>,
    /// Files (GeoPackage, Shapefile, CSV, …) written for downloads at once (default 2).
    pub downloads: Option<usize>,
    /// Downloads being sent at once, each holding a thread while its client reads
    /// (default 32; a client that reads nothing for 60 s is cut off).
    pub streams: Option<usize>,
    /// Free space the data folder must keep; a download that would go below is
    /// refused (default 1024 MiB).
    pub min_free_disk_mb: Option<u64>,
    /// Uploads of one layer waiting or running at once (default 3).
    pub queued_jobs_per_layer: Option<usize>,
    /// Uploads waiting or running at once, all layers (default 32).
    pub queued_jobs: Option<usize>,
    /// Uploads ingested at once (default half the CPUs, at least 1: one ingest
    /// already uses every core); the others wait as "queued".
    pub ingests: Option<usize>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (addresses); from anyone
    /// else the header is ignored.
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
    /// Memory for cached analysis results and prepared zone layers (default 256 MiB).
    pub analysis_cache_mb: Option<u64>,
}

/// The resolved limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub query_budget: Duration,
    pub download_budget: Duration,
    pub heavy: usize,
    pub anonymous_heavy: usize,
    pub queue_wait: Duration,
    pub downloads: usize,
    pub streams: usize,
    pub min_free_disk: u64,
    pub queued_jobs_per_layer: usize,
    pub queued_jobs: usize,
    pub ingests: usize,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub analysis_cache: u64,
}

impl From<&LimitSettings> for Limits {
    fn from(s: &LimitSettings) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            query_budget: Duration::from_secs(s.query_budget_s.unwrap_or(20).max(1)),
            download_budget: Duration::from_secs(s.download_budget_s.unwrap_or(300).max(1)),
            heavy: s.heavy_queries.unwrap_or((2 * cpus).max(4)).max(1),
            anonymous_heavy: s.anonymous_heavy_queries.unwrap_or(cpus.max(2)).max(1),
            queue_wait: Duration::from_secs(s.queue_wait_s.unwrap_or(10)),
            downloads: s.downloads.unwrap_or(2).max(1),
            streams: s.streams.unwrap_or(32).max(1),
            min_free_disk: s.min_free_disk_mb.unwrap_or(1024) << 20,
            queued_jobs_per_layer: s.queued_jobs_per_layer.unwrap_or(3).max(1),
            queued_jobs: s.queued_jobs.unwrap_or(32).max(1),
            ingests: s.ingests.unwrap_or((cpus / 2).max(1)).max(1),
            trusted_proxies: s.trusted_proxies.clone().unwrap_or_default(),
            analysis_cache: s.analysis_cache_mb.unwrap_or(256).max(1) << 20,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&LimitSettings::default())
    }
}

/// A deadline and a cancellation flag for one request's work.
#[derive(Clone, Debug)]
pub struct Budget {
    deadline: Instant,
    limit: Duration,
    setting: &'static str,
    cancelled: Arc<AtomicBool>,
    /// A folder being written and the free space it must keep.
    disk: Option<(Arc<std::path::Path>, u64)>,
}

impl Budget {
    pub fn new(limit: Duration, setting: &'static str) -> Self {
        Budget {
            deadline: Instant::now() + limit,
            limit,
            setting,
            cancelled: Arc::default(),
            disk: None,
        }
    }

    /// Also stop when the file system of `folder` has less than `min_free` bytes.
    pub fn keep_free(&mut self, folder: &std::path::Path, min_free: u64) {
        self.disk = Some((Arc::from(folder), min_free));
    }

    fn check(&self) -> layers::Result<()> {
        if let Some((folder, min)) = &self.disk {
            free_space(folder, *min)?;
        }
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(layers::Error::Limit(
                "the client went away; the work was stopped".into(),
            ));
        }
        if Instant::now() > self.deadline {
            return Err(layers::Error::Limit(format!(
                "the request needed more than its budget of {} s (setting [limits] {}); \
                 narrow it (bbox, a simpler filter, limit) or ask the DataHub's operators",
                self.limit.as_secs(),
                self.setting
            )));
        }
        Ok(())
    }

    /// The guard the async side holds: dropping it (the handler's future was
    /// dropped because the client disconnected) cancels the work.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.cancelled.clone()))
    }
}

pub struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    /// The work finished normally: nothing to cancel.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::Relaxed);
            tracing::info!("client went away: its query is being stopped");
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Runs `f` with `budget` as this thread's budget.
pub fn within<T>(budget: Budget, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<Budget>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = CURRENT.with(|c| c.borrow_mut().replace(budget));
    let _reset = Reset(prev);
    f()
}

/// This thread's budget, to hand to worker threads (rayon) with [`within_opt`].
pub fn current() -> Option<Budget> {
    CURRENT.with(|c| c.borrow().clone())
}

/// [`within`] when there is a budget, else just `f`.
pub fn within_opt<T>(budget: Option<Budget>, f: impl FnOnce() -> T) -> T {
    match budget {
        Some(b) => within(b, f),
        None => f(),
    }
}

/// Stops the current work when its budget ran out or its client went away.
/// Cheap enough for every row; loops call [`check_every`] to skip the clock.
pub fn check() -> layers::Result<()> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(b) => b.check(),
        None => Ok(()),
    })
}

/// This thread's budget as a check other threads can call (the workers of a
/// parallel diff, which do not inherit the thread-local budget).
pub fn stopper() -> impl Fn() -> layers::Result<()> + Send + Sync {
    let budget = current();
    move || budget.as_ref().map_or(Ok(()), Budget::check)
}

/// [`check`] on every 1024th `i`.
#[inline]
pub fn check_every(i: usize) -> layers::Result<()> {
    if i & 1023 == 0 {
        check()
    } else {
        Ok(())
    }
}

/// The slots for expensive work.
pub struct Gate {
    all: Arc<Semaphore>,
    anonymous: Arc<Semaphore>,
    downloads: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    /// Ingests of uploads running now (taken by blocking threads: a plain counter).
    ingests: Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
    pub limits: Limits,
}

/// One of the [`Gate`]'s ingest slots, held by a running upload.
pub struct IngestSlot(Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>);

impl Drop for IngestSlot {
    fn drop(&mut self) {
        let (n, cv) = &*self.0;
        *n.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        cv.notify_one();
    }
}

/// What kind of expensive work a request is (its budget and its slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Query,
    Download,
}

/// Permission to run: the slots, released when the blocking work ends (not when
/// the client goes away), and the budget.
#[derive(Debug)]
pub struct Pass {
    permits: Vec<OwnedSemaphorePermit>,
    budget: Budget,
}

impl Gate {
    pub fn new(limits: Limits) -> Self {
        Gate {
            all: Arc::new(Semaphore::new(limits.heavy)),
            anonymous: Arc::new(Semaphore::new(limits.anonymous_heavy)),
            downloads: Arc::new(Semaphore::new(limits.downloads)),
            streams: Arc::new(Semaphore::new(limits.streams)),
            ingests: Arc::default(),
            limits,
        }
    }

    /// Waits (up to `queue_wait`) for the slots `work` needs.
    pub async fn enter(&self, anonymous: bool, work: Work) -> Result<Pass, Busy> {
        let mut permits = Vec::new();
        let deadline = tokio::time::Instant::now() + self.limits.queue_wait;
        // A download takes its own (scarcer) slot first: waiting for it must not hold
        // the slots queries need.
        let take = |sem: &Arc<Semaphore>, setting: &'static str, n: usize| {
            let sem = sem.clone();
            async move {
                tokio::time::timeout_at(deadline, sem.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or(Busy { setting, n })
            }
        };
        if work == Work::Download {
            permits.push(take(&self.downloads, "downloads", self.limits.downloads).await?);
        }
        if anonymous {
            permits.push(
                take(
                    &self.anonymous,
                    "anonymous_heavy_queries",
                    self.limits.anonymous_heavy,
                )
                .await?,
            );
        }
        permits.push(take(&self.all, "heavy_queries", self.limits.heavy).await?);
        let budget = match work {
            Work::Query => Budget::new(self.limits.query_budget, "query_budget_s"),
            Work::Download => Budget::new(self.limits.download_budget, "download_budget_s"),
        };
        Ok(Pass { permits, budget })
    }
}

impl Gate {
    /// Waits (blocking: called from an upload's thread) for a free ingest slot.
    pub fn ingest_slot(&self) -> IngestSlot {
        let (n, cv) = &*self.ingests;
        let mut used = n.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= self.limits.ingests {
            used = cv.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        IngestSlot(self.ingests.clone())
    }

    /// A slot for sending a download (held by the sending thread until it ends).
    pub async fn enter_stream(&self) -> Result<OwnedSemaphorePermit, Busy> {
        tokio::time::timeout(self.limits.queue_wait, self.streams.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Busy {
                setting: "streams",
                n: self.limits.streams,
            })
    }
}

/// No slot came free in time.
#[derive(Debug)]
pub struct Busy {
    pub setting: &'static str,
    pub n: usize,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server is busy: {} expensive requests of this kind are already running \
             (setting [limits] {}); try again in a few seconds",
            self.n, self.setting
        )
    }
}

/// Refuses when `folder`'s file system has less than `min_free` bytes available.
pub fn free_space(folder: &std::path::Path, min_free: u64) -> layers::Result<()> {
    let free = fs2::available_space(folder).map_err(|e| layers::Error::io(folder, e))?;
    if free < min_free {
        return Err(layers::Error::Limit(format!(
            "the server is short of disk space ({} MiB free, it keeps {} MiB: setting [limits] \
             min_free_disk_mb); try a GeoJSON download (streamed, no disk) or later",
            free >> 20,
            min_free >> 20
        )));
    }
    Ok(())
}

impl Pass {
    pub fn budget_mut(&mut self) -> &mut Budget {
        &mut self.budget
    }

    /// Runs `f` on the blocking pool under this pass's budget; the slots are held
    /// until `f` returns. Dropping the returned future (the client went away)
    /// cancels `f` at its next [`check`].
    pub async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> layers::Result<T> + Send + 'static,
    ) -> Result<layers::Result<T>, tokio::task::JoinError> {
        let guard = self.budget.cancel_on_drop();
        let Pass { permits, budget } = self;
        let r = tokio::task::spawn_blocking(move || {
            let _permits = permits;
            within(budget, f)
        })
        .await;
        guard.disarm();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out_and_names_its_setting() {
        let b = Budget::new(Duration::from_millis(0), "query_budget_s");
        std::thread::sleep(Duration::from_millis(2));
        let e = within(b, check).unwrap_err().to_string();
        assert!(e.contains("query_budget_s"), "{e}");
        // Outside a pass nothing is bounded.
        assert!(check().is_ok());
    }

    #[test]
    fn dropping_the_guard_cancels() {
        let b = Budget::new(Duration::from_secs(60), "query_budget_s");
        drop(b.cancel_on_drop());
        let e = within(b, check).unwrap_err().to_string();
        assert!(e.contains("went away"), "{e}");
    }

    #[tokio::test]
    async fn anonymous_callers_get_fewer_slots() {
        let gate = Gate::new(Limits {
            heavy: 3,
            anonymous_heavy: 1,
            queue_wait: Duration::from_millis(50),
            ..Limits::default()
        });
        let a = gate.enter(true, Work::Query).await.unwrap();
        let e = gate.enter(true, Work::Query).await.unwrap_err();
        assert_eq!(e.setting, "anonymous_heavy_queries");
        // A signed-in caller still gets in.
        let b = gate.enter(false, Work::Query).await.unwrap();
        drop((a, b));
        assert!(gate.enter(true, Work::Query).await.is_ok());
    }
}
