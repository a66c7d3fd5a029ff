//! The `datahub` command: `ingest`, `serve`, `layers`, `versions`, `demo`, `aggregate`.
//! Thin: parses arguments into settings and calls the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use datahub::app;
use datahub::catalog::{self, CatalogStore};
use datahub::config::{FileSettings, Settings};
use datahub::http::{self, AppState, Shared};
use layers::index::Registry;
use layers::ingest::{IngestRequest, Limits, Progress};
use layers::store::LayerStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "datahub",
    version,
    about = "Monterrey DataHub: ingest, normalize and serve the city's geodata"
)]
struct Cli {
    /// Data directory (layer versions, staging).
    #[arg(long, global = true, env = "DATAHUB_DATA")]
    data: Option<PathBuf>,
    /// Optional TOML settings file.
    #[arg(long, global = true, env = "DATAHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Versions kept per layer (the current one included).
    #[arg(long, global = true, env = "DATAHUB_KEEP_VERSIONS")]
    keep_versions: Option<usize>,
    /// PostgreSQL/PostGIS shared by several servers, e.g.
    /// postgres://datahub:secret@db.local/datahub (default: the data folder alone)
    #[arg(long, global = true, env = "DATAHUB_DATABASE", hide_env_values = true)]
    database: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How a table (CSV, .xlsx, .xls, .ods) is read and placed, for `ingest`.
#[derive(Args, Default)]
struct TableArgs {
    /// Row of the header (1-based) when title rows above it confuse the detection
    #[arg(long)]
    header_row: Option<usize>,
    /// Longitude column (degrees), e.g. centroid_lon
    #[arg(long)]
    lon: Option<String>,
    /// Latitude column (degrees), e.g. centroid_lat
    #[arg(long)]
    lat: Option<String>,
    /// Easting column (projected metres; give --crs), e.g. x_utm
    #[arg(long)]
    x: Option<String>,
    /// Northing column (projected metres; give --crs), e.g. y_utm
    #[arg(long)]
    y: Option<String>,
    /// One column holding both coordinates, e.g. coordenadas ("25.6866, -100.3161")
    #[arg(long)]
    coords: Option<String>,
    /// Order in that column when the values do not tell: latlon or lonlat
    #[arg(long)]
    coord_order: Option<String>,
    /// Place rows by key: ZONE_LAYER:ZONE_FIELD, e.g. municipios:CVEGEO
    #[arg(long)]
    join: Option<String>,
    /// The table's key column(s) for --join; CVE_ENT+CVE_MUN builds an INEGI key
    #[arg(long)]
    key: Option<String>,
    /// With --join: `points` puts each row on a point inside its zone
    #[arg(long = "as", value_parser = ["polygons", "points"])]
    as_: Option<String>,
    /// With --join: a CSV of table value,zone value for names no rule matches
    #[arg(long)]
    crosswalk: Option<PathBuf>,
    /// A table with no place (a budget, a directory): stored and served without geometry
    #[arg(long)]
    no_geometry: bool,
}

impl TableArgs {
    fn options(self) -> anyhow::Result<layers::table::TableOptions> {
        use layers::table::join::{self, JoinSpec};
        let crosswalk = match &self.crosswalk {
            Some(path) => join::read_crosswalk(path)?,
            None => Default::default(),
        };
        let join = JoinSpec::assemble(
            self.join.as_deref().map(JoinSpec::parse).transpose()?,
            self.key.as_deref().map(join::key_list),
            self.as_.as_deref(),
            crosswalk,
        )?;
        Ok(layers::table::TableOptions {
            header_row: self.header_row,
            lon: self.lon,
            lat: self.lat,
            x: self.x,
            y: self.y,
            coords: self.coords,
            coord_order: self.coord_order,
            join,
            no_geometry: self.no_geometry,
        })
    }
}

/// The catalogue record's fields, for `ingest` and `layer set`.
#[derive(Args, Default)]
struct RecordArgs {
    /// Keywords, comma-separated, e.g. "baches,vialidad"
    #[arg(long, value_delimiter = ',')]
    keywords: Option<Vec<String>>,
    /// Theme, e.g. "movilidad"
    #[arg(long)]
    theme: Option<String>,
    /// Licence (default: "Términos de Libre Uso MX")
    #[arg(long)]
    license: Option<String>,
    #[arg(long)]
    contact_name: Option<String>,
    #[arg(long)]
    contact_email: Option<String>,
    /// ISO 8601 repeating duration: R/P1D, R/P1W, R/P1M, R/P3M, R/P1Y
    #[arg(long)]
    update_frequency: Option<String>,
    /// Language of the data (default es-MX)
    #[arg(long)]
    language: Option<String>,
    /// Temporal coverage, ISO 8601 interval: 2020-01-01/2026-06-30
    #[arg(long)]
    temporal: Option<String>,
    /// Who may see the layer: public (open data), internal (every ministry; the
    /// default for a new layer) or restricted (the owning ministry only)
    #[arg(long)]
    access: Option<String>,
}

impl RecordArgs {
    fn edit(
        self,
        title: Option<String>,
        description: Option<String>,
    ) -> anyhow::Result<layers::store::RecordEdit> {
        Ok(layers::store::RecordEdit {
            title,
            description,
            keywords: self.keywords,
            theme: self.theme,
            license: self.license,
            contact_name: self.contact_name,
            contact_email: self.contact_email,
            update_frequency: self.update_frequency,
            language: self.language,
            temporal: self.temporal,
            access: self
                .access
                .as_deref()
                .map(layers::store::Access::parse)
                .transpose()?,
        })
    }
}

// Parsed once per process: the size difference of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum LayerCmd {
    /// Change fields of the record (an empty value clears a field)
    Set {
        layer: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        record: RecordArgs,
    },
    /// Publish a kept version again as the newest version (a rollback)
    Restore { layer: String, version: u32 },
    /// Hide a layer: no longer listed or served; nothing is erased
    Delete { layer: String },
    /// Bring back a deleted layer
    Undelete { layer: String },
    /// Publish the layer's draft: it becomes the served version
    Publish { layer: String },
    /// Remove the layer's draft
    Discard { layer: String },
}

