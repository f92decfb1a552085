//! `kiln-server` is the Kiln server: Pyroscope-compatible ingest (Connect
//! push and the legacy `/ingest`), the query API (`/pyroscope/render`,
//! `/pyroscope/render-diff`, `/pyroscope/label-values`, and the native
//! `/api/v1/…` documented in `docs/api.md`), tenants by `X-Scope-OrgID`,
//! and `/metrics`. It wires `kiln-store` to `kiln-profile`; HTTP status
//! codes are chosen here, at the handler edge, and nowhere below.
//!
//! Not for: sampling (that is `kiln-agent`) or storage formats (that is
//! `kiln-store`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = kiln_server::Config::new("./kiln-data");
//! let app = kiln_server::App::open(config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4040").await?;
//! axum::serve(listener, app.router()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod cluster;
mod flamebearer;
mod ingest;
mod query;
pub mod time;
mod ui;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Limits on what one request may make the server do.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Request body, as sent. Default 16 MiB.
    pub max_body: usize,
    /// A body or profile after decompression. Default 128 MiB.
    pub max_decompressed: usize,
    /// Samples in one profile. Default 1,000,000.
    pub max_samples: usize,
    /// Labels per series. Default 30.
    pub max_labels: usize,
    /// Bytes in a label name or value. Default 1024.
    pub max_label_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 16 << 20,
            max_decompressed: 128 << 20,
            max_samples: 1_000_000,
            max_labels: 30,
            max_label_len: 1024,
        }
    }
}

/// How the server runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Where the store lives. Default `./kiln-data`.
    pub data_dir: PathBuf,
    /// Request limits. Default [`Limits::default`].
    pub limits: Limits,
    /// Bearer tokens and the tenant each one is. Empty (the default): no
    /// authentication, the tenant is `X-Scope-OrgID`. Otherwise every
    /// request but `/metrics` and `/ready` needs a token, and a token of
    /// tenant A never reads or writes tenant B.
    pub tokens: Vec<(String, String)>,
    /// Where blocks go: `s3://bucket/prefix` or `file:///path`; `None`
    /// (the default) is `DATA_DIR/blocks`.
    pub storage: Option<String>,
    /// The head is cut into blocks this often. Default 10 minutes.
    pub flush_every: Duration,
    /// ... or once it holds this many bytes. Default 512 MiB.
    pub head_max_bytes: usize,
    /// Bytes that cut heads waiting for object storage (while it fails)
    /// may hold; past head + this, pushes get 503 with `Retry-After`.
    /// Default 512 MiB.
    pub pending_max_bytes: usize,
    /// How long blocks are kept, per tenant (`""`: every tenant not named).
    /// Default: no entry, kept forever.
    pub retention: HashMap<String, Duration>,
    /// This server's id in the blocks it writes; default: made once and
    /// kept in `DATA_DIR/server-id`.
    pub server_id: Option<String>,
    /// Other servers on the same bucket, asked for their unflushed head
    /// at each query (`http://host:port`).
    pub peers: Vec<String>,
    /// The token peers show each other (`cluster.token`).
    pub peer_token: Option<String>,
    /// The bucket is listed again for peers' blocks when a query finds the
    /// last look older than this. Default 10 s.
    pub refresh_every: Duration,
}

