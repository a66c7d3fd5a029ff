//! The catalogue over HTTP: search, layer records and version history, uploads (as
//! background jobs), record edits, deletes and rollbacks, the audit log, sessions for
//! the web UI, and the open-data feeds. Every handler applies the one access rule
//! ([`Caller::can_see`], [`Caller::can_write`]): a layer the caller may not see is a
//! 404 exactly like a missing one; a write without credentials is 401, with
//! credentials but not allowed 403.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use layers::store::{Access, LayerMeta, RecordEdit};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::auth::{
    presented, same_origin, session_cookie, ClientIp, Credential, Https, Remote, SESSION_COOKIE,
    SESSION_COOKIE_SECURE, SESSION_HOURS,
};
use super::{base_url, query_params, ApiError, ApiResult, AppState};
use crate::catalog::dcat::{self, Dataset};
use crate::catalog::search::{self, Entry};
use crate::catalog::{self as cat, AuditQuery, Caller, Ministry};
use crate::jobs::{self, Job};

pub fn routes(state: &AppState) -> Router<AppState> {
    // Uploads are limited by our own streaming count (413 with a message), not by
    // axum's default 2 MB body limit.
    let upload_limit = DefaultBodyLimit::max(state.max_upload_bytes as usize + (1 << 20));
    Router::new()
        .route("/api/catalog", get(search_layers))
        .route("/api/ministries", get(ministries))
        .route(
            "/api/layers",
            get(list_layers).post(create_layer).layer(upload_limit),
        )
        .route(
            "/api/layers/:id",
            get(record).patch(edit_layer).delete(delete_layer),
        )
        .route(
            "/api/layers/:id/data",
            axum::routing::put(new_version).layer(upload_limit),
        )
        .route("/api/layers/:id/undelete", post(undelete_layer))
        .route("/api/layers/:id/versions", get(versions))
        .route(
            "/api/layers/:id/draft",
            get(super::drafts::show).delete(super::drafts::discard),
        )
        .route(
            "/api/layers/:id/draft/publish",
            post(super::drafts::publish),
        )
        .route("/api/layers/:id/versions/:n/restore", post(restore))
        .route("/api/jobs/:id", get(job))
        .route("/api/audit", get(audit))
        .route("/api/session", get(session).post(sign_in).delete(sign_out))
        .route("/catalog/data.json", get(data_json))
        .route("/catalog/dcat.jsonld", get(dcat_jsonld))
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter()
        .rev()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn ministry_names(state: &AppState) -> ApiResult<Vec<Ministry>> {
    Ok(state.catalog.ministries()?)
}

/// The registered ministry with this slug.
fn ministry_of<'a>(ministries: &'a [Ministry], slug: &str) -> Option<&'a Ministry> {
    ministries.iter().find(|m| m.slug == slug)
}

/// A layer's catalogue record, as `/api/layers/{id}` and the search show it.
fn record_doc(
    m: &LayerMeta,
    ministry: Option<&Ministry>,
    issued: Option<String>,
    base: &str,
) -> Value {
    let url = format!("{base}/collections/{}", m.id);
    let ds = Dataset {
        meta: m,
        ministry,
        issued,
    };
    let mqa = dcat::mqa(&ds);
    let downloads: Vec<Value> = crate::download::formats_for(m)
        .map(|f| json!({"format": f.param(), "title": f.title(), "href": format!("{url}/items?f={}", f.param()), "type": f.media_type()}))
        .collect();
    json!({
        "id": m.id,
        "title": m.title,
        "description": m.description,
        "ministry": {"slug": m.ministry, "name": ministry.map(|x| x.name.clone())},
        "access": m.access.as_str(),
        "access_es": m.access.label_es(),
        "keywords": m.keywords,
        "theme": m.theme,
        "license": m.license,
        "license_url": dcat::license_uri(&m.license),
        "contact": {"name": m.contact_name, "email": m.contact_email},
        "update_frequency": m.update_frequency,
        "temporal": m.temporal,
        "language": m.language,
        "source_crs": m.source_crs.label(),
        "geometry_types": m.geometry_types,
        "feature_count": m.feature_count,
        "bbox": m.bbox,
        "fields": m.schema.iter().map(|f| json!({"name": f.name, "type": format!("{:?}", f.ftype).to_lowercase()})).collect::<Vec<_>>(),
        "version": m.version,
        "modified": m.created_at,
        "uploaded_by": m.uploaded_by,
        "synthetic": m.synthetic,
        "quality": m.diagnosis.as_ref().map(|d| json!({"grade": d.grade, "grade_es": d.grade.label_es(), "score": d.score})),
        "metadata_quality": mqa,
        "links": [
            {"rel": "collection", "href": url, "type": "application/json", "title": "OGC API – Features"},
            {"rel": "items", "href": format!("{url}/items"), "type": "application/geo+json"},
            {"rel": "tilejson", "href": format!("{base}/tiles/{}.json", m.id), "type": "application/json"},
            {"rel": "quality", "href": format!("{base}/api/layers/{}/quality", m.id), "type": "application/json"},
            {"rel": "versions", "href": format!("{base}/api/layers/{}/versions", m.id), "type": "application/json"},
        ],
        "downloads": downloads,
    })
}

/// The layer's current record if the caller may see it (hidden layers: nobody).
async fn visible_record(state: &AppState, caller: &Caller, id: &str) -> ApiResult<LayerMeta> {
    let store = state.registry.shared_store();
    let id2 = id.to_string();
    let cur = tokio::task::spawn_blocking(move || {
        if layers::store::validate_id(&id2).is_err() || store.is_hidden(&id2) {
            return Ok(None);
        }
        store.current(&id2)
    })
    .await
    .map_err(ApiError::internal)??;
    match cur {
        Some(v) if caller.can_see(&v.meta) => Ok(v.meta),
        _ => Err(ApiError::not_found(format!(
            "layer '{id}' does not exist; GET /api/catalog lists them"
        ))),
    }
}

/// 401 for anonymous callers, 403 for callers who may not write `ministry`'s layers.
pub(super) fn require_write(caller: &Caller, ministry: &str) -> ApiResult<()> {
    match caller {
        Caller::Anonymous => Err(ApiError::unauthorized(
            "this needs an editor token of the layer's ministry: Authorization: Bearer <token>",
        )),
        c if c.can_write(ministry) => Ok(()),
        _ => Err(ApiError::forbidden(format!(
            "only editors of '{ministry}' (or a city-wide admin) may change its layers"
        ))),
    }
}