#[derive(Subcommand)]
enum MinistryCmd {
    /// Register a ministry: `datahub ministry add obras-publicas --name "Obras Públicas"`
    Add {
        slug: String,
        #[arg(long)]
        name: String,
        /// Open-data contact for its layers that name none
        #[arg(long)]
        email: Option<String>,
    },
    /// List the ministries
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a ministry's policy: `datahub ministry set obras-publicas --require-approval true`
    Set {
        slug: String,
        /// Every upload is a draft that someone other than the uploader (an admin of
        /// the ministry or the city-wide admin) must publish
        #[arg(long)]
        require_approval: bool_arg::BoolArg,
    },
}

mod bool_arg {
    /// `true`/`false` (also sí/no, 1/0) for an option that must be given a value.
    #[derive(Clone, Copy, Debug)]
    pub struct BoolArg(pub bool);

    impl std::str::FromStr for BoolArg {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            match s.to_lowercase().as_str() {
                "true" | "1" | "yes" | "si" | "sí" | "on" => Ok(BoolArg(true)),
                "false" | "0" | "no" | "off" => Ok(BoolArg(false)),
                _ => Err(format!("'{s}' is not true or false")),
            }
        }
    }
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an API token (the secret is printed once, and stored only hashed)
    Create {
        /// The ministry it acts for; leave out with --role admin for a city-wide admin
        #[arg(long)]
        ministry: Option<String>,
        /// viewer, editor or admin
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Who holds it, e.g. "Ana López (SIG Obras)"
        #[arg(long)]
        label: Option<String>,
        /// Expiry, RFC 3339 (2027-01-31T23:59:59Z)
        #[arg(long)]
        expires: Option<String>,
    },
    /// List tokens (never their secrets)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id
    Revoke { id: String },
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest a source file as a new version of a layer.
    Ingest {
        /// Zipped Shapefile, .shp, .gpkg, .geojson, .kml/.kmz, .csv, .xlsx/.xls/.ods, .fgb, .gdb or .gdb.zip
        source: PathBuf,
        /// Layer id (lowercase letters, digits, - and _), e.g. parques
        #[arg(long)]
        layer: String,
        /// Owning ministry, e.g. desarrollo-urbano
        #[arg(long)]
        ministry: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// CRS of the source when it declares none (or to override it), e.g. EPSG:6372
        #[arg(long)]
        crs: Option<String>,
        /// Which layer of a multi-layer source (GPKG, FileGDB, KML folders, zip of several .shp) or sheet of a spreadsheet
        #[arg(long)]
        source_layer: Option<String>,
        /// Integer attribute with unique values to use as the feature id
        #[arg(long)]
        id_field: Option<String>,
        /// Store the good rows of a CSV whose other rows have bad coordinates
        #[arg(long)]
        skip_invalid: bool,
        #[command(flatten)]
        table: Box<TableArgs>,
        #[command(flatten)]
        record: RecordArgs,
        /// A note on this version ("límites corregidos")
        #[arg(long)]
        note: Option<String>,
        /// Store it as the layer's draft: diagnosed and compared, served only to its
        /// ministry until `datahub layer publish`
        #[arg(long)]
        draft: bool,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Ministries (the owners of layers)
    Ministry {
        #[command(subcommand)]
        cmd: MinistryCmd,
    },
    /// API tokens
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Edit a layer's catalogue record: `datahub layer set <id> --license … --contact-email …`.
    Layer {
        #[command(subcommand)]
        cmd: LayerCmd,
    },
    /// Serve the layers over HTTP.
    Serve {
        #[arg(long, env = "DATAHUB_ADDR")]
        addr: Option<SocketAddr>,
    },
    /// List layers and their current versions.
    Layers {
        #[arg(long)]
        json: bool,
    },
    /// List the kept versions of a layer.
    Versions {
        layer: String,
        #[arg(long)]
        json: bool,
    },
    /// What changed between two kept versions of a layer: features added, removed and
    /// modified, columns added, removed, retyped and renamed
    Diff {
        layer: String,
        /// The older version (0: compare with nothing)
        from: u32,
        /// The newer version (default: the current one)
        to: Option<u32>,
        /// Match features by these columns (comma-separated) instead of the id field
        #[arg(long)]
        key: Option<String>,
        /// Also write the changed features as GeoJSON (tagged added/removed/modified)
        #[arg(long)]
        geojson: Option<PathBuf>,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Generate and ingest the synthetic Monterrey demo layers (skips existing ones).
    Demo,
    /// Copy this data folder (every kept version, the catalogue, tokens, the audit log)
    /// into PostgreSQL/PostGIS; run again, it adds only what is missing
    Migrate {
        /// The database, e.g. postgres://datahub:secret@db.local/datahub
        #[arg(long)]
        to: String,
    },
    /// The data-quality diagnosis of a layer version, in full.
    Diagnose {
        layer: String,
        /// A kept version (default: the current one)
        #[arg(long)]
        version: Option<u32>,
        /// Compute it again (with the current [quality] settings) and store it
        #[arg(long)]
        recompute: bool,
        #[arg(long)]
        json: bool,
    },
    /// Aggregate a layer by a zone layer: counts, sums, means, densities, lengths or
    /// shares of area per colonia (the same numbers as /api/analysis/aggregate).
    Aggregate {
        /// Zone layer (polygons), e.g. colonias
        #[arg(long)]
        zones: String,
        /// Layer to aggregate, e.g. reportes
        #[arg(long)]
        layer: String,
        /// count, sum:<field>, mean:<field>, min:<field>, max:<field>, density, length,
        /// area_share; repeat the option or separate with commas
        #[arg(long, default_value = "count")]
        stat: Vec<String>,
        /// CQL2 filter on the layer, e.g. "tipo = 'Bache'"
        #[arg(long)]
        filter: Option<String>,
        /// cql2-text (default) or cql2-json
        #[arg(long)]
        filter_lang: Option<String>,
        /// Field that names the zones (default: nombre, name, … or the first text field)
        #[arg(long)]
        name_field: Option<String>,
        /// table (default), csv, json or geojson
        #[arg(long, default_value = "table")]
        format: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DATAHUB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    datahub::demo::init_gdal();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let user = e
                .downcast_ref::<layers::Error>()
                .is_some_and(layers::Error::is_user_error);
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}

/// One line per table joined again after its zone layer changed.
fn print_rejoined(
    out: &mut impl Write,
    rejoined: &[(String, Result<layers::store::LayerMeta, String>)],
) -> std::io::Result<()> {
    for (layer, r) in rejoined {
        match r {
            Ok(d) => writeln!(
                out,
                "  rejoined     layer {layer} version {} ({})",
                d.version,
                d.note.as_deref().unwrap_or("")
            )?,
            Err(e) => writeln!(
                out,
                "  rejoined     layer {layer} NOT rebuilt, its current version stays: {e}"
            )?,
        }
    }
    Ok(())
}

/// The command line's context for the publishing operations.
/// The limits and diagnosis settings of the tables rebuilt after a layer changed.
fn rebuild_template(settings: &Settings, layer: &str, actor: &str) -> IngestRequest {
    IngestRequest {
        limits: Limits {
            max_uncompressed: settings.max_unzipped_mb << 20,
            ..Limits::default()
        },
        diagnose: settings.quality.clone(),
        uploaded_by: Some(actor.to_string()),
        ..IngestRequest::new("", layer, "")
    }
}

fn cli_ctx<'a>(
    store: &'a dyn LayerStore,
    catalog: &'a dyn CatalogStore,
    actor: &'a str,
    webhooks: &'a datahub::webhooks::WebhookSettings,
) -> app::Ctx<'a> {
    app::Ctx {
        store,
        catalog,
        actor,
        remote: Some("cli"),
        webhooks,
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = FileSettings::load(cli.config.as_deref())?;
    let addr = match &cli.cmd {
        Cmd::Serve { addr } => *addr,
        _ => None,
    };
    let mut settings = Settings::resolve(file, addr, cli.data.clone(), cli.keep_versions);
    if let Some(d) = cli.database.clone().filter(|d| !d.trim().is_empty()) {
        settings.database = Some(d);
    }
    // Every command goes through the two seams (`LayerStore`, `CatalogStore`): the
    // data folder, or PostgreSQL with the data folder as this process's copy. A
    // server waits long for a database that is down; a command, briefly.
    let wait = match cli.cmd {
        Cmd::Serve { .. } => settings.database_wait,
        _ => Duration::from_secs(30),
    };
    // Commands that only touch the catalogue or one record need no copy of the
    // layers (on a large hub that copy is gigabytes).
    let copy = !matches!(
        cli.cmd,
        Cmd::Token { .. } | Cmd::Ministry { .. } | Cmd::Migrate { .. }
    );
    let backend = datahub::backend::Backend::open(&settings, wait, copy)?;
    let store = backend.store.clone();
    let catalog_handle = backend.catalog.clone();
    store.clean_stale()?;
    match cli.cmd {
        Cmd::Ingest {
            source,
            layer,
            ministry,
            title,
            description,
            crs,
            source_layer,
            id_field,
            skip_invalid,
            table,
            record,
            note,
            draft,
            json,
        } => {
            let catalog = catalog_handle.clone();
            catalog::check_ministry(&catalog.ministries()?, &ministry)?;
            let req = IngestRequest {
                source,
                layer_id: layer,
                title,
                ministry,
                description,
                synthetic: false,
                crs,
                source_layer,
                id_field,
                skip_invalid,
                limits: Limits {
                    max_uncompressed: settings.max_unzipped_mb << 20,
                    ..Limits::default()
                },
                diagnose: settings.quality.clone(),
                record: record.edit(None, None)?,
                uploaded_by: Some(cli_actor()),
                note,
                table: (*table).options()?,
                // --ministry is required on the command line: it is what was asked.
                ministry_explicit: true,
                expect_ministry: None,
                draft: draft.then(cli_actor),
            };
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} features",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let progress = |p: Progress| {
                if let Some(t) = p.total {
                    bar.set_length(t);
                }
                bar.set_position(p.read);
            };
            bar.set_message(format!("ingesting {}", req.layer_id));
            let actor = cli_actor();
            let ctx = app::Ctx {
                store: store.as_ref(),
                catalog: catalog.as_ref(),
                actor: &actor,
                remote: Some("cli"),
                webhooks: &settings.webhooks,
            };
            // Published, recorded, and the tables joined to this layer rebuilt.
            let result = app::publish(&ctx, &req, &progress);
            bar.finish_and_clear();
            let (summary, _, rejoined) = result?;
            let m = &summary.meta;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, m)?;
                writeln!(out)?;
            } else {
                let r = &m.report;
                match &m.draft {
                    Some(d) => {
                        writeln!(
                            out,
                            "layer {} version {} stored as a draft (made on version {}): not served; \
                             `datahub diff {} {} {}` shows what it changes, `datahub layer publish {}` publishes it",
                            m.id,
                            m.version,
                            d.base.map_or("none".into(), |b| b.to_string()),
                            m.id,
                            d.base.unwrap_or(0),
                            m.version,
                            m.id
                        )?;
                    }
                    None => writeln!(out, "layer {} version {} published", m.id, m.version)?,
                }
                writeln!(
                    out,
                    "  source       {} ({}, layer {})",
                    m.source_file, m.source_format, m.source_layer
                )?;
                writeln!(
                    out,
                    "  source CRS   {} [{}]",
                    m.source_crs.label(),
                    m.source_crs.how
                )?;
                writeln!(
                    out,
                    "  features     read {} / stored {} / repaired {} / rejected {}",
                    r.features_read, r.features_stored, r.features_repaired, r.features_rejected
                )?;
                if let Some(b) = m.bbox {
                    writeln!(
                        out,
                        "  bbox lon/lat {:.6}, {:.6}, {:.6}, {:.6}",
                        b[0], b[1], b[2], b[3]
                    )?;
                }
                if m.geometry_types.is_empty() && m.feature_count > 0 {
                    writeln!(out, "  geometry     none: a table without a place")?;
                } else {
                    writeln!(out, "  geometry     {}", m.geometry_types.join(", "))?;
                }
                writeln!(out, "  time         {:.2} s", m.duration_ms as f64 / 1000.0)?;
                for (k, p) in &r.problems {
                    writeln!(out, "  problem      {k}: {} ({})", p.count, p.description)?;
                }
                if let Some(j) = &r.join {
                    for l in j.lines() {
                        writeln!(out, "  join         {l}")?;
                    }
                }
                for n in &r.notes {
                    writeln!(out, "  note         {n}")?;
                }
                print_rejoined(&mut out, &rejoined)?;
                if let Some(d) = &m.diagnosis {
                    let mut lines = d.summary_lines().into_iter();
                    if let Some(first) = lines.next() {
                        writeln!(out, "  calidad      {first}")?;
                    }
                    for l in lines.take(8) {
                        writeln!(out, "               {l}")?;
                    }
                    writeln!(out, "  (datahub diagnose {} for the full report)", m.id)?;
                }
            }
            Ok(())
        }
        Cmd::Serve { .. } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let registry = Arc::new(Registry::new(store));
                let r = registry.clone();
                let tiles = Arc::new(datahub::tileserve::TileService::new(settings.tiles.clone()));
                let t = tiles.clone();
                tokio::task::spawn_blocking(move || {
                    r.refresh()?;
                    // Loading a layer builds its indexes: the R-tree, and for point
                    // layers the tile index, before the first request.
                    let layers: Vec<_> = r.snapshot().values().cloned().collect();
                    t.prepare(&layers);
                    Ok::<_, layers::Error>(())
                })
                .await??;
                let listener = tokio::net::TcpListener::bind(settings.addr).await?;
                let local = listener.local_addr()?;
                tracing::info!(addr = %local, layers = registry.snapshot().len(), "serving");
                // Tests and scripts read the bound address (port 0 = any free port).
                println!("listening on http://{local}");
                std::io::stdout().flush()?;
                let mut state = Shared::new(registry, tiles, catalog_handle.clone())?;
                state.pg = backend.pg.clone();
                if let Some(pg) = &backend.pg {
                    // Usage counted by every replica, added up in the database.
                    state.usage = Arc::new(
                        datahub::usage::Usage::open(&settings.data).with_shared(pg.catalog.clone()),
                    );
                }
                state.quality = Arc::new(settings.quality.clone());
                state.map = Arc::new(settings.map.clone());
                state.webhooks = Arc::new(settings.webhooks.clone());
                // Notifications of new versions, sent in the background (any
                // replica may send a queued one: each is claimed first).
                tokio::spawn(datahub::webhooks::run(
                    state.catalog.clone(),
                    settings.webhooks.clone(),
                    state.webhooks_wake.clone(),
                ));
                state.limits = Limits {
                    max_uncompressed: settings.max_unzipped_mb << 20,
                    ..Limits::default()
                };
                state.max_upload_bytes = settings.max_upload_mb << 20;
                state.gate = Arc::new(datahub::limits::Gate::new(settings.limits.clone()));
                state.analysis = Arc::new(datahub::analysis::cache::Cache::new(
                    settings.limits.analysis_cache,
                ));
                state.auth = Arc::new(http::auth::Auth::new(
                    state.catalog.clone(),
                    settings.limits.trusted_proxies.clone(),
                ));
                if let Some(pg) = &state.pg {
                    // Other replicas' changes: a layer (refresh now), a revoked token
                    // or ended session (forget cached verifications now); after a
                    // lost connection (""), both.
                    let (auth, changed) = (state.auth.clone(), state.changed.clone());
                    let lease = pg.catalog.clone();
                    pg.db.listen(Arc::new(move |what: String| {
                        if what.is_empty() {
                            // Reconnected: the database may have restarted and
                            // dropped this replica's lease with its connections.
                            let lease = lease.clone();
                            std::thread::spawn(move || {
                                if let Err(e) = lease.hold_lease() {
                                    tracing::warn!(error = %e, "cannot renew the job lease");
                                }
                            });
                        }
                        if what.is_empty() || what.starts_with("token:") || what == "session" {
                            auth.forget_all();
                        }
                        if what.is_empty() || what.starts_with("layer:") {
                            changed.notify_one();
                        }
                    }))?;
                }
                http::serve(
                    listener,
                    AppState::from(state),
                    Duration::from_secs(settings.refresh_secs),
                    shutdown_signal(),
                )
                .await?;
                tracing::info!("shut down cleanly");
                Ok(())
            })
        }
        Cmd::Layers { json } => {
            let mut metas = Vec::new();
            for id in store.layer_ids()? {
                match store.current(&id) {
                    Ok(Some(v)) => metas.push(v.meta),
                    Ok(None) => {}
                    // Listed on stderr, the others still listed.
                    Err(e) => eprintln!("layer {id} cannot be read: {e}"),
                }
            }
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &metas)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:>4} {:>10}  {:<22} title",
                    "layer", "ver", "features", "ministry"
                )?;
                for m in metas {
                    writeln!(
                        out,
                        "{:<24} {:>4} {:>10}  {:<22} {}",
                        m.id, m.version, m.feature_count, m.ministry, m.title
                    )?;
                }
            }
            Ok(())
        }
        Cmd::Versions { layer, json } => {
            let versions = store.versions(&layer)?;
            if versions.is_empty() {
                return Err(layers::Error::UnknownLayer(layer).into());
            }
            let current = store.current_number(&layer)?;
            let mut out = std::io::stdout().lock();
            if json {
                let metas: Vec<_> = versions.into_iter().map(|v| v.meta).collect();
                serde_json::to_writer_pretty(&mut out, &metas)?;
                writeln!(out)?;
            } else {
                for v in versions {
                    let m = v.meta;
                    let mark = if Some(m.version) == current {
                        "*"
                    } else if m.draft.is_some() {
                        "d"
                    } else {
                        " "
                    };
                    writeln!(
                        out,
                        "{mark} v{:<4} {}  {:>10} features  {}  sha256 {}",
                        m.version,
                        m.created_at,
                        m.feature_count,
                        m.source_file,
                        &m.source_sha256[..12.min(m.source_sha256.len())]
                    )?;
                }
            }
            Ok(())
        }
        Cmd::Aggregate {
            zones,
            layer,
            stat,
            filter,
            filter_lang,
            name_field,
            format,
        } => aggregate_cmd(
            &store,
            &zones,
            &layer,
            &stat,
            filter,
            filter_lang,
            name_field,
            &format,
        ),
        Cmd::Layer {
            cmd:
                LayerCmd::Set {
                    layer,
                    title,
                    description,
                    record,
                },
        } => {
            let edit = record.edit(title, description)?;
            if edit.is_empty() {
                anyhow::bail!("nothing to change: give one or more of --title, --description, --keywords, --theme, --license, --contact-name, --contact-email, --update-frequency, --language, --temporal, --access");
            }
            let catalog = catalog_handle.clone();
            let actor = cli_actor();
            let m = app::edit(
                &cli_ctx(store.as_ref(), catalog.as_ref(), &actor, &settings.webhooks),
                &layer,
                &edit,
            )?;
            println!("layer {} v{}: record updated", m.id, m.version);
            println!("  access       {}", m.access.as_str());
            println!("  title        {}", m.title);
            println!("  license      {}", m.license);
            println!(
                "  contact      {} <{}>",
                m.contact_name.as_deref().unwrap_or("-"),
                m.contact_email.as_deref().unwrap_or("-")
            );
            println!(
                "  frequency    {}",
                m.update_frequency.as_deref().unwrap_or("-")
            );
            println!("  keywords     {}", m.keywords.join(", "));
            if let Some(d) = &m.diagnosis {
                println!("  calidad      {} — {}/100", d.grade.label_es(), d.score);
            }
            Ok(())
        }
        Cmd::Layer {
            cmd: LayerCmd::Restore { layer, version },
        } => {
            let catalog = catalog_handle.clone();
            let actor = cli_actor();
            // The limits and diagnosis settings of the tables rebuilt after it.
            let template = rebuild_template(&settings, &layer, &actor);
            let (m, rejoined) = app::restore(
                &cli_ctx(store.as_ref(), catalog.as_ref(), &actor, &settings.webhooks),
                &layer,
                version,
                &template,
            )?;
            println!(
                "layer {layer}: version {version} restored as version {}",
                m.version
            );
            print_rejoined(&mut std::io::stdout().lock(), &rejoined)?;
            Ok(())
        }
        Cmd::Layer {
            cmd: LayerCmd::Publish { layer },
        } => {
            let catalog = catalog_handle.clone();
            let actor = cli_actor();
            let draft = store
                .draft(&layer)?
                .ok_or_else(|| layers::Error::bad(format!("layer '{layer}' has no draft")))?
                .meta;
            // The command line runs with the machine's rights: an admin, but still not
            // the uploader when the ministry requires approval.
            if let Some(why) = app::approval_refused(catalog.as_ref(), &draft, &actor, true)? {
                anyhow::bail!(why);
            }
            let template = rebuild_template(&settings, &layer, &actor);
            let (m, rejoined) = app::publish_draft(
                &cli_ctx(store.as_ref(), catalog.as_ref(), &actor, &settings.webhooks),
                &layer,
                Some(draft.version),
                &template,
            )?;
            println!("layer {layer}: draft version {} published", m.version);
            print_rejoined(&mut std::io::stdout().lock(), &rejoined)?;
            Ok(())
        }
        Cmd::Layer {
            cmd: LayerCmd::Discard { layer },
        } => {
            let catalog = catalog_handle.clone();
            let actor = cli_actor();
            let m = app::discard_draft(
                &cli_ctx(store.as_ref(), catalog.as_ref(), &actor, &settings.webhooks),
                &layer,
            )?;
            println!("layer {layer}: draft version {} discarded", m.version);
            Ok(())
        }
        Cmd::Layer {
            cmd: LayerCmd::Delete { layer },
        } => {
            let catalog = catalog_handle.clone();
            let actor = cli_actor();
            app::delete(
                &cli_ctx(store.as_ref(), catalog.as_ref(), &actor, &settings.webhooks),
                &layer,
            )?;
            println!(
                "layer {layer} deleted (hidden; `datahub layer undelete {layer}` brings it back)"
            );
            Ok(())
        }
        Cmd::Layer {
            cmd: LayerCmd::Undelete { layer },
        } => {
            let catalog = catalog_handle.clone();
            let actor = cli_actor();
            if app::undelete(
                &cli_ctx(store.as_ref(), catalog.as_ref(), &actor, &settings.webhooks),
                &layer,
            )?
            .is_none()
            {
                return Err(layers::Error::bad(format!("layer '{layer}' is not deleted")).into());
            }
            println!("layer {layer} restored");
            Ok(())
        }
        Cmd::Ministry { cmd } => ministry_cmd(catalog_handle.as_ref(), cmd),
        Cmd::Token { cmd } => token_cmd(catalog_handle.as_ref(), cmd),
        Cmd::Diagnose {
            layer,
            version,
            recompute,
            json,
        } => diagnose_cmd(&store, &settings, &layer, version, recompute, json),
        Cmd::Migrate { to } => migrate_cmd(&settings, store.as_ref(), &to),
        Cmd::Diff {
            layer,
            from,
            to,
            key,
            geojson,
            json,
        } => diff_cmd(
            store.as_ref(),
            &layer,
            from,
            to,
            key.as_deref(),
            geojson,
            json,
        ),
        Cmd::Demo => {
            let catalog = catalog_handle.clone();
            let known = catalog.ministries()?;
            for (slug, name) in catalog::CITY_MINISTRIES {
                if !known.iter().any(|m| m.slug == slug) {
                    catalog.add_ministry(&catalog::Ministry {
                        require_approval: false,
                        slug: slug.into(),
                        name: name.into(),
                        email: Some("datos.abiertos@monterrey.gob.mx".into()),
                    })?;
                }
            }
            let made = datahub::demo::ensure_demo(store.as_ref())?;
            for line in made {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// `datahub diff LAYER FROM [TO]`: the summary printed, the changes optionally
/// written as GeoJSON (the same documents as `/collections/{id}/changes`).
fn diff_cmd(
    store: &dyn LayerStore,
    layer: &str,
    from: u32,
    to: Option<u32>,
    key: Option<&str>,
    geojson: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    use datahub::changes::{self, Changes, Page};
    let to = match to {
        Some(t) => t,
        None => store
            .current_number(layer)?
            .ok_or_else(|| layers::Error::UnknownLayer(layer.to_string()))?,
    };
    let key: Vec<String> = key
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let cache = Changes::default();
    let t0 = std::time::Instant::now();
    let c = cache.diff(store, None, layer, from, to, &key)?;
    let elapsed = t0.elapsed();
    let base = "http://localhost:8080";
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &changes::summary(&c, base))?;
        writeln!(out)?;
    } else {
        let n = c.diff.counts();
        let d = &c.diff;
        writeln!(
            out,
            "{layer}: v{} → v{} ({} → {} features), compared in {:.2} s",
            c.from(),
            c.to(),
            d.old_count,
            d.new_count,
            elapsed.as_secs_f64()
        )?;
        writeln!(out, "  identity: {}", d.identity.note)?;
        writeln!(
            out,
            "  {} added, {} removed, {} modified ({} geometry, {} attributes), {} unchanged",
            n.added, n.removed, n.modified, n.geometry_changed, n.attributes_changed, n.unchanged
        )?;
        for (name, k) in d.attribute_counts() {
            writeln!(out, "    {name}: {k} changed")?;
        }
        let s = &d.schema;
        for f in &s.added {
            writeln!(out, "  column added: {} ({:?})", f.name, f.ftype)?;
        }
        for f in &s.removed {
            writeln!(out, "  column removed: {} ({:?})", f.name, f.ftype)?;
        }
        for r in &s.retyped {
            writeln!(
                out,
                "  column retyped: {} {:?} → {:?}",
                r.name, r.from, r.to
            )?;
        }
        for r in &s.renamed {
            writeln!(out, "  column renamed: {} → {}", r.from, r.to)?;
        }
    }
    if let Some(path) = geojson {
        let doc = changes::geojson_page(
            &c,
            &Page {
                kinds: &[],
                offset: 0,
                limit: usize::MAX,
            },
            base,
        )?;
        let mut doc = doc;
        if let Some(o) = doc.as_object_mut() {
            o.remove("links");
        }
        std::fs::write(&path, serde_json::to_vec(&doc)?)
            .map_err(|e| layers::Error::io(&path, e))?;
    }
    Ok(())
}