impl Config {
    /// The defaults, storing under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        let store = kiln_store::Options::default();
        Config {
            data_dir: data_dir.into(),
            limits: Limits::default(),
            tokens: Vec::new(),
            storage: None,
            flush_every: store.flush_every,
            head_max_bytes: store.head_max_bytes,
            pending_max_bytes: store.pending_max_bytes,
            retention: HashMap::new(),
            server_id: None,
            peers: Vec::new(),
            peer_token: None,
            refresh_every: store.refresh_every,
        }
    }

    /// Applies a configuration file (TOML) over `self`:
    ///
    /// ```toml
    /// data_dir = "/var/lib/kiln"
    /// [limits]
    /// max_body = 16777216
    /// max_decompressed = 134217728
    /// max_samples = 1000000
    /// max_labels = 30
    /// max_label_len = 1024
    /// [storage]
    /// url = "s3://bucket/prefix"     # default: DATA_DIR/blocks
    /// flush_every = "10m"
    /// head_max_bytes = 536870912
    /// pending_max_bytes = 536870912  # cut heads waiting for storage
    /// retention = "30d"              # tenants without their own
    /// refresh_every = "10s"
    /// [cluster]
    /// server_id = "kiln-1"
    /// peers = ["http://kiln-2:4040"]
    /// token = "a-long-shared-secret"
    /// [tenants.team-a]
    /// tokens = ["a-secret"]
    /// retention = "7d"
    /// ```
    ///
    /// Unknown keys are errors, so a typo does not silently do nothing.
    pub fn apply_toml(mut self, text: &str) -> Result<Config, Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            data_dir: Option<PathBuf>,
            #[serde(default)]
            limits: FileLimits,
            #[serde(default)]
            tenants: std::collections::BTreeMap<String, Tenant>,
            #[serde(default)]
            storage: Storage,
            #[serde(default)]
            cluster: Cluster,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Storage {
            url: Option<String>,
            flush_every: Option<String>,
            head_max_bytes: Option<usize>,
            pending_max_bytes: Option<usize>,
            retention: Option<String>,
            refresh_every: Option<String>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Cluster {
            server_id: Option<String>,
            #[serde(default)]
            peers: Vec<String>,
            token: Option<String>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct FileLimits {
            max_body: Option<usize>,
            max_decompressed: Option<usize>,
            max_samples: Option<usize>,
            max_labels: Option<usize>,
            max_label_len: Option<usize>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Tenant {
            #[serde(default)]
            tokens: Vec<String>,
            retention: Option<String>,
        }
        let span = |key: &str, v: &str| {
            time::duration(v).map_err(|e| Error::Config(format!("{key} = {v:?}: {e}")))
        };
        let f: File = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(d) = f.data_dir {
            self.data_dir = d;
        }
        let l = &mut self.limits;
        l.max_body = f.limits.max_body.unwrap_or(l.max_body);
        l.max_decompressed = f.limits.max_decompressed.unwrap_or(l.max_decompressed);
        l.max_samples = f.limits.max_samples.unwrap_or(l.max_samples);
        l.max_labels = f.limits.max_labels.unwrap_or(l.max_labels);
        l.max_label_len = f.limits.max_label_len.unwrap_or(l.max_label_len);
        let st = f.storage;
        if st.url.is_some() {
            self.storage = st.url;
        }
        if let Some(v) = &st.flush_every {
            self.flush_every = span("storage.flush_every", v)?;
        }
        self.head_max_bytes = st.head_max_bytes.unwrap_or(self.head_max_bytes);
        self.pending_max_bytes = st.pending_max_bytes.unwrap_or(self.pending_max_bytes);
        if let Some(v) = &st.retention {
            self.retention
                .insert(String::new(), span("storage.retention", v)?);
        }
        if let Some(v) = &st.refresh_every {
            self.refresh_every = span("storage.refresh_every", v)?;
        }
        if f.cluster.server_id.is_some() {
            self.server_id = f.cluster.server_id;
        }
        for p in &f.cluster.peers {
            if !(p.starts_with("http://") || p.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "cluster.peers: {p:?} is not an http:// or https:// URL"
                )));
            }
        }
        self.peers.extend(f.cluster.peers);
        if let Some(t) = f.cluster.token {
            if t.len() < 16 {
                return Err(Error::Config(
                    "cluster.token: must be at least 16 characters".into(),
                ));
            }
            self.peer_token = Some(t);
        }
        for (tenant, t) in f.tenants {
            valid_tenant(&tenant)
                .map_err(|e| Error::Config(format!("tenants.{tenant}: {}", e.1)))?;
            if let Some(v) = &t.retention {
                self.retention.insert(
                    tenant.clone(),
                    span(&format!("tenants.{tenant}.retention"), v)?,
                );
            }
            for token in t.tokens {
                if token.len() < 16 {
                    return Err(Error::Config(format!(
                        "tenants.{tenant}: a token must be at least 16 characters"
                    )));
                }
                if self.tokens.iter().any(|(k, _)| *k == token) {
                    return Err(Error::Config(format!(
                        "tenants.{tenant}: a token is given twice"
                    )));
                }
                self.tokens.push((token, tenant.clone()));
            }
        }
        Ok(self)
    }
}