// ---- search -------------------------------------------------------------------

/// `GET /api/catalog?q=&ministry=&theme=&keyword=&bbox=&access=&limit=&offset=`
async fn search_layers(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = query_params(
        raw.as_deref(),
        &[
            "q", "ministry", "theme", "keyword", "bbox", "access", "limit", "offset",
        ],
    )?;
    let bbox = match param(&p, "bbox") {
        Some(b) => {
            let v: Vec<f64> = b
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "bbox must be minlon,minlat,maxlon,maxlat, got '{b}'"
                    ))
                })?;
            if v.len() != 4 || v[0] > v[2] || v[1] > v[3] {
                return Err(ApiError::bad_request(format!(
                    "bbox must be four numbers minlon,minlat,maxlon,maxlat with min <= max, got '{b}'"
                )));
            }
            Some([v[0], v[1], v[2], v[3]])
        }
        None => None,
    };
    let num = |k: &str, default: usize, max: usize| -> ApiResult<usize> {
        match param(&p, k) {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{k} must be a whole number 0..{max}, got '{v}'"))
                }),
            None => Ok(default),
        }
    };
    let limit = num("limit", 50, 1000)?;
    let offset = num("offset", 0, usize::MAX)?;
    let q = search::Query {
        q: param(&p, "q").map(str::to_string),
        ministry: param(&p, "ministry").map(str::to_string),
        theme: param(&p, "theme").map(str::to_string),
        keyword: param(&p, "keyword").map(str::to_string),
        bbox,
        access: param(&p, "access").map(Access::parse).transpose()?,
    };
    let ministries = ministry_names(&state)?;
    let index = state.search_index(&ministries);
    let hits = search::search(&index.entries, &q, |e| {
        // The record the index was built from decides, like every other surface.
        index.metas.get(&e.id).is_some_and(|m| caller.can_see(m))
    });
    let base = base_url(&headers);
    let items: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .filter_map(|(i, score)| {
            let e = &index.entries[*i];
            let m = index.metas.get(&e.id)?;
            let min = ministry_of(&ministries, &m.ministry);
            let mut d = record_doc(m, min, None, &base);
            d["score"] = json!((score * 100.0).round() / 100.0);
            Some(d)
        })
        .collect();
    Ok(Json(json!({
        "query": {"q": q.q, "ministry": q.ministry, "theme": q.theme, "keyword": q.keyword, "bbox": q.bbox, "access": q.access.map(|a| a.as_str())},
        "numberMatched": hits.len(),
        "numberReturned": items.len(),
        "offset": offset,
        "limit": limit,
        "results": items,
    })))
}

/// The search index over the loaded layers, rebuilt when they change.
pub struct SearchIndex {
    key: (usize, usize),
    pub entries: Vec<Entry>,
    pub metas: std::collections::HashMap<String, LayerMeta>,
}

impl AppState {
    fn search_index(&self, ministries: &[Ministry]) -> Arc<SearchIndex> {
        let snap = self.registry.snapshot();
        let key = (Arc::as_ptr(&snap) as usize, ministries.len());
        let mut slot = self.search.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ix) = slot.as_ref().filter(|ix| ix.key == key) {
            return ix.clone();
        }
        let mut entries = Vec::with_capacity(snap.len());
        let mut metas = std::collections::HashMap::new();
        for l in snap.values() {
            let name = ministry_of(ministries, &l.meta.ministry)
                .map(|m| m.name.as_str())
                .unwrap_or("");
            entries.push(Entry::new(&l.meta, name));
            metas.insert(l.meta.id.clone(), l.meta.clone());
        }
        let ix = Arc::new(SearchIndex {
            key,
            entries,
            metas,
        });
        *slot = Some(ix.clone());
        ix
    }
}

async fn ministries(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let ms = ministry_names(&state)?;
    let snap = state.registry.snapshot();
    let out: Vec<Value> = ms
        .iter()
        .map(|m| {
            let n = snap
                .values()
                .filter(|l| l.meta.ministry == m.slug && caller.can_see(&l.meta))
                .count();
            json!({"slug": m.slug, "name": m.name, "layers": n})
        })
        .collect();
    Ok(Json(json!({"ministries": out})))
}

// ---- records, history ---------------------------------------------------------

/// `GET /api/layers[?deleted=true]`: the layers the caller may see, grouped data for
/// the map's catalogue; admins may list deleted ones to bring them back.
async fn list_layers(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let p = query_params(raw.as_deref(), &["deleted"])?;
    let base = base_url(&headers);
    let ministries = ministry_names(&state)?;
    if param(&p, "deleted") == Some("true") {
        if !caller.is_admin() {
            return Err(if caller == Caller::Anonymous {
                ApiError::unauthorized("listing deleted layers needs a city-wide admin token")
            } else {
                ApiError::forbidden("listing deleted layers needs a city-wide admin token")
            });
        }
        let store = state.registry.shared_store();
        let metas = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            for id in store.hidden_ids()? {
                if let Some(c) = store.current(&id)? {
                    v.push(c.meta);
                }
            }
            Ok::<_, layers::Error>(v)
        })
        .await
        .map_err(ApiError::internal)??;
        let items: Vec<Value> = metas
            .iter()
            .map(|m| record_doc(m, ministry_of(&ministries, &m.ministry), None, &base))
            .collect();
        return Ok(Json(json!({"deleted": true, "layers": items})));
    }
    let items: Vec<Value> = super::sorted_layers(&state, &caller)
        .iter()
        .map(|l| {
            record_doc(
                &l.meta,
                ministry_of(&ministries, &l.meta.ministry),
                None,
                &base,
            )
        })
        .collect();
    Ok(Json(json!({"layers": items})))
}

async fn record(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    query_params(raw.as_deref(), &[])?;
    let m = visible_record(&state, &caller, &id).await?;
    let ministries = ministry_names(&state)?;
    let issued = first_issued(&state, &id).await;
    Ok(Json(record_doc(
        &m,
        ministry_of(&ministries, &m.ministry),
        issued,
        &base_url(&headers),
    )))
}

