//! `GET /metrics`: the agent's counters, each sink's health and every
//! lock's waits, in Prometheus's text format.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::Inner;
use crate::ship::SinkStatus;
use crate::sys::contention::{WaitStats, wait_stats};

/// A Prometheus label value, escaped.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: name, type, help, and its value (or how to read it).
type Metric<V> = (&'static str, &'static str, &'static str, V);

/// Reads one sink's value of a metric.
type SinkValue = fn(&SinkStatus) -> u64;

/// Prometheus text exposition of the agent's counters.
pub fn metrics_text(inner: &Inner) -> String {
    let s = inner.status();
    let running = s.sessions.iter().filter(|x| x.state != "done").count() as u64;
    let process: [Metric<u64>; 7] = [
        (
            "kiln_agent_samples_total",
            "counter",
            "CPU samples taken.",
            s.samples,
        ),
        (
            "kiln_agent_samples_dropped_total",
            "counter",
            "CPU samples dropped because the sample buffer was full.",
            s.dropped,
        ),
        (
            "kiln_agent_threads",
            "gauge",
            "Threads being sampled.",
            s.threads,
        ),
        (
            "kiln_agent_windows_dropped_total",
            "counter",
            "Profile windows dropped because symbolization fell behind.",
            s.windows_dropped,
        ),
        (
            "kiln_agent_unknown_frames_total",
            "counter",
            "Addresses that could not be symbolized.",
            s.unknown_frames,
        ),
        (
            "kiln_agent_symbol_bytes",
            "gauge",
            "Bytes the symbolizer holds between windows.",
            s.symbol_bytes,
        ),
        (
            "kiln_agent_sessions_running",
            "gauge",
            "On-demand sessions running.",
            running,
        ),
    ];
    let per_sink: [Metric<SinkValue>; 5] = [
        (
            "kiln_agent_sink_sent_total",
            "counter",
            "Profiles delivered by each sink.",
            |k| k.sent,
        ),
        (
            "kiln_agent_sink_failed_total",
            "counter",
            "Profiles given up after every retry.",
            |k| k.failed,
        ),
        (
            "kiln_agent_sink_dropped_total",
            "counter",
            "Profiles dropped: queue full or agent stopped.",
            |k| k.dropped,
        ),
        (
            "kiln_agent_sink_errors_total",
            "counter",
            "Failed sends, retries included.",
            |k| k.errors,
        ),
        (
            "kiln_agent_sink_queued",
            "gauge",
            "Profiles waiting in each sink's queue.",
            |k| k.queued,
        ),
    ];
    let mut out = String::new();
    lock_waits(&mut out);
    for (name, kind, help, v) in process {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
    for (name, kind, help, f) in per_sink {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for k in &s.sinks {
            out.push_str(&format!(
                "{name}{{sink=\"{}\",target=\"{}\"}} {}\n",
                k.sink,
                escape(&k.target),
                f(k)
            ));
        }
    }
    crate::task::stats::metrics_text(&mut out);
    out
}

/// Every lock's waits since the agent started, as a summary per `lock`
/// (locks sharing a label are one; anonymous `lock_api` locks are
/// `lock="lock_api"`): p50 and p99, total seconds, count.
fn lock_waits(out: &mut String) {
    let mut by: std::collections::BTreeMap<String, WaitStats> = Default::default();
    for w in wait_stats() {
        let label = w.site.label().unwrap_or_else(|| "lock_api".into());
        match by.get_mut(&label) {
            Some(x) => x.merge(&w),
            None => {
                by.insert(label, w);
            }
        }
    }
    let name = "kiln_lock_wait_seconds";
    out.push_str(&format!(
        "# HELP {name} Time threads waited to take each kiln_agent::sync lock.\n# TYPE {name} summary\n"
    ));
    for (lock, w) in &by {
        let lock = escape(lock);
        for q in [0.5, 0.99] {
            out.push_str(&format!(
                "{name}{{lock=\"{lock}\",quantile=\"{q}\"}} {}\n",
                w.quantile(q) / 1e9
            ));
        }
        out.push_str(&format!(
            "{name}_sum{{lock=\"{lock}\"}} {}\n{name}_count{{lock=\"{lock}\"}} {}\n",
            w.sum_ns as f64 / 1e9,
            w.count
        ));
    }
}

pub(super) async fn metrics(State(inner): State<Arc<Inner>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics_text(&inner),
    )
        .into_response()
}