/// What can go wrong starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    /// The configuration file is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

struct Metrics {
    registry: Registry,
    ingested_profiles: Counter,
    ingested_samples: Counter,
    ingest_errors: Counter,
    head_series: Gauge,
    head_samples: Gauge,
    head_rows: Gauge,
    head_bytes: Gauge,
    blocks: Gauge,
    block_bytes: Gauge,
    wal_bytes: Gauge,
    flushes: Gauge,
    flush_errors: Gauge,
    pending_bytes: Gauge,
    refused: Gauge,
    compactions: Gauge,
    expired_blocks: Gauge,
    hours_summed: Gauge,
    peer_errors: Counter,
    panics: Counter,
    query_seconds: Histogram,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kiln_server");
        let m = Metrics {
            registry: Registry::default(),
            ingested_profiles: Counter::default(),
            ingested_samples: Counter::default(),
            ingest_errors: Counter::default(),
            head_series: Gauge::default(),
            head_samples: Gauge::default(),
            head_rows: Gauge::default(),
            head_bytes: Gauge::default(),
            blocks: Gauge::default(),
            block_bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            flushes: Gauge::default(),
            flush_errors: Gauge::default(),
            pending_bytes: Gauge::default(),
            refused: Gauge::default(),
            compactions: Gauge::default(),
            hours_summed: Gauge::default(),
            expired_blocks: Gauge::default(),
            peer_errors: Counter::default(),
            panics: Counter::default(),
            query_seconds: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0]),
        };
        registry.register(
            "ingested_profiles",
            "Profiles stored",
            m.ingested_profiles.clone(),
        );
        registry.register(
            "ingested_samples",
            "Samples stored",
            m.ingested_samples.clone(),
        );
        registry.register(
            "ingest_errors",
            "Ingest requests refused or failed",
            m.ingest_errors.clone(),
        );
        registry.register("head_series", "Series in the head", m.head_series.clone());
        registry.register(
            "head_samples",
            "Samples held in the head",
            m.head_samples.clone(),
        );
        for (name, help, g) in [
            (
                "head_rows",
                "Rows (stack x label set x minute) in the head",
                &m.head_rows,
            ),
            (
                "head_bytes",
                "Approximate memory the head holds",
                &m.head_bytes,
            ),
            (
                "blocks",
                "Blocks known, this server's and its peers'",
                &m.blocks,
            ),
            (
                "block_bytes",
                "Bytes of those blocks in storage",
                &m.block_bytes,
            ),
            (
                "wal_bytes",
                "Bytes of write-ahead log on disk",
                &m.wal_bytes,
            ),
            ("flushes", "Cuts of the head into blocks", &m.flushes),
            (
                "flush_errors",
                "Cuts that failed and wait for a retry",
                &m.flush_errors,
            ),
            (
                "pending_bytes",
                "Bytes held by cut heads waiting for object storage",
                &m.pending_bytes,
            ),
            (
                "refused_profiles",
                "Pushes refused (503) while storage failed and memory was full",
                &m.refused,
            ),
            (
                "compactions",
                "Compactions of an hour's blocks",
                &m.compactions,
            ),
            (
                "hours_summed",
                "Whole hours of a service summed ahead of queries",
                &m.hours_summed,
            ),
            (
                "expired_blocks",
                "Blocks deleted for retention",
                &m.expired_blocks,
            ),
        ] {
            registry.register(name, help, g.clone());
        }
        registry.register(
            "peer_errors",
            "Peers that did not answer a query",
            m.peer_errors.clone(),
        );
        registry.register(
            "panics",
            "Requests whose handler panicked (answered 500)",
            m.panics.clone(),
        );
        registry.register(
            "query_seconds",
            "Time to answer a query",
            m.query_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

struct Inner {
    config: Config,
    store: kiln_store::Store,
    metrics: Metrics,
    /// For asking peers.
    http: reqwest::Client,
    /// Recent merged answers.
    answers: cluster::Answers,
}

/// Shared state of every handler.
#[derive(Clone)]
struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A server: its store and routes.
pub struct App {
    state: AppState,
}

/// Runs `work` a second after it last finished, for as long as the app
/// lives.
fn every_second<F, W>(state: &AppState, work: W)
where
    W: Fn(Arc<Inner>) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(&state.0);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            work(inner).await;
        }
    });
}