/// `datahub migrate --to URL`: the data folder into PostgreSQL, version by version
/// (numbers, records and files unchanged; drafts and the numbers of discarded ones
/// included) with the catalogue (approval rules, webhooks and their log), then the
/// counts compared.
fn migrate_cmd(settings: &Settings, store: &dyn LayerStore, to: &str) -> anyhow::Result<()> {
    use layers::store::postgres::PgStore;
    if settings.database.is_some() {
        anyhow::bail!(
            "migrate copies the data folder: run it without --database / DATAHUB_DATABASE (the target is --to)"
        );
    }
    let db = Arc::new(layers::pg::Db::connect(to, Duration::from_secs(30))?);
    // The target store's local copy is not needed: a scratch folder, removed after.
    let scratch = tempfile::Builder::new()
        .prefix("migrate.")
        .tempdir_in(store.scratch_dir())?;
    let target = PgStore::open(db.clone(), scratch.path(), settings.keep_versions)?;
    let pg_catalog = datahub::catalog::postgres::PgCatalog::open(db.clone())?;
    let dump = datahub::catalog::SqliteCatalog::open(&settings.data)?.dump()?;
    let want = [
        dump.ministries.len(),
        dump.tokens.len(),
        dump.audit.len(),
        dump.jobs.len(),
        dump.subscriptions.len(),
        dump.deliveries.len(),
    ];
    let added = pg_catalog.import(dump)?;
    let mut out = std::io::stdout().lock();
    let tables = datahub::catalog::postgres::CATALOG_TABLE_NAMES;
    let line: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {} (+{})", catalog_label(t), want[i], added[i]))
        .collect();
    writeln!(out, "catalogue    {}", line.join(", "))?;
    let mut ids = store.layer_ids()?;
    ids.extend(store.hidden_ids()?);
    // A new layer uploaded as a draft has nothing else yet.
    ids.extend(store.draft_ids()?);
    ids.sort();
    ids.dedup();
    let mut problems = Vec::new();
    let (mut versions_n, mut copied) = (0, 0);
    for id in &ids {
        let current = store.current_number(id)?;
        let draft = store.draft(id)?.map(|d| d.meta.version);
        // A discarded draft's number is not given again by the database either.
        let last = store.last_number(id)?;
        target.reserve_numbers(id, last)?;
        for v in store.versions(id)? {
            let n = v.meta.version;
            let new = target.import_version(&v, Some(n) == current)?;
            let rows = target.feature_rows(id, n)?;
            versions_n += 1;
            copied += usize::from(new);
            let check = if rows as u64 == v.meta.feature_count {
                "ok"
            } else {
                problems.push(format!(
                    "{id} v{n}: {rows} rows in PostGIS, {} features in the folder",
                    v.meta.feature_count
                ));
                "MISMATCH"
            };
            writeln!(
                out,
                "layer        {id} v{n}{} {}: {rows} features {check}",
                if Some(n) == current {
                    " (current)"
                } else if Some(n) == draft {
                    " (draft)"
                } else {
                    ""
                },
                if new { "copied" } else { "already there" }
            )?;
        }
        let given = target.last_number(id)?;
        if given < last {
            problems.push(format!(
                "{id}: the database would number the next version {}, the folder {}",
                given + 1,
                last + 1
            ));
        }
    }
    let have = pg_catalog.counts()?;
    for (i, t) in tables.iter().enumerate() {
        if (have[i] as usize) < want[i] {
            problems.push(format!(
                "{}: {} in the database, {} in the folder",
                catalog_label(t),
                have[i],
                want[i]
            ));
        }
    }
    writeln!(
        out,
        "migrated     {} layers, {versions_n} versions ({copied} copied now) to {}",
        ids.len(),
        db.describe()
    )?;
    if !problems.is_empty() {
        anyhow::bail!(
            "the counts differ after the migration:\n  {}",
            problems.join("\n  ")
        );
    }
    writeln!(
        out,
        "checked      every version's feature count, the version numbering and the catalogue's rows match"
    )?;
    Ok(())
}