async fn first_issued(state: &AppState, id: &str) -> Option<String> {
    let store = state.registry.shared_store();
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        store.versions(&id).ok().and_then(|v| {
            v.iter()
                .find(|v| v.meta.draft.is_none())
                .map(|v| v.meta.created_at.clone())
        })
    })
    .await
    .ok()
    .flatten()
}

/// `GET /api/layers/{id}/versions`: who uploaded what, when, with which result.
async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let cur = visible_record(&state, &caller, &id).await?;
    let store = state.registry.shared_store();
    let id2 = id.clone();
    let all = tokio::task::spawn_blocking(move || store.versions(&id2))
        .await
        .map_err(ApiError::internal)??;
    let base = base_url(&headers);
    let items: Vec<Value> = all
        .iter()
        // A draft is listed to its ministry only (the other versions follow the
        // current record, as everywhere in the catalogue).
        .filter(|v| v.meta.draft.is_none() || caller.can_see(&v.meta))
        .rev()
        .map(|v| {
            let m = &v.meta;
            json!({
                "version": m.version,
                "current": m.version == cur.version,
                "draft": m.draft.is_some(),
                "approved_by": m.approved_by,
                "created_at": m.created_at,
                "uploaded_by": m.uploaded_by,
                "note": m.note,
                "source_file": m.source_file,
                "source_sha256": m.source_sha256,
                "source_format": m.source_format,
                "source_crs": m.source_crs.label(),
                "feature_count": m.feature_count,
                "features_read": m.report.features_read,
                "features_rejected": m.report.features_rejected,
                "features_repaired": m.report.features_repaired,
                "quality": m.diagnosis.as_ref().map(|d| json!({"grade": d.grade, "score": d.score})),
                "links": [
                    {"rel": "quality", "href": format!("{base}/api/layers/{id}/quality?version={}", m.version)},
                    {"rel": "restore", "href": format!("{base}/api/layers/{id}/versions/{}/restore", m.version), "method": "POST"},
                ],
            })
        })
        .collect();
    Ok(Json(
        json!({"layer": id, "current": cur.version, "versions": items}),
    ))
}

// ---- writes ---------------------------------------------------------------------

/// Metadata of an upload or an edit (`PATCH`). Unknown keys are an error, so a typo
/// never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetaInput {
    id: Option<String>,
    title: Option<String>,
    description: Option<String>,
    ministry: Option<String>,
    access: Option<String>,
    #[serde(default, deserialize_with = "keywords")]
    keywords: Option<Vec<String>>,
    theme: Option<String>,
    license: Option<String>,
    contact_name: Option<String>,
    contact_email: Option<String>,
    update_frequency: Option<String>,
    language: Option<String>,
    temporal: Option<String>,
    /// Upload only: the source's CRS when it declares none.
    crs: Option<String>,
    source_layer: Option<String>,
    id_field: Option<String>,
    #[serde(default)]
    skip_invalid: bool,
    note: Option<String>,
    /// Upload only, tables: the header row and where the coordinates are.
    header_row: Option<usize>,
    lon: Option<String>,
    lat: Option<String>,
    x: Option<String>,
    y: Option<String>,
    coords: Option<String>,
    coord_order: Option<String>,
    /// Upload only, tables placed by key: "municipios:CVEGEO" or
    /// {"layer": …, "field": …, "key": […], "as_points": …, "crosswalk": {…}}.
    join: Option<JoinInput>,
    /// The key column(s) of a join: "CVE_ENT+CVE_MUN" or ["CVE_ENT", "CVE_MUN"].
    key: Option<KeyInput>,
    /// "points" or "polygons" (default) for a join.
    #[serde(rename = "as")]
    as_: Option<String>,
    /// Table value → zone value for names no rule matches.
    crosswalk: Option<std::collections::BTreeMap<String, String>>,
    /// A table with no place: stored and served without geometry.
    #[serde(default)]
    no_geometry: bool,
    /// Upload only: store the version as the layer's draft (served only to its
    /// ministry until published).
    #[serde(default)]
    draft: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JoinInput {
    Text(String),
    Spec(layers::table::join::JoinSpec),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum KeyInput {
    Text(String),
    List(Vec<String>),
}

/// Keywords as a JSON array or one comma-separated string.
fn keywords<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum K {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Option::<K>::deserialize(d)? {
        None => None,
        Some(K::List(v)) => Some(v),
        Some(K::Text(s)) => Some(s.split(',').map(|x| x.trim().to_string()).collect()),
    })
}

impl MetaInput {
    /// How a table upload is read and placed.
    pub(crate) fn table(&self) -> ApiResult<layers::table::TableOptions> {
        use layers::table::join::{self, JoinSpec};
        let spec = match &self.join {
            Some(JoinInput::Text(t)) => Some(JoinSpec::parse(t)?),
            Some(JoinInput::Spec(s)) => Some(s.clone()),
            None => None,
        };
        let key = self.key.as_ref().map(|k| match k {
            KeyInput::Text(t) => join::key_list(t),
            KeyInput::List(l) => l.clone(),
        });
        let join = JoinSpec::assemble(
            spec,
            key,
            self.as_.as_deref(),
            self.crosswalk.clone().unwrap_or_default(),
        )?;
        Ok(layers::table::TableOptions {
            header_row: self.header_row,
            lon: self.lon.clone(),
            lat: self.lat.clone(),
            x: self.x.clone(),
            y: self.y.clone(),
            coords: self.coords.clone(),
            coord_order: self.coord_order.clone(),
            join,
            no_geometry: self.no_geometry,
        })
    }

    pub(crate) fn edit(&self) -> ApiResult<RecordEdit> {
        let e = RecordEdit {
            title: self.title.clone(),
            description: self.description.clone(),
            keywords: self.keywords.clone(),
            theme: self.theme.clone(),
            license: self.license.clone(),
            contact_name: self.contact_name.clone(),
            contact_email: self.contact_email.clone(),
            update_frequency: self.update_frequency.clone(),
            language: self.language.clone(),
            temporal: self.temporal.clone(),
            access: self.access.as_deref().map(Access::parse).transpose()?,
        };
        e.validate()?;
        Ok(e)
    }
}

pub(crate) fn parse_meta(text: &str) -> ApiResult<MetaInput> {
    serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(format!(
            "metadata is not valid: {e}. Accepted keys: id, title, description, ministry, access, keywords, theme, license, contact_name, contact_email, update_frequency, language, temporal, crs, source_layer, id_field, skip_invalid, note, header_row, lon, lat, x, y, coords, coord_order, join, key, as, crosswalk, no_geometry"
        ))
    })
}