impl App {
    /// Opens the store under `config.data_dir` (loading its blocks and
    /// replaying the log since the last cut) and starts its upkeep: every
    /// second a task cuts the head when due, compacts, expires and looks
    /// for peers' blocks. Needs a Tokio runtime; the task ends with the
    /// last handle on the app.
    pub async fn open(config: Config) -> Result<App, Error> {
        let opts = kiln_store::Options {
            storage: match &config.storage {
                Some(url) => Some(cluster::storage(url)?),
                None => None,
            },
            server_id: config.server_id.clone(),
            flush_every: config.flush_every,
            head_max_bytes: config.head_max_bytes,
            pending_max_bytes: config.pending_max_bytes,
            retention: config.retention.clone(),
            refresh_every: config.refresh_every,
            ..kiln_store::Options::default()
        };
        let store = kiln_store::Store::open(&config.data_dir, opts).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let state = AppState(Arc::new(Inner {
            config,
            store,
            metrics: Metrics::new(),
            http,
            answers: cluster::Answers::default(),
        }));
        // Cuts, compaction, retention, the bucket's listing.
        every_second(&state, |inner| async move {
            if let Err(e) = inner.store.tick().await {
                tracing::error!(target: "kiln_server", "storage upkeep: {e}");
            }
        });
        // Whole hours that are over are summed ahead of the first query
        // over them, one at a time, off the async threads.
        every_second(&state, |inner| async move {
            let _ = tokio::task::spawn_blocking(move || inner.store.sum_an_hour()).await;
        });
        Ok(App { state })
    }

    /// Cuts the head into blocks now (as the upkeep does every
    /// `flush_every`); returns the ids written.
    pub async fn flush(&self) -> Result<Vec<String>, Error> {
        Ok(self.state.store.flush().await?)
    }

    /// The store, for tools and tests that look beneath the API.
    pub fn store(&self) -> &kiln_store::Store {
        &self.state.store
    }

    /// Every route.
    pub fn router(&self) -> Router {
        let limit = self.state.config.limits.max_body;
        let router = Router::new()
            .route(kiln_profile::push::PUSH_PATH, post(ingest::push))
            .route("/ingest", post(ingest::ingest))
            .route("/pyroscope/render", get(query::render))
            .route("/pyroscope/render-diff", get(query::render_diff))
            .route(
                "/pyroscope/label-values",
                get(query::pyroscope_label_values),
            )
            .route("/pyroscope/label-names", get(query::label_names))
            .route("/api/v1/top", get(query::top))
            .route("/api/v1/flamegraph", get(query::flamegraph))
            .route("/api/v1/diff", get(query::diff))
            .route("/api/v1/timeline", get(query::timeline))
            .route("/api/v1/series", get(query::series))
            .route("/api/v1/labels", get(query::label_names))
            .route("/api/v1/label-values", get(query::label_values))
            .route("/api/v1/profile-types", get(query::profile_types))
            .route("/api/v1/pprof", get(query::pprof))
            .route("/api/v1/threads", get(query::threads))
            .route(cluster::HEAD_PATH, post(cluster::head))
            .route("/api/v1/admin/flush", post(admin_flush))
            .route("/", get(ui::index))
            .route("/ui/app.js", get(ui::app))
            .route("/ui/style.css", get(ui::style))
            .route("/metrics", get(metrics))
            .route("/ready", get(|| async { "ready\n" }))
            .layer(DefaultBodyLimit::max(limit));
        catch_panics(router, self.state.metrics.panics.clone()).with_state(self.state.clone())
    }
}

