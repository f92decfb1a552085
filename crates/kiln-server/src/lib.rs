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

mod alerts;
mod auth;
pub mod cluster;
mod config;
mod error;
mod events;
mod flamebearer;
mod group;
mod ingest;
mod lanes;
mod metrics;
mod otlp;
mod query;
mod storage;
mod tasks;
mod threads;
pub mod time;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::counter::Counter;

use auth::{constant_time_eq, tenant, valid_tenant};
pub use config::{Config, Limits};
use error::ApiError;
pub use error::Error;
use metrics::Metrics;

struct Inner {
    config: Config,
    store: Arc<kiln_store::Store>,
    metrics: Metrics,
    /// For asking peers.
    http: reqwest::Client,
    /// Recent merged answers.
    answers: cluster::Answers,
    /// Each alert rule's state.
    alerts: alerts::States,
}

impl Inner {
    /// `[alerting]` and the `[[alerts]]` rules.
    fn alerting(&self) -> &alerts::rules::Alerting {
        &self.config.alerting
    }
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
                Some(url) => Some(storage::cached(
                    storage::storage(url)?,
                    config.cache_dir.as_deref(),
                    config.cache_dir_bytes,
                )?),
                None => None,
            },
            server_id: config.server_id.clone(),
            flush_every: config.flush_every,
            head_max_bytes: config.head_max_bytes,
            pending_max_bytes: config.pending_max_bytes,
            retention: config.retention.clone(),
            refresh_every: config.refresh_every,
            cache_bytes: config.cache_bytes,
            ..kiln_store::Options::default()
        };
        // The log is replayed before the server listens (it is bounded by
        // the head); the blocks in storage are listed in the background,
        // pushes being taken meanwhile and queries waiting for the list.
        let dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || kiln_store::Store::open_lazy(&dir, opts))
            .await
            .map_err(|e| Error::Config(format!("opening the store: {e}")))??;
        {
            let store = store.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_secs(1);
                while let Err(e) = store.load_blocks().await {
                    tracing::error!(
                        target: "kiln_server",
                        "listing the blocks in storage: {e} (again in {}s)",
                        delay.as_secs()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            });
        }
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
            alerts: alerts::States::default(),
        }));
        // Alert rules, every `[alerting] every`.
        if !state.alerting().rules.is_empty() {
            let weak = Arc::downgrade(&state.0);
            let every = state.alerting().every;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { break };
                    alerts::evaluate(&AppState(inner)).await;
                }
            });
        }
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
            .route(otlp::OTLP_PATH, post(otlp::export))
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
            .route("/api/v1/threads", get(threads::threads))
            .route("/api/v1/tasks", get(tasks::tasks))
            .route("/api/v1/events", get(events::events))
            .route("/api/v1/alerts", get(alerts::alerts))
            .route("/api/v1/group", get(group::group))
            .route("/api/v1/lanes", get(lanes::lanes))
            .route(cluster::HEAD_PATH, post(cluster::head))
            .route("/api/v1/admin/flush", post(admin_flush))
            .route("/", get(ui::index))
            .route("/ui/{file}", get(ui::file))
            .route("/metrics", get(metrics::metrics))
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
        ("POST", crate::otlp::OTLP_PATH),
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
        ("GET", "/api/v1/group"),
        ("GET", "/api/v1/lanes"),
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