/// Keeps the last path component and only characters safe in a file name (the
/// extension tells the ingest the format).
fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "upload".into()
    } else {
        cleaned
    }
}

/// Reads a multipart upload: the `file` part streamed to a private staging folder
/// under the data dir's `tmp/` (never whole in memory), counted against the limit;
/// the `metadata` part as JSON.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<(Option<jobs::Upload>, Option<MetaInput>)> {
    // Rejected only now, after the credentials were checked: a caller without them
    // learns that first.
    let mut mp = mp.map_err(|e| {
        ApiError::bad_request(format!(
            "send the file as multipart/form-data with a 'file' part (and optionally 'metadata', JSON): {}",
            e.body_text()
        ))
    })?;
    let limit = state.max_upload_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit + (1 << 20) {
            return Err(too_large(limit));
        }
    }
    match receive_fields(state, &mut mp, limit).await {
        Ok(v) => Ok(v),
        Err(e) => {
            // Whatever was refused mid-body (metadata too large, a second file, an
            // unknown part), the rest is read and discarded (bounded) so the client,
            // still sending, receives the answer instead of a reset connection.
            drain(&mut mp).await;
            Err(e)
        }
    }
}

/// The parts of an upload, read in order; on error the caller drains the rest.
async fn receive_fields(
    state: &AppState,
    mp: &mut Multipart,
    limit: u64,
) -> ApiResult<(Option<jobs::Upload>, Option<MetaInput>)> {
    let mut upload = None;
    let mut meta = None;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limit)),
        };
        match field.name().unwrap_or("") {
            "metadata" => {
                // Read in chunks and bounded: the JSON record (with a join's crosswalk)
                // is small, whatever the upload limit for the file is.
                let mut bytes = Vec::new();
                let mut field = field;
                while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                    if bytes.len() + chunk.len() > MAX_METADATA {
                        return Err(ApiError::bad_request(format!(
                            "the metadata part is larger than {} KiB; a crosswalk that large \
                             belongs in the data (or use the CLI's --crosswalk FILE)",
                            MAX_METADATA >> 10
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                let text = String::from_utf8(bytes)
                    .map_err(|_| ApiError::bad_request("the metadata part must be UTF-8 JSON"))?;
                meta = Some(parse_meta(&text)?);
            }
            "file" => {
                if upload.is_some() {
                    return Err(ApiError::bad_request("send one file per upload (zip a Shapefile's parts together)"));
                }
                let name = safe_file_name(field.file_name().unwrap_or(""));
                let tmp_root = state.registry.store().scratch_dir();
                // With its owner lock, so a crash leaves nothing that the next
                // start's cleanup does not remove.
                let dir = tempfile::Builder::new()
                    .prefix("upload.")
                    .tempdir_in(&tmp_root)
                    .map_err(ApiError::internal)?;
                let owner = layers::store::hold_dir(dir.path())?;
                let path = dir.path().join(&name);
                let mut out = tokio::fs::File::create(&path)
                    .await
                    .map_err(ApiError::internal)?;
                let mut written: u64 = 0;
                let mut field = field;
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            written += chunk.len() as u64;
                            if written > limit {
                                drop(out);
                                drop(dir);
                                // Read (and discard) the rest, up to the body limit, so
                                // the client is still listening when the 413 comes.
                                while let Ok(Some(_)) = field.chunk().await {}
                                return Err(too_large(limit));
                            }
                            out.write_all(&chunk).await.map_err(ApiError::internal)?;
                        }
                        Ok(None) => break,
                        Err(e) => return Err(multipart_error(e, limit)),
                    }
                }
                out.flush().await.map_err(ApiError::internal)?;
                if written == 0 {
                    return Err(ApiError::bad_request(format!("the uploaded file '{name}' is empty")));
                }
                upload = Some(jobs::Upload {
                    dir,
                    file: path,
                    owner,
                });
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown form field '{other}': send 'file' (the data) and optionally 'metadata' (JSON)"
                )))
            }
        }
    }
    Ok((upload, meta))
}

/// A refused upload: the body is read and discarded (up to 64 MiB) before the error
/// is sent, so the client, still sending, receives the answer instead of a reset
/// connection; larger bodies are cut off.
async fn refuse(mp: Result<Multipart, MultipartRejection>, e: ApiError) -> ApiError {
    if let Ok(mut mp) = mp {
        drain(&mut mp).await;
    }
    e
}

/// Reads and discards what is left of a multipart body, up to 64 MiB (larger bodies
/// are cut off: the client then sees a reset, which is the point of a limit).
async fn drain(mp: &mut Multipart) {
    const CAP: usize = 64 << 20;
    let mut seen = 0;
    while let Ok(Some(mut f)) = mp.next_field().await {
        while let Ok(Some(c)) = f.chunk().await {
            seen += c.len();
            if seen > CAP {
                return;
            }
        }
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::too_large(format!(
        "the upload is larger than the limit of {} MiB (setting max_upload_mb)",
        limit >> 20
    ))
}

/// Largest upload metadata part (the record, and a join's crosswalk: some hundred
/// names; larger ones go through the CLI's `--crosswalk FILE`).
const MAX_METADATA: usize = 64 << 10;

fn multipart_error(e: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit);
    }
    ApiError::bad_request(format!(
        "the request is not a valid multipart/form-data upload: {}",
        e.body_text()
    ))
}