/// A handler that panics answers `500 {"error": ...}` and is counted in
/// `kiln_server_panics_total`, instead of the client's connection being
/// reset; the server goes on serving.
fn catch_panics<S: Clone + Send + Sync + 'static>(router: Router<S>, panics: Counter) -> Router<S> {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        move |err: Box<dyn std::any::Any + Send + 'static>| {
            panics.inc();
            let what = err
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| err.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            tracing::error!(target: "kiln_server", "a request handler panicked: {what}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error (the server logged it): {what}"),
            )
            .into_response()
        },
    ))
}

/// A refusal or failure, as JSON `{"error": ...}` with its status.
#[derive(Debug)]
struct ApiError(StatusCode, String, Option<std::time::Duration>);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(status, msg.into(), None)
    }

    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg.into())
    }

    fn too_large(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg.into())
    }
}

impl From<kiln_store::Error> for ApiError {
    fn from(e: kiln_store::Error) -> ApiError {
        match e {
            kiln_store::Error::Query { .. } => ApiError::bad(e.to_string()),
            kiln_store::Error::TooLarge { .. } => ApiError::too_large(e.to_string()),
            kiln_store::Error::Profile(p) => ApiError::bad(p.to_string()),
            kiln_store::Error::Unavailable { retry_after, .. } => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                Some(retry_after),
            ),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response();
        if let Some(after) = self.2 {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// `t` as a tenant name: 1 to 150 characters of `A-Z a-z 0-9 _ - .`.
fn valid_tenant(t: &str) -> Result<(), ApiError> {
    if t.is_empty()
        || t.len() > 150
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(ApiError::bad(
            "X-Scope-OrgID: 1 to 150 characters of A-Z a-z 0-9 _ - .",
        ));
    }
    Ok(())
}

/// Equal in time whatever the inputs share.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

/// The tenant of a request. Without tokens configured: `X-Scope-OrgID`,
/// else the anonymous tenant. With tokens: the token's tenant (401 without
/// a known token), and an `X-Scope-OrgID` naming another tenant is 403.
fn tenant(st: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let org = match headers.get("x-scope-orgid") {
        None => None,
        Some(v) => {
            let t = v
                .to_str()
                .map_err(|_| ApiError::bad("X-Scope-OrgID: not ASCII"))?
                .trim();
            valid_tenant(t)?;
            Some(t.to_string())
        }
    };
    if st.config.tokens.is_empty() {
        return Ok(org.unwrap_or_default());
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim();
    // Compare with every token, so the time says nothing of which matched.
    let mut found = None;
    for (token, tenant) in &st.config.tokens {
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            found = Some(tenant);
        }
    }
    let Some(tenant) = found else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer TOKEN)",
        ));
    };
    match org {
        Some(o) if o != *tenant => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("X-Scope-OrgID {o:?}: this token is not of that tenant"),
        )),
        _ => Ok(tenant.clone()),
    }
}

/// `POST /api/v1/admin/flush`: cut the head into blocks now (see
/// [`cluster::operator`] for who may).
async fn admin_flush(
    axum::extract::State(st): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    cluster::operator(&st, &headers)?;
    let ids = st.store.flush().await?;
    Ok(axum::Json(serde_json::json!({ "blocks": ids })).into_response())
}