/// A catalogue table as `migrate` reports it.
fn catalog_label(table: &str) -> &str {
    match table {
        "audit" => "audit entries",
        "deliveries" => "webhook deliveries",
        "subscriptions" => "webhook subscriptions",
        t => t,
    }
}

/// Who runs the command line, for the audit log and version history.
fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

fn ministry_cmd(catalog: &dyn CatalogStore, cmd: MinistryCmd) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        MinistryCmd::Add { slug, name, email } => {
            if let Some(e) = &email {
                layers::store::RecordEdit {
                    contact_email: Some(e.clone()),
                    ..Default::default()
                }
                .validate()?;
            }
            let m = catalog::Ministry {
                slug,
                name,
                email,
                require_approval: false,
            };
            catalog.add_ministry(&m)?;
            let mut e = catalog::AuditEntry::now(&cli_actor(), "ministry.add");
            e.ministry = Some(m.slug.clone());
            e.detail = serde_json::json!({"name": m.name});
            e.remote = Some("cli".into());
            catalog.append_audit(&e)?;
            writeln!(out, "ministry {} added: {}", m.slug, m.name)?;
        }
        MinistryCmd::List { json } => {
            let ms = catalog.ministries()?;
            if json {
                serde_json::to_writer_pretty(&mut out, &ms)?;
                writeln!(out)?;
            } else {
                for m in ms {
                    let approval = if m.require_approval {
                        "  (uploads need approval)"
                    } else {
                        ""
                    };
                    writeln!(out, "{:<24} {}{approval}", m.slug, m.name)?;
                }
            }
        }
        MinistryCmd::Set {
            slug,
            require_approval,
        } => {
            catalog.set_require_approval(&slug, require_approval.0)?;
            let mut e = catalog::AuditEntry::now(&cli_actor(), "ministry.approval");
            e.ministry = Some(slug.clone());
            e.detail = serde_json::json!({"require_approval": require_approval.0});
            e.remote = Some("cli".into());
            catalog.append_audit(&e)?;
            writeln!(
                out,
                "ministry {slug}: uploads {}",
                if require_approval.0 {
                    "are drafts until someone else (an admin) publishes them"
                } else {
                    "are published at once (unless sent as drafts)"
                }
            )?;
        }
    }
    Ok(())
}