/// `POST /api/layers`: a new layer from a file; `202` with the job's location.
async fn create_layer(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    // Credentials are checked before the upload is stored.
    let refused = match &caller {
        Caller::Anonymous => Some(ApiError::unauthorized(
            "uploading needs an editor token: Authorization: Bearer <token>",
        )),
        Caller::Token(p) if p.role == cat::Role::Viewer => Some(ApiError::forbidden(
            "viewer tokens cannot upload; ask for an editor token",
        )),
        _ => None,
    };
    if let Some(e) = refused {
        return Err(refuse(mp, e).await);
    }
    let (upload, meta) = receive(&state, &headers, mp).await?;
    let meta = meta.ok_or_else(|| {
        ApiError::bad_request("the 'metadata' part is required for a new layer: {\"id\": \"parques\", \"title\": \"Parques\", …}")
    })?;
    let upload = upload.ok_or_else(|| ApiError::bad_request("the 'file' part is missing"))?;
    let id = meta.id.clone().ok_or_else(|| {
        ApiError::bad_request("metadata needs \"id\": the new layer's id (e.g. parques)")
    })?;
    layers::store::validate_id(&id)?;
    let ministry = match (&meta.ministry, caller.ministry()) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => m.to_string(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "metadata needs \"ministry\" (a city-wide admin uploads for a ministry)",
            ))
        }
    };
    cat::check_ministry(&state.catalog.ministries()?, &ministry)?;
    require_write(&caller, &ministry)?;
    let (exists, draft_of) = {
        let store = state.registry.shared_store();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            Ok::<_, layers::Error>((
                store.current(&id)?.is_some(),
                store.draft(&id)?.map(|d| d.meta.ministry),
            ))
        })
        .await
        .map_err(ApiError::internal)??
    };
    // A new layer that exists only as another ministry's draft: its id is taken too
    // (a new upload would replace that draft).
    if draft_of.is_some_and(|m| m != ministry) && !caller.is_admin() {
        return Err(ApiError::conflict(format!(
            "layer id '{id}' is already taken; choose another id"
        )));
    }
    if exists {
        // Whether the caller may see it or not, the id is taken; say only that.
        return Err(ApiError::conflict(format!(
            "layer id '{id}' is already taken; upload a new version with PUT /api/layers/{id}/data, or choose another id"
        )));
    }
    start_job(&state, &caller, remote, id, ministry, upload, meta, None)
}

/// `PUT /api/layers/{id}/data`: a new version of an existing layer.
async fn new_version(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    Path(id): Path<String>,
    headers: HeaderMap,
    mp: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let checked = if caller == Caller::Anonymous {
        Err(ApiError::unauthorized(
            "uploading needs an editor token: Authorization: Bearer <token>",
        ))
    } else {
        match visible_record(&state, &caller, &id).await {
            Ok(cur) => require_write(&caller, &cur.ministry).map(|_| cur),
            Err(e) => Err(e),
        }
    };
    // Refused before the body is stored when the layer already has its fill of
    // waiting uploads (checked again, atomically, when the job is created).
    let cap = state.gate.limits.queued_jobs_per_layer;
    let checked = checked.and_then(|cur| {
        if state.jobs.active(&id) >= cap {
            Err(jobs::too_many_jobs(&id, cap).into())
        } else {
            Ok(cur)
        }
    });
    let cur = match checked {
        Ok(cur) => cur,
        Err(e) => return Err(refuse(mp, e).await),
    };
    let (upload, meta) = receive(&state, &headers, mp).await?;
    let upload = upload.ok_or_else(|| ApiError::bad_request("the 'file' part is missing"))?;
    let meta = meta.unwrap_or_default();
    if meta.id.as_deref().is_some_and(|m| m != id) {
        return Err(ApiError::bad_request(
            "metadata id differs from the layer in the URL",
        ));
    }
    let ministry = meta.ministry.clone().unwrap_or(cur.ministry.clone());
    if ministry != cur.ministry {
        cat::check_ministry(&state.catalog.ministries()?, &ministry)?;
        if !caller.is_admin() {
            return Err(ApiError::forbidden(
                "only a city-wide admin may move a layer to another ministry",
            ));
        }
    }
    start_job(
        &state,
        &caller,
        remote,
        id,
        ministry,
        upload,
        meta,
        Some(cur.ministry),
    )
}

#[allow(clippy::too_many_arguments)]
fn start_job(
    state: &AppState,
    caller: &Caller,
    remote: Option<String>,
    id: String,
    ministry: String,
    upload: jobs::Upload,
    meta: MetaInput,
    current_ministry: Option<String>,
) -> ApiResult<Response> {
    let new_layer = current_ministry.is_none();
    let edit = meta.edit()?;
    let table = meta.table()?;
    if let Some(j) = &table.join {
        // The rows take the zone layer's geometry: it must be one the uploader may see.
        let zone = state.registry.store().current(&j.layer).ok().flatten();
        let visible = zone.is_some_and(|z| {
            caller.can_see(&z.meta) && !state.registry.store().is_hidden(&j.layer)
        });
        if !visible {
            return Err(ApiError::bad_request(format!(
                "join: zone layer '{}' does not exist (or you may not see it); publish it first",
                j.layer
            )));
        }
    }
    let source_name = upload
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let actor = caller.actor();
    let job = state.jobs.create(
        &id,
        &ministry,
        &actor,
        &source_name,
        (
            state.gate.limits.queued_jobs_per_layer,
            state.gate.limits.queued_jobs,
        ),
    )?;
    let req = layers::ingest::IngestRequest {
        title: meta.title.clone(),
        description: meta.description.clone().unwrap_or_default(),
        crs: meta.crs.clone(),
        source_layer: meta.source_layer.clone(),
        id_field: meta.id_field.clone(),
        skip_invalid: meta.skip_invalid,
        limits: state.limits,
        diagnose: (*state.quality).clone(),
        record: edit,
        uploaded_by: Some(actor.clone()),
        note: meta.note.clone(),
        table,
        // A new version follows the layer's ministry at publish time unless the
        // upload moves it (an admin's transfer made while it was queued is kept).
        ministry_explicit: current_ministry.as_ref().is_none_or(|c| *c != ministry),
        draft: meta.draft.then(|| actor.clone()),
        ..layers::ingest::IngestRequest::new(upload.file.clone(), &id, &ministry)
    };
    let st = state.clone();
    let j = job.clone();

    let who = caller.clone();
    tokio::task::spawn_blocking(move || {
        let (st2, j2) = (st.clone(), j.clone());
        // A panic in an ingest must not leave the job "running" forever (it would
        // count against the layer's queue until a restart).
        let run = std::panic::AssertUnwindSafe(|| {
            run_job(st, j, req, upload, new_layer, (who, actor), remote)
        });
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!(job = %j2.id, layer = %j2.layer, "ingest panicked");
            j2.set(jobs::State::Failed(
                "internal error while ingesting (reported to the operators); the previous \
                 version is still served"
                    .into(),
            ));
            st2.jobs.persist(&j2);
        }
    });
    let location = format!("/api/jobs/{}", job.id);
    let mut r = (StatusCode::ACCEPTED, Json(job.doc())).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// The server's context for the publishing operations.
