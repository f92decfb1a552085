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
//! let app = kiln_server::App::open(config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4040").await?;
//! axum::serve(listener, app.router()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod flamebearer;
mod ingest;
mod query;
pub mod time;

use std::path::PathBuf;
use std::sync::Arc;

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
}

impl Config {
    /// The defaults, storing under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            limits: Limits::default(),
            tokens: Vec::new(),
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
    /// [tenants.team-a]
    /// tokens = ["a-secret"]
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
            tokens: Vec<String>,
        }
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
        for (tenant, t) in f.tenants {
            valid_tenant(&tenant)
                .map_err(|e| Error::Config(format!("tenants.{tenant}: {}", e.1)))?;
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

impl App {
    /// Opens the store under `config.data_dir` (replaying its log).
    pub fn open(config: Config) -> Result<App, Error> {
        let store = kiln_store::Store::open(&config.data_dir)?;
        Ok(App {
            state: AppState(Arc::new(Inner {
                config,
                store,
                metrics: Metrics::new(),
            })),
        })
    }

    /// Every route.
    pub fn router(&self) -> Router {
        let limit = self.state.config.limits.max_body;
        Router::new()
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
            .route("/metrics", get(metrics))
            .route("/ready", get(|| async { "ready\n" }))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self.state.clone())
    }
}

/// A refusal or failure, as JSON `{"error": ...}` with its status.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    fn too_large(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::PAYLOAD_TOO_LARGE, msg.into())
    }
}

impl From<kiln_store::Error> for ApiError {
    fn from(e: kiln_store::Error) -> ApiError {
        match e {
            kiln_store::Error::Query { .. } => ApiError::bad(e.to_string()),
            kiln_store::Error::TooLarge { .. } => ApiError::too_large(e.to_string()),
            kiln_store::Error::Profile(p) => ApiError::bad(p.to_string()),
            e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
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
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer TOKEN)".into(),
        ));
    };
    match org {
        Some(o) if o != *tenant => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("X-Scope-OrgID {o:?}: this token is not of that tenant"),
        )),
        _ => Ok(tenant.clone()),
    }
}

async fn metrics(axum::extract::State(st): axum::extract::State<AppState>) -> Response {
    let s = st.store.stats();
    st.metrics.head_series.set(s.series as i64);
    st.metrics.head_samples.set(s.samples as i64);
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