fn token_cmd(catalog: &dyn CatalogStore, cmd: TokenCmd) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        TokenCmd::Create {
            ministry,
            role,
            label,
            expires,
        } => {
            let role = catalog::Role::parse(&role)?;
            let label = label.unwrap_or_else(|| {
                format!(
                    "{} {}",
                    ministry.as_deref().unwrap_or("city"),
                    role.as_str()
                )
            });
            let (info, secret) =
                catalog.create_token(ministry.as_deref(), role, &label, expires.as_deref())?;
            let mut e = catalog::AuditEntry::now(&cli_actor(), "token.create");
            e.ministry = info.ministry.clone();
            e.detail = serde_json::json!({"token": info.id, "role": role.as_str(), "label": info.label, "expires_at": info.expires_at});
            e.remote = Some("cli".into());
            catalog.append_audit(&e)?;
            // The secret on stdout alone, so scripts can capture it; the rest on stderr.
            writeln!(out, "{secret}")?;
            let _ = writeln!(
                std::io::stderr(),
                "token {} created ({} of {}); this is the only time it is shown. Use it as: Authorization: Bearer <token>",
                info.id,
                role.as_str(),
                info.ministry.as_deref().unwrap_or("the whole city")
            );
        }
        TokenCmd::List { json } => {
            let ts = catalog.tokens()?;
            if json {
                serde_json::to_writer_pretty(&mut out, &ts)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<14} {:<22} {:<7} {:<21} {:<9} label",
                    "id", "ministry", "role", "created", "state"
                )?;
                for t in ts {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t
                        .expires_at
                        .as_deref()
                        .is_some_and(|e| e < catalog::now().as_str())
                    {
                        "expired"
                    } else {
                        "active"
                    };
                    writeln!(
                        out,
                        "{:<14} {:<22} {:<7} {:<21} {:<9} {}",
                        t.id,
                        t.ministry.as_deref().unwrap_or("(city-wide)"),
                        t.role.as_str(),
                        t.created_at,
                        state,
                        t.label
                    )?;
                }
            }
        }
        TokenCmd::Revoke { id } => {
            if !catalog.revoke_token(&id)? {
                return Err(layers::Error::bad(format!(
                    "no active token '{id}' (datahub token list shows them)"
                ))
                .into());
            }
            let mut e = catalog::AuditEntry::now(&cli_actor(), "token.revoke");
            e.detail = serde_json::json!({"token": id});
            e.remote = Some("cli".into());
            catalog.append_audit(&e)?;
            writeln!(out, "token {id} revoked")?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}

