//! Background ingests of uploaded files: one job per upload, its state and progress
//! (features read of the total), its report or readable failure reason. Jobs of
//! different layers run in parallel on the blocking pool; jobs of one layer wait for
//! each other (and record edits wait for them), so a version never starts from a
//! record that is about to change. Finished jobs are kept in the catalogue database.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::catalog::CatalogStore;

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Queued,
    Running,
    Succeeded(Value),
    Failed(String),
}

pub struct Job {
    pub id: String,
    pub layer: String,
    pub ministry: String,
    pub actor: String,
    pub source_file: String,
    pub created_at: String,
    state: Mutex<State>,
    finished_at: Mutex<Option<String>>,
    pub read: AtomicU64,
    /// 0 while unknown (some sources cannot count features up front).
    pub total: AtomicU64,
}

impl Job {
    /// Queued or running: it holds a place in the upload queues.
    pub fn is_active(&self) -> bool {
        matches!(self.state(), State::Queued | State::Running)
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, s: State) {
        if matches!(s, State::Succeeded(_) | State::Failed(_)) {
            *self.finished_at.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(crate::catalog::now());
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The job as `GET /api/jobs/{id}` shows it.
    pub fn doc(&self) -> Value {
        let (state, result, error) = match self.state() {
            State::Queued => ("queued", Value::Null, Value::Null),
            State::Running => ("running", Value::Null, Value::Null),
            State::Succeeded(r) => ("succeeded", r, Value::Null),
            State::Failed(e) => ("failed", Value::Null, json!(e)),
        };
        let read = self.read.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let percent = match state {
            "succeeded" => json!(100.0),
            _ if total > 0 => {
                json!(((read as f64 / total as f64) * 1000.0).round().min(999.0) / 10.0)
            }
            _ => Value::Null,
        };
        json!({
            "id": self.id,
            "layer": self.layer,
            "ministry": self.ministry,
            "state": state,
            "progress": {"features_read": read, "features_total": (total > 0).then_some(total), "percent": percent},
            "source_file": self.source_file,
            "submitted_by": self.actor,
            "created_at": self.created_at,
            "finished_at": self.finished_at.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "result": result,
            "error": error,
        })
    }
}

pub fn too_many_jobs(layer: &str, cap: usize) -> layers::Error {
    layers::Error::Limit(format!(
        "{cap} uploads of layer '{layer}' are already queued or running (setting [limits] \
         queued_jobs_per_layer); wait for them to finish (GET /api/jobs/{{id}}) and send again"
    ))
}

/// Running and recent jobs, and the per-layer locks.
pub struct Jobs {
    catalog: Arc<dyn CatalogStore>,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// What an upload asks: the staged file and the ingest request built from it.
pub struct Upload {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
    /// The folder's owner lock (`layers::store::hold_dir`): held until the upload
    /// is dropped, so a cleanup by another process never takes a live upload.
    pub owner: std::fs::File,
}

impl Jobs {
    pub fn new(catalog: Arc<dyn CatalogStore>) -> Self {
        Jobs {
            catalog,
            jobs: Mutex::default(),
            locks: Mutex::default(),
        }
    }

    /// The lock serializing writes to one layer.
    pub fn layer_lock(&self, layer: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(layer.to_string())
            .or_default()
            .clone()
    }

    /// Jobs queued or running, all layers.
    pub fn active_all(&self) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|j| j.is_active())
            .count()
    }

    /// Jobs of `layer` queued or running.
    pub fn active(&self, layer: &str) -> usize {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|j| j.layer == layer && j.is_active())
            .count()
    }

    /// A new queued job, unless `layer` already has `per_layer` jobs queued or
    /// running, or all layers `total` (each waiting job holds a thread and its
    /// uploaded file: uploads must not pile up).
    pub fn create(
        &self,
        layer: &str,
        ministry: &str,
        actor: &str,
        source_file: &str,
        (per_layer, total): (usize, usize),
    ) -> layers::Result<Arc<Job>> {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).map_err(|e| layers::Error::Internal(e.to_string()))?;
        let job = Arc::new(Job {
            id: hex::encode(b),
            layer: layer.into(),
            ministry: ministry.into(),
            actor: actor.into(),
            source_file: source_file.into(),
            created_at: crate::catalog::now(),
            state: Mutex::new(State::Queued),
            finished_at: Mutex::new(None),
            read: AtomicU64::new(0),
            total: AtomicU64::new(0),
        });
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let active: Vec<&Arc<Job>> = jobs.values().filter(|j| j.is_active()).collect();
            if active.iter().filter(|j| j.layer == layer).count() >= per_layer {
                return Err(too_many_jobs(layer, per_layer));
            }
            if active.len() >= total {
                return Err(layers::Error::Limit(format!(
                    "{total} uploads are already queued or running (setting [limits] \
                     queued_jobs); send again when some have finished"
                )));
            }
            jobs.insert(job.id.clone(), job.clone());
        }
        self.persist(&job);
        Ok(job)
    }

    /// Stores the job's record (finished jobs outlive the process).
    pub fn persist(&self, job: &Job) {
        if let Err(e) = self.catalog.save_job(&job.doc()) {
            tracing::error!(job = %job.id, error = %e, "cannot save job record");
        }
    }

    /// A job's document: live when it runs in this process, else its stored record
    /// (one that was queued or running when the server stopped is reported failed).
    pub fn doc(&self, id: &str) -> layers::Result<Option<Value>> {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Some(j.doc()));
        }
        Ok(self.catalog.job(id)?.map(|mut d| {
            // A shared catalogue says whether the replica running it still lives.
            let elsewhere = d["replica_alive"].as_bool() == Some(true);
            if let Some(o) = d.as_object_mut() {
                o.remove("replica_alive");
                o.remove("replica");
            }
            if !elsewhere && matches!(d["state"].as_str(), Some("queued" | "running")) {
                d["state"] = json!("failed");
                d["error"] = json!("the server stopped before this upload was published; the previous version is still served: upload the file again");
            }
            d
        }))
    }

    /// Forget finished jobs older than an hour from memory (their records stay).
    pub fn prune(&self) {
        let cutoff = (chrono::Utc::now() - chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, j| {
                let done = j
                    .finished_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                !matches!(done, Some(d) if d <= cutoff)
            });
    }
}
