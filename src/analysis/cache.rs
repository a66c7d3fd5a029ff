//! Prepared zone layers and computed aggregates, kept in memory per layer version:
//! a repeated request is a lookup. Keys carry the versions, so a new version is never
//! answered from an old entry; [`Cache::invalidate`] also frees the old entries at once.

use std::sync::Arc;

use layers::index::LoadedLayer;

use super::{Aggregate, Zones};

type ZoneKey = (String, u32, Option<String>);

pub struct Cache {
    zones: moka::sync::Cache<ZoneKey, Arc<Zones>>,
    results: moka::sync::Cache<String, Arc<Aggregate>>,
    /// Other results (coverage, profiles) as JSON, keyed by text holding `id@version`
    /// of every layer they read.
    values: moka::sync::Cache<String, Arc<serde_json::Value>>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(256 << 20)
    }
}

/// A moka weight (u32) from a byte count.
fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX).max(1)
}

impl Cache {
    /// At most `bytes` of memory, roughly, in all: half for prepared zone layers, a
    /// quarter each for aggregates and other results. Bounded in bytes, not entries:
    /// a few large zone layers or many results with distinct parameters (each
    /// radius, filter, point is a key) cannot grow the process without bound.
    pub fn new(bytes: u64) -> Self {
        Cache {
            zones: moka::sync::Cache::builder()
                .max_capacity(bytes / 2)
                .weigher(|_, z: &Arc<Zones>| weight(z.approx_bytes()))
                .support_invalidation_closures()
                .build(),
            results: moka::sync::Cache::builder()
                .max_capacity(bytes / 4)
                .weigher(|k: &String, a: &Arc<Aggregate>| weight(k.len() + a.approx_bytes()))
                .support_invalidation_closures()
                .build(),
            values: moka::sync::Cache::builder()
                .max_capacity(bytes / 4)
                .weigher(|k: &String, v: &Arc<serde_json::Value>| {
                    weight(k.len() + serde_json::to_vec(&**v).map_or(0, |b| b.len()) * 2)
                })
                .support_invalidation_closures()
                .build(),
        }
    }

    /// Bytes held now, as the weighers count them.
    pub fn weighted_bytes(&self) -> u64 {
        self.zones.run_pending_tasks();
        self.results.run_pending_tasks();
        self.values.run_pending_tasks();
        self.zones.weighted_size() + self.results.weighted_size() + self.values.weighted_size()
    }

    /// The zone layer prepared (decoded, indexed, measured) once per version.
    pub fn zones(
        &self,
        layer: &LoadedLayer,
        name_field: Option<String>,
    ) -> layers::Result<Arc<Zones>> {
        let key = (
            layer.meta.id.clone(),
            layer.meta.version,
            name_field.clone(),
        );
        retry_once(|| {
            self.zones
                .try_get_with(key.clone(), || {
                    Zones::load(layer, name_field.clone()).map(Arc::new)
                })
                .map_err(|e| (*e).clone_error())
        })
    }

    /// The zone layer prepared, named by `wanted` or the default name field.
    pub fn zones_named(
        &self,
        layer: &LoadedLayer,
        wanted: Option<&str>,
    ) -> layers::Result<Arc<Zones>> {
        let nf = super::zones::name_field(layer, wanted).map_err(layers::Error::bad)?;
        self.zones(layer, nf)
    }

    /// The prepared zone layer and the aggregate when both are cached already
    /// (nothing is computed): lets a request that only reads them skip the gate.
    pub fn peek(
        &self,
        layer: &LoadedLayer,
        wanted: Option<&str>,
        key: impl FnOnce(&Zones) -> String,
    ) -> Option<(Arc<Zones>, Arc<Aggregate>)> {
        let nf = super::zones::name_field(layer, wanted).ok()?;
        let zones = self
            .zones
            .get(&(layer.meta.id.clone(), layer.meta.version, nf))?;
        let agg = self.results.get(&key(&zones))?;
        Some((zones, agg))
    }