#[allow(clippy::too_many_arguments)]
fn aggregate_cmd(
    store: &Arc<dyn LayerStore>,
    zones: &str,
    layer: &str,
    stat: &[String],
    filter: Option<String>,
    filter_lang: Option<String>,
    name_field: Option<String>,
    format: &str,
) -> anyhow::Result<()> {
    use datahub::analysis::{self, FilterSpec};
    if !["table", "csv", "json", "geojson"].contains(&format) {
        anyhow::bail!("unknown --format '{format}'; use table, csv, json or geojson");
    }
    let registry = Registry::new(store.clone());
    registry.refresh()?;
    let get = |id: &str| {
        registry
            .get(id)
            .ok_or_else(|| layers::Error::UnknownLayer(id.to_string()))
    };
    let (zl, ll) = (get(zones)?, get(layer)?);
    let stats =
        analysis::parse_stats(stat.iter().map(String::as_str), &ll).map_err(layers::Error::bad)?;
    let filter = filter.map(|f| FilterSpec {
        filter: f,
        lang: filter_lang,
        crs: None,
    });
    let cache = analysis::cache::Cache::new(64 << 20);
    let (z, agg) = analysis::cached_aggregate(
        &cache,
        &zl,
        name_field.as_deref(),
        &ll,
        &stats,
        filter.as_ref(),
    )?;
    let mut out = std::io::stdout().lock();
    match format {
        "csv" => write!(out, "{}", agg.to_csv())?,
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(&agg.to_json())?)?,
        "geojson" => writeln!(out, "{}", agg.to_geojson(&z))?,
        _ => {
            let mut header = vec!["id".to_string(), "name".into(), "area_km2".into()];
            header.extend(agg.stats.iter().cloned());
            let mut rows: Vec<Vec<String>> = vec![header];
            for r in &agg.rows {
                let mut row = vec![
                    r.fid.to_string(),
                    r.name.clone().unwrap_or_default(),
                    format!("{:.3}", r.area_km2),
                ];
                row.extend(r.values.iter().map(|v| match v {
                    Some(x) if x.fract() == 0.0 => format!("{x}"),
                    Some(x) => format!("{x:.3}"),
                    None => "-".into(),
                }));
                rows.push(row);
            }
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
                .collect();
            for r in &rows {
                let cells: Vec<String> = r
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(i, (c, w))| {
                        let pad = w - c.chars().count();
                        if i == 1 {
                            format!("{c}{}", " ".repeat(pad))
                        } else {
                            format!("{}{c}", " ".repeat(pad))
                        }
                    })
                    .collect();
                writeln!(out, "{}", cells.join("  "))?;
            }
            writeln!(
                out,
                "{} zones of '{}' v{}, layer '{}' v{}, {:.1} ms. {}",
                agg.rows.len(),
                agg.zones_id,
                agg.zones_version,
                agg.layer_id,
                agg.layer_version,
                agg.elapsed_ms,
                analysis::METHOD
            )?;
        }
    }
    Ok(())
}

