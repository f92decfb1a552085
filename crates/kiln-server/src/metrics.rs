//! The server's figures for Prometheus: the registry, and `GET /metrics`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::{AppState, cluster};

pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) ingested_profiles: Counter,
    pub(crate) ingested_samples: Counter,
    pub(crate) ingest_errors: Counter,
    pub(crate) head_series: Gauge,
    pub(crate) head_samples: Gauge,
    pub(crate) head_rows: Gauge,
    pub(crate) head_bytes: Gauge,
    pub(crate) blocks: Gauge,
    pub(crate) block_bytes: Gauge,
    pub(crate) wal_bytes: Gauge,
    pub(crate) flushes: Gauge,
    pub(crate) flush_errors: Gauge,
    pub(crate) pending_bytes: Gauge,
    pub(crate) refused: Gauge,
    pub(crate) compactions: Gauge,
    pub(crate) expired_blocks: Gauge,
    pub(crate) hours_summed: Gauge,
    pub(crate) days_summed: Gauge,
    pub(crate) cache_bytes: Gauge,
    pub(crate) cache_hits: Gauge,
    pub(crate) cache_loads: Gauge,
    pub(crate) cache_drops: Gauge,
    pub(crate) blocks_listed: Gauge,
    pub(crate) peer_errors: Counter,
    pub(crate) panics: Counter,
    pub(crate) alerts_fired: Counter,
    pub(crate) alerts_resolved: Counter,
    pub(crate) alerts_send_errors: Counter,
    pub(crate) query_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
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
            days_summed: Gauge::default(),
            cache_bytes: Gauge::default(),
            cache_hits: Gauge::default(),
            cache_loads: Gauge::default(),
            cache_drops: Gauge::default(),
            blocks_listed: Gauge::default(),
            expired_blocks: Gauge::default(),
            peer_errors: Counter::default(),
            panics: Counter::default(),
            alerts_fired: Counter::default(),
            alerts_resolved: Counter::default(),
            alerts_send_errors: Counter::default(),
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
                "days_summed",
                "Day- and week-sum blocks written (each service's day, or week, in one sum)",
                &m.days_summed,
            ),
            (
                "expired_blocks",
                "Blocks deleted for retention",
                &m.expired_blocks,
            ),
            (
                "cache_bytes",
                "Bytes of block data in memory (at most [storage] cache between queries)",
                &m.cache_bytes,
            ),
            (
                "cache_hits",
                "Block reads answered from memory",
                &m.cache_hits,
            ),
            (
                "cache_loads",
                "Blocks loaded from object storage for a query",
                &m.cache_loads,
            ),
            (
                "cache_drops",
                "Blocks dropped from memory back to their index",
                &m.cache_drops,
            ),
            (
                "blocks_listed",
                "1 once the blocks in storage at the start are known (queries wait until then)",
                &m.blocks_listed,
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
            "alerts_fired",
            "Alert rules that started firing",
            m.alerts_fired.clone(),
        );
        registry.register(
            "alerts_resolved",
            "Firing alert rules that resolved",
            m.alerts_resolved.clone(),
        );
        registry.register(
            "alerts_send_errors",
            "Alert notices Alertmanager or the webhook refused or missed",
            m.alerts_send_errors.clone(),
        );
        registry.register(
            "query_seconds",
            "Time to answer a query",
            m.query_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// `GET /metrics`: the server's figures, summed over every tenant; with
/// tenants configured, only for the operator (the cluster token), as the
/// admin endpoints.
pub(crate) async fn metrics(
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
        (&m.days_summed, s.days_summed),
        (&m.expired_blocks, s.expired),
        (&m.cache_bytes, s.cache_bytes),
        (&m.cache_hits, s.cache_hits),
        (&m.cache_loads, s.cache_loads),
        (&m.cache_drops, s.cache_drops),
        (&m.blocks_listed, u64::from(s.loaded)),
    ] {
        g.set(v as i64);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &st.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    // The functions alert rules watch, as gauges, before the end marker.
    let gauges = crate::alerts::share_gauges(&st);
    if !gauges.is_empty() {
        let body = out.strip_suffix("# EOF\n").unwrap_or(&out).to_string();
        out = format!("{body}{gauges}# EOF\n");
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