    /// The aggregate under `key`, computed by `f` on a miss (concurrent misses for the
    /// same key compute once).
    pub fn aggregate(
        &self,
        key: String,
        f: impl FnOnce() -> layers::Result<Aggregate>,
    ) -> layers::Result<Arc<Aggregate>> {
        let mut f = Some(f);
        retry_once(|| {
            self.results
                .try_get_with(key.clone(), || match f.take() {
                    Some(f) => f().map(Arc::new),
                    None => Err(layers::Error::Limit(RECOMPUTE.into())),
                })
                .map_err(|e| (*e).clone_error())
        })
    }

    /// A JSON result under `key` (which must name every layer as `id@version`).
    pub fn value(
        &self,
        key: String,
        f: impl FnOnce() -> layers::Result<serde_json::Value>,
    ) -> layers::Result<Arc<serde_json::Value>> {
        let mut f = Some(f);
        retry_once(|| {
            self.values
                .try_get_with(key.clone(), || match f.take() {
                    Some(f) => f().map(Arc::new),
                    None => Err(layers::Error::Limit(RECOMPUTE.into())),
                })
                .map_err(|e| (*e).clone_error())
        })
    }

    /// Drops everything computed from these layers.
    pub fn invalidate(&self, ids: &[String]) {
        let a = ids.to_vec();
        let _ = self
            .zones
            .invalidate_entries_if(move |k, _| a.contains(&k.0));
        let b = ids.to_vec();
        let _ = self
            .results
            .invalidate_entries_if(move |_, v| b.contains(&v.zones_id) || b.contains(&v.layer_id));
        let c: Vec<String> = ids.iter().map(|id| format!("{id}@")).collect();
        let _ = self.values.invalidate_entries_if(move |k, _| {
            k.split(['|', ','])
                .any(|part| c.iter().any(|p| part.starts_with(p.as_str())))
        });
    }
}

/// The cache key of an aggregate: both layers' versions, the zone names, the stats
/// and the filter.
pub fn key(zones: &Zones, layer: &LoadedLayer, stats: &[String], filter: Option<&str>) -> String {
    format!(
        "{}@{}|{}|{}@{}|{}|{}",
        zones.layer_id,
        zones.version,
        zones.name_field.as_deref().unwrap_or(""),
        layer.meta.id,
        layer.meta.version,
        stats.join(","),
        filter.unwrap_or("")
    )
}

const RECOMPUTE: &str = "the result was being computed for a client that went away; ask again";

/// Concurrent misses of one key share one computation and its error: when that was
/// another request's cancellation or budget (a `Limit`) while this request's own
/// budget still holds, this one asks once more (computing it itself if need be).
fn retry_once<T>(mut get: impl FnMut() -> layers::Result<T>) -> layers::Result<T> {
    match get() {
        Err(layers::Error::Limit(_)) if crate::limits::check().is_ok() => get(),
        r => r,
    }
}

trait CloneError {
    fn clone_error(&self) -> layers::Error;
}

impl CloneError for layers::Error {
    /// moka shares one error among waiters; ours are rebuilt with the same meaning.
    fn clone_error(&self) -> layers::Error {
        match self {
            layers::Error::UnknownLayer(id) => layers::Error::UnknownLayer(id.clone()),
            layers::Error::Limit(m) => layers::Error::Limit(m.clone()),
            e if e.is_user_error() => layers::Error::bad(e.to_string()),
            e => layers::Error::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results with ever new parameters (a float radius, a point) stay within the
    /// byte bound, however many come.
    #[test]
    fn results_are_bounded_in_bytes() {
        let c = Cache::new(4 << 20);
        for i in 0..5_000 {
            let key = format!("nearest|x@1|{}", 0.1 + i as f64 * 1e-9);
            c.value(key, || {
                Ok(serde_json::json!({"rows": vec!["x".repeat(100); 10]}))
            })
            .unwrap();
        }
        let held = c.weighted_bytes();
        assert!(held <= 1 << 20, "{held} bytes held for a 1 MiB share");
        assert!(held > 100_000, "{held}: nothing kept at all");
    }
}