pub(super) fn app_ctx<'a>(
    st: &'a AppState,
    actor: &'a str,
    remote: Option<&'a str>,
) -> crate::app::Ctx<'a> {
    crate::app::Ctx {
        store: st.registry.store(),
        catalog: st.catalog.as_ref(),
        actor,
        remote,
        webhooks: &st.webhooks,
    }
}

/// Why the caller's token no longer authorises anything (revoked or expired since
/// the request was accepted), if so.
fn token_gone(state: &AppState, caller: &Caller) -> Option<String> {
    let Caller::Token(p) = caller else {
        return None;
    };
    let tokens = state.catalog.tokens().ok()?;
    let t = tokens.iter().find(|t| t.id == p.token_id)?;
    if t.revoked_at.is_some() {
        return Some(format!(
            "the token {} was revoked while this upload was queued; nothing was published",
            t.id
        ));
    }
    (!crate::catalog::sqlite::still_valid(p)).then(|| {
        format!(
            "the token {} expired while this upload was queued; nothing was published",
            t.id
        )
    })
}

/// The ingest of one upload, on the blocking pool.
fn run_job(
    state: AppState,
    job: Arc<Job>,
    mut req: layers::ingest::IngestRequest,
    upload: jobs::Upload,
    new_layer: bool,
    (caller, actor): (Caller, String),
    remote: Option<String>,
) {
    let lock = state.jobs.layer_lock(&job.layer);
    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
    // Then one of the few ingest slots (the layer's lock first: a slot holder never
    // waits for a layer, so the two cannot wait on each other).
    let _slot = state.gate.ingest_slot();
    job.set(jobs::State::Running);
    state.jobs.persist(&job);
    let store = state.registry.store();
    let previous = store.current(&job.layer).ok().flatten().map(|v| v.meta);
    // Authorised for the layer's ministry as it is now; if it moves while the
    // ingest runs, the publish is refused (a city-wide admin may write any).
    if !caller.is_admin() {
        req.expect_ministry = previous.as_ref().map(|p| p.ministry.clone());
    }
    let outcome = if new_layer && previous.is_some() {
        Err(layers::Error::bad(format!(
            "layer id '{}' was taken while this upload was queued; choose another id",
            job.layer
        )))
    } else if let Some(why) = token_gone(&state, &caller) {
        // A token revoked (or expired) while its upload waited publishes nothing.
        Err(layers::Error::bad(why))
    } else if let Some(p) = previous.as_ref().filter(|p| !caller.can_write(&p.ministry)) {
        // Checked again now: the layer may have moved to another ministry while
        // this upload waited (and the upload's ministry is re-read at publish).
        Err(layers::Error::bad(format!(
            "layer '{}' now belongs to '{}' (moved while this upload was queued); \
             only its editors or a city-wide admin may publish it",
            job.layer, p.ministry
        )))
    } else {
        let progress = |p: layers::ingest::Progress| {
            job.read.store(p.read, Ordering::Relaxed);
            if let Some(t) = p.total {
                job.total.store(t, Ordering::Relaxed);
            }
        };
        let ctx = crate::app::Ctx {
            store,
            catalog: state.catalog.as_ref(),
            actor: &actor,
            remote: remote.as_deref(),
            webhooks: &state.webhooks,
        };
        // Published, recorded, and the tables joined to this layer rebuilt.
        crate::app::publish(&ctx, &req, &progress)
    };
    drop(upload);
    match outcome {
        Ok((summary, _, rejoined)) => {
            let m = summary.meta;
            reload(&state);
            let rejoined = rejoined_json(&rejoined);
            let draft = m.draft.as_ref().map(|d| {
                json!({
                    "base": d.base,
                    "message": "stored as a draft: served only to its ministry until published (POST /api/layers/{id}/draft/publish)",
                    "links": [
                        {"rel": "draft", "href": format!("/api/layers/{}/draft", m.id)},
                        {"rel": "changes", "href": format!("/collections/{}@draft/changes", m.id)},
                        {"rel": "items", "href": format!("/collections/{}@draft/items", m.id)},
                    ],
                })
            });
            job.set(jobs::State::Succeeded(json!({
                "version": m.version,
                "draft": draft,
                "rejoined": rejoined,
                "features_read": m.report.features_read,
                "features_stored": m.report.features_stored,
                "features_repaired": m.report.features_repaired,
                "features_rejected": m.report.features_rejected,
                "problems": m.report.problems,
                "notes": m.report.notes,
                "join": m.report.join,
                "source_crs": m.source_crs.label(),
                "bbox": m.bbox,
                "geometry_types": m.geometry_types,
                "quality": m.diagnosis.as_ref().map(|d| json!({"grade": d.grade, "grade_es": d.grade.label_es(), "score": d.score, "summary": d.summary_lines()})),
                "links": [
                    {"rel": "layer", "href": format!("/api/layers/{}", m.id)},
                    {"rel": "quality", "href": format!("/api/layers/{}/quality", m.id)},
                    {"rel": "collection", "href": format!("/collections/{}", m.id)},
                ],
            })));
        }
        Err(e) => {
            let reason = if e.is_user_error() || matches!(e, layers::Error::Busy(_)) {
                e.to_string()
            } else {
                tracing::error!(job = %job.id, error = %e, "upload ingest failed");
                "internal error while ingesting; the details are in the server log".into()
            };
            let mut a = cat::AuditEntry::now(&actor, "layer.upload_failed");
            a.ministry = Some(job.ministry.clone());
            a.layer = Some(job.layer.clone());
            a.detail = json!({"job": job.id, "source_file": job.source_file, "reason": reason});
            a.remote = remote;
            if let Err(e) = state.catalog.append_audit(&a) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
            job.set(jobs::State::Failed(format!(
                "{reason}. The previous version (if any) is still served."
            )));
        }
    }
    state.jobs.persist(&job);
    state.jobs.prune();
}

/// Loads changed layers now (not at the next refresh tick) and drops their cached
/// tiles and aggregates.
/// The layers rebuilt after a zone layer changed: `[{"layer", "version"} | {"layer", "error"}]`.
pub(super) fn rejoined_json(rejoined: &[(String, Result<LayerMeta, String>)]) -> Value {
    rejoined
        .iter()
        .map(|(layer, r)| match r {
            Ok(d) => json!({"layer": layer, "version": d.version}),
            Err(e) => json!({"layer": layer, "error": e}),
        })
        .collect()
}