fn diagnose_cmd(
    store: &Arc<dyn LayerStore>,
    settings: &Settings,
    layer: &str,
    version: Option<u32>,
    recompute: bool,
    json: bool,
) -> anyhow::Result<()> {
    use layers::diagnose::Severity;
    let versions = store.versions(layer)?;
    if versions.is_empty() {
        return Err(layers::Error::UnknownLayer(layer.to_string()).into());
    }
    let v = match version {
        Some(n) => versions
            .into_iter()
            .find(|v| v.meta.version == n)
            .ok_or_else(|| anyhow::anyhow!("layer '{layer}' has no kept version {n}; `datahub versions {layer}` lists them"))?,
        None => store
            .current(layer)?
            .ok_or_else(|| layers::Error::UnknownLayer(layer.to_string()))?,
    };
    let d = match (&v.meta.diagnosis, recompute) {
        (Some(d), false) => d.as_of(&v.meta, chrono::Utc::now()),
        _ => {
            let loaded = layers::index::LoadedLayer::load(&v)?;
            let d = layers::diagnose::diagnose(&loaded, &settings.quality)?;
            store.set_diagnosis(layer, v.meta.version, d.clone())?;
            d.as_of(&v.meta, chrono::Utc::now())
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
        return Ok(());
    }
    let m = &v.meta;
    writeln!(
        out,
        "{} v{} — {} ({} elementos / features)",
        m.id, m.version, m.title, d.features
    )?;
    writeln!(
        out,
        "calidad / quality: {} / {} — {}/100",
        d.grade.label_es(),
        d.grade.label_en(),
        d.score
    )?;
    writeln!(out, "decide / decided by: {}", d.reasons.join(", "))?;
    writeln!(
        out,
        "área esperada / expected area: {} {:?}; región / region: {} {:?}",
        d.area.name, d.area.bbox, d.region.name, d.region.bbox
    )?;
    for c in &d.checks {
        let sev = match c.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "aviso",
            Severity::Info => "info",
        };
        writeln!(out)?;
        writeln!(
            out,
            "[{sev}] {} — {} ({:.1}%), -{} pts{}",
            c.code,
            c.count,
            c.share * 100.0,
            c.penalty,
            if c.blocking { ", BLOQUEA / BLOCKS" } else { "" }
        )?;
        writeln!(out, "  es: {}", c.message_es)?;
        writeln!(out, "  en: {}", c.message_en)?;
        if let Some(f) = &c.fix {
            writeln!(out, "  corrección / fix: {f}")?;
        }
        if !c.examples.is_empty() {
            let ex: Vec<String> = c.examples.iter().map(i64::to_string).collect();
            writeln!(out, "  ejemplos / examples (id): {}", ex.join(", "))?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<24} {:<8} {:>9} {:>9}",
        "campo / field", "tipo", "vacío %", "distintos"
    )?;
    for f in &d.fields {
        writeln!(
            out,
            "{:<24} {:<8} {:>9.1} {:>9}{}",
            f.name,
            f.ftype,
            f.missing_share * 100.0,
            f.distinct,
            if f.distinct_capped { "+" } else { "" }
        )?;
    }
    Ok(())
}