/// `GET /metrics`: the server's figures, summed over every tenant; with
/// tenants configured, only for the operator (the cluster token), as the
/// admin endpoints.
async fn metrics(
    axum::extract::State(st): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Err(e) = cluster::operator(&st, &headers) {
        return e.into_response();
    }
    let s = st.store.stats();
    st.metrics.head_series.set(s.series as i64);
    st.metrics.head_samples.set(s.samples as i64);
    let m = &st.metrics;
    for (g, v) in [
        (&m.head_rows, s.head_rows),
        (&m.head_bytes, s.head_bytes),
        (&m.blocks, s.blocks),
        (&m.block_bytes, s.block_bytes),
        (&m.wal_bytes, s.wal_bytes),
        (&m.flushes, s.flushes),
        (&m.flush_errors, s.flush_errors),
        (&m.pending_bytes, s.pending_bytes),
        (&m.refused, s.refused),
        (&m.compactions, s.compactions),
        (&m.hours_summed, s.hours_summed),
        (&m.expired_blocks, s.expired),
    ] {
        g.set(v as i64);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &st.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("index out of bounds")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_is_counted() {
        let panics = Counter::default();
        let router: Router = catch_panics(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "ok" })),
            panics.clone(),
        );
        let ask = |path: &'static str| {
            router.clone().oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
        };
        let r = ask("/boom").await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("index out of bounds"),
            "{v}"
        );
        assert_eq!(panics.get(), 1);
        // The server goes on serving.
        assert_eq!(ask("/fine").await.unwrap().status(), StatusCode::OK);
        assert_eq!(panics.get(), 1);
    }
}

/// Hooks for fuzzing and for replaying what fuzzing found; not part of the
/// API.
#[doc(hidden)]
pub mod testing {
    use axum::body::Body;
    use axum::http::{Method, Request};

    /// Every route, with its method: what [`request_from_bytes`] picks from.
    pub const ROUTES: &[(&str, &str)] = &[
        ("POST", kiln_profile::push::PUSH_PATH),
        ("POST", "/ingest"),
        ("GET", "/pyroscope/render"),
        ("GET", "/pyroscope/render-diff"),
        ("GET", "/pyroscope/label-values"),
        ("GET", "/pyroscope/label-names"),
        ("GET", "/api/v1/top"),
        ("GET", "/api/v1/flamegraph"),
        ("GET", "/api/v1/diff"),
        ("GET", "/api/v1/timeline"),
        ("GET", "/api/v1/series"),
        ("GET", "/api/v1/labels"),
        ("GET", "/api/v1/label-values"),
        ("GET", "/api/v1/profile-types"),
        ("GET", "/api/v1/pprof"),
        ("GET", "/api/v1/threads"),
        ("POST", crate::cluster::HEAD_PATH),
        ("POST", "/api/v1/admin/flush"),
        ("GET", "/metrics"),
        ("GET", "/ready"),
    ];

    const CONTENT_TYPES: &[&str] = &[
        "",
        "application/octet-stream",
        "application/proto",
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=kiln",
    ];

    /// A request made of arbitrary bytes: byte 0 picks the route, byte 1
    /// the content type and whether the body claims gzip, then the query
    /// string up to the first newline, then the body.
    pub fn request_from_bytes(data: &[u8]) -> Request<Body> {
        let route = ROUTES[data.first().map_or(0, |b| *b as usize) % ROUTES.len()];
        let flags = data.get(1).copied().unwrap_or(0);
        let rest = data.get(2..).unwrap_or_default();
        let (query, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        // Bytes a URI cannot carry are percent-encoded, as a client would.
        let query: String = query
            .iter()
            .map(|&b| match b {
                b'!'..=b'~' if b != b'#' && b != b'%' => (b as char).to_string(),
                b'%' if flags & 0x80 != 0 => "%".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let uri = if query.is_empty() {
            route.1.to_string()
        } else {
            format!("{}?{query}", route.1)
        };
        let mut b = Request::builder()
            .method(if route.0 == "POST" {
                Method::POST
            } else {
                Method::GET
            })
            .uri(uri);
        let ct = CONTENT_TYPES[(flags & 0x0f) as usize % CONTENT_TYPES.len()];
        if !ct.is_empty() {
            b = b.header("content-type", ct);
        }
        if flags & 0x10 != 0 {
            b = b.header("content-encoding", "gzip");
        }
        b.body(Body::from(body.to_vec()))
            .unwrap_or_else(|_| Request::new(Body::empty()))
    }
}