pub(super) fn reload(state: &AppState) {
    // A publish may have queued notifications: send them now.
    state.webhooks_wake.notify_one();
    match state.registry.refresh() {
        Ok(changed) => {
            state.tiles.reloaded(&changed, &state.registry);
            state.analysis.invalidate(&changed);
        }
        Err(e) => tracing::error!(error = %e, "refresh after a write failed"),
    }
}

async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let st = state.clone();
    let id2 = id.clone();
    let doc = tokio::task::spawn_blocking(move || st.jobs.doc(&id2))
        .await
        .map_err(ApiError::internal)??;
    // Jobs are seen by the uploader's ministry and city-wide admins.
    match doc {
        Some(d)
            if caller.is_admin()
                || (caller.ministry().is_some() && caller.ministry() == d["ministry"].as_str()) =>
        {
            Ok(Json(d))
        }
        _ => Err(ApiError::not_found(format!("job '{id}' does not exist"))),
    }
}

/// `PATCH /api/layers/{id}`: edits the catalogue record (JSON body).
async fn edit_layer(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized(
            "editing needs an editor token: Authorization: Bearer <token>",
        ));
    }
    let cur = visible_record(&state, &caller, &id).await?;
    require_write(&caller, &cur.ministry)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the body must be UTF-8 JSON"))?;
    let input = parse_meta(text)?;
    for (what, set) in [
        ("id", input.id.is_some()),
        ("ministry", input.ministry.is_some()),
        ("crs", input.crs.is_some()),
        ("source_layer", input.source_layer.is_some()),
        ("id_field", input.id_field.is_some()),
        ("note", input.note.is_some()),
        ("join", input.join.is_some()),
        ("lon", input.lon.is_some() || input.lat.is_some()),
        ("x", input.x.is_some() || input.y.is_some()),
        ("coords", input.coords.is_some()),
        ("header_row", input.header_row.is_some()),
        ("no_geometry", input.no_geometry),
        ("draft", input.draft),
    ] {
        if set {
            return Err(ApiError::bad_request(format!(
                "'{what}' cannot be edited here; it belongs to an upload (PUT /api/layers/{id}/data)"
            )));
        }
    }
    let edit = input.edit()?;
    if edit.is_empty() {
        return Err(ApiError::bad_request("nothing to change: send one or more of title, description, access, keywords, theme, license, contact_name, contact_email, update_frequency, language, temporal"));
    }
    let st = state.clone();
    let actor = caller.actor();

    let id2 = id.clone();
    let m = tokio::task::spawn_blocking(move || {
        // Waits for an upload of this layer in progress, which would otherwise
        // publish a version from the record as it was before this edit.
        let lock = st.jobs.layer_lock(&id2);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let m = crate::app::edit(&app_ctx(&st, &actor, remote.as_deref()), &id2, &edit)?;
        reload(&st);
        Ok::<_, layers::Error>(m)
    })
    .await
    .map_err(ApiError::internal)??;
    let ministries = ministry_names(&state)?;
    Ok(Json(record_doc(
        &m,
        ministry_of(&ministries, &m.ministry),
        None,
        &base_url(&headers),
    )))
}

/// `DELETE /api/layers/{id}`: hides the layer; nothing is erased.
async fn delete_layer(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized(
            "deleting needs an editor token: Authorization: Bearer <token>",
        ));
    }
    let cur = visible_record(&state, &caller, &id).await?;
    require_write(&caller, &cur.ministry)?;
    let st = state.clone();
    let actor = caller.actor();

    tokio::task::spawn_blocking(move || {
        let lock = st.jobs.layer_lock(&cur.id);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        crate::app::delete(&app_ctx(&st, &actor, remote.as_deref()), &cur.id)?;
        reload(&st);
        Ok::<_, layers::Error>(())
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/layers/{id}/undelete` (city-wide admins).
async fn undelete_layer(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    if !caller.is_admin() {
        return Err(if caller == Caller::Anonymous {
            ApiError::unauthorized("bringing back a deleted layer needs a city-wide admin token")
        } else {
            ApiError::forbidden("bringing back a deleted layer needs a city-wide admin token")
        });
    }
    let st = state.clone();
    let actor = caller.actor();

    let id2 = id.clone();
    let m = tokio::task::spawn_blocking(move || {
        let m = crate::app::undelete(&app_ctx(&st, &actor, remote.as_deref()), &id2)?;
        reload(&st);
        Ok::<_, layers::Error>(m)
    })
    .await
    .map_err(ApiError::internal)??
    .ok_or_else(|| ApiError::not_found(format!("no deleted layer '{id}'")))?;
    let ministries = ministry_names(&state)?;
    Ok(Json(record_doc(
        &m,
        ministry_of(&ministries, &m.ministry),
        None,
        &base_url(&headers),
    )))
}

/// `POST /api/layers/{id}/versions/{n}/restore`: publishes version n again.
async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Remote(remote): Remote,
    Path((id, n)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized(
            "restoring needs an editor token: Authorization: Bearer <token>",
        ));
    }
    let cur = visible_record(&state, &caller, &id).await?;
    require_write(&caller, &cur.ministry)?;
    // A ministry that requires approval: a restore puts a version live at once, so
    // only its admins (or the city-wide admin) may do it.
    if !caller.is_admin_of(&cur.ministry)
        && crate::app::requires_approval(state.catalog.as_ref(), &cur.ministry)?
    {
        return Err(ApiError::forbidden(format!(
            "{} requires approval of new versions: only its admins may restore one",
            cur.ministry
        )));
    }
    let n: u32 = n
        .parse()
        .map_err(|_| ApiError::bad_request(format!("version must be a number, got '{n}'")))?;
    let st = state.clone();
    let actor = caller.actor();

    let m = tokio::task::spawn_blocking(move || {
        let lock = st.jobs.layer_lock(&cur.id);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        // The limits and diagnosis settings of the tables rebuilt after it.
        let template = layers::ingest::IngestRequest {
            limits: st.limits,
            diagnose: (*st.quality).clone(),
            uploaded_by: Some(actor.clone()),
            ..layers::ingest::IngestRequest::new("", &cur.id, &cur.ministry)
        };
        let done = crate::app::restore(
            &app_ctx(&st, &actor, remote.as_deref()),
            &cur.id,
            n,
            &template,
        )?;
        reload(&st);
        Ok::<_, layers::Error>(done)
    })
    .await
    .map_err(ApiError::internal)??;
    let (m, rejoined) = m;
    Ok(Json(json!({
        "layer": m.id,
        "restored_version": n,
        "version": m.version,
        "feature_count": m.feature_count,
        "note": m.note,
        "rejoined": rejoined_json(&rejoined),
    })))
}

// ---- audit, session -------------------------------------------------------------

/// `GET /api/audit?layer=&action=&since=&limit=&before=`: city-wide admins see all;
/// a ministry's admin sees its ministry's entries.
async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let ministries = match &caller {
        Caller::Anonymous => {
            return Err(ApiError::unauthorized("the audit log needs an admin token"))
        }
        c if c.is_admin() => None,
        Caller::Token(p) if p.role == cat::Role::Admin => p.ministry.clone().map(|m| vec![m]),
        _ => return Err(ApiError::forbidden("the audit log is for admins")),
    };
    let p = query_params(
        raw.as_deref(),
        &["layer", "action", "since", "limit", "before"],
    )?;
    let limit = match param(&p, "limit") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..10000, got '{v}'")))?,
        None => 100,
    };
    let before = param(&p, "before")
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("before must be an entry's seq number, got '{v}'"))
            })
        })
        .transpose()?;
    let q = AuditQuery {
        layer: param(&p, "layer").map(str::to_string),
        action: param(&p, "action").map(str::to_string),
        since: param(&p, "since").map(str::to_string),
        limit,
        before,
        ministries,
    };
    let c = state.catalog.clone();
    let entries = tokio::task::spawn_blocking(move || c.audit(&q))
        .await
        .map_err(ApiError::internal)??;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(json!({"entries": entries, "next_before": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /api/session {"token": "…"}`: the web UI's sign-in. The token is verified
/// and a session started; the cookie holds the session id (HttpOnly, SameSite=Strict,
/// `__Host-` and Secure behind HTTPS), never the token, never readable by scripts.
async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Https(secure): Https,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> ApiResult<Response> {
    // A browser signing in from another site's page (login CSRF) is refused.
    if headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site") {
        same_origin(&headers)?;
    }
    let token = body.token.trim().to_string();
    // Failed sign-ins count like any failed token.
    let caller = state.auth.resolve(&Credential::Bearer(token), ip)?;
    let Caller::Token(p) = &caller else {
        return Err(ApiError::internal("a verified token without a principal"));
    };
    let mut until = chrono::Utc::now() + chrono::Duration::hours(SESSION_HOURS);
    if let Some(exp) = p
        .expires_at
        .as_deref()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
    {
        until = until.min(exp.with_timezone(&chrono::Utc));
    }
    let max_age = (until - chrono::Utc::now()).num_seconds().max(0);
    let catalog = state.auth.catalog().clone();
    let token_id = p.token_id.clone();
    let until_text = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let session =
        tokio::task::spawn_blocking(move || catalog.create_session(&token_id, &until_text))
            .await
            .map_err(ApiError::internal)??;
    let cookie = if secure {
        format!("{SESSION_COOKIE_SECURE}={session}; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age={max_age}")
    } else {
        format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}")
    };
    let mut r = Json(whoami(&caller)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// `DELETE /api/session`: signs out. The session ends on the server (the cookie's
/// value no longer verifies, on any replica) and the browser is told to drop it.
async fn sign_out(
    State(state): State<AppState>,
    Https(secure): Https,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site") {
        same_origin(&headers)?;
    }
    if let Some(s) = session_cookie(&headers, secure) {
        let auth = state.auth.clone();
        tokio::task::spawn_blocking(move || auth.end_session(&s))
            .await
            .map_err(ApiError::internal)??;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    for c in [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        format!("{SESSION_COOKIE_SECURE}=; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(r)
}

async fn session(caller: Caller, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let _ = presented(&headers, false)?;
    Ok(Json(whoami(&caller)))
}

fn whoami(c: &Caller) -> Value {
    match c {
        Caller::Anonymous => json!({"signed_in": false}),
        Caller::Token(p) => json!({
            "signed_in": true,
            "token": p.token_id,
            "label": p.label,
            "ministry": p.ministry,
            "role": p.role,
            "expires_at": p.expires_at,
        }),
    }
}

// ---- open data feeds ------------------------------------------------------------

/// Public layers (whoever asks: the feeds are the open-data portal's), with their
/// ministries and first publication dates.
async fn public_datasets(
    state: &AppState,
) -> ApiResult<(Vec<(LayerMeta, Option<String>)>, Vec<Ministry>)> {
    let metas: Vec<LayerMeta> = super::sorted_layers(state, &Caller::Anonymous)
        .iter()
        .map(|l| l.meta.clone())
        .collect();
    let store = state.registry.shared_store();
    let with_issued = tokio::task::spawn_blocking(move || {
        metas
            .into_iter()
            .map(|m| {
                let issued = store.versions(&m.id).ok().and_then(|v| {
                    v.iter()
                        .find(|v| v.meta.draft.is_none())
                        .map(|v| v.meta.created_at.clone())
                });
                (m, issued)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(ApiError::internal)?;
    Ok((with_issued, ministry_names(state)?))
}

fn datasets<'a>(
    list: &'a [(LayerMeta, Option<String>)],
    ministries: &'a [Ministry],
) -> Vec<Dataset<'a>> {
    list.iter()
        .map(|(m, issued)| Dataset {
            meta: m,
            ministry: ministry_of(ministries, &m.ministry),
            issued: issued.clone(),
        })
        .collect()
}

async fn data_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    query_params(raw.as_deref(), &[])?;
    let (list, ministries) = public_datasets(&state).await?;
    let ds = datasets(&list, &ministries);
    let doc = dcat::data_json(&ds, &base_url(&headers));
    Ok(super::json_doc(&doc, "application/json"))
}

async fn dcat_jsonld(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    query_params(raw.as_deref(), &[])?;
    let (list, ministries) = public_datasets(&state).await?;
    let ds = datasets(&list, &ministries);
    let modified = list.iter().map(|(m, _)| m.created_at.as_str()).max();
    let doc = dcat::dcat_ap(&ds, &base_url(&headers), modified);
    Ok(super::json_doc(&doc, "application/ld+json"))
}
