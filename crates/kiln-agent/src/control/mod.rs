//! The HTTP control endpoints: start and stop on-demand sessions, Go's
//! `/debug/pprof/profile`, status, a thread dump and Prometheus metrics.
//! Served by the agent on `control(addr)`, or mounted by the host into its
//! own server through [`crate::Agent::router`]. Every answer to bad input
//! is a 4xx whose message names the parameter and says why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::flush::{Job, SESSION_SHIP_WAIT};
use crate::sampler::Cmd;
use crate::session::{MAX_SESSION, MAX_SESSIONS, SessionOutcome, SessionReport};
use crate::ship::SinkStatus;
use crate::{Engine, Inner, config};

/// Longest `/debug/pprof/profile?seconds=`.
pub const MAX_PROFILE_SECONDS: u64 = 3600;
/// `/debug/pprof/profile` without `seconds`, as Go's handler.
pub const DEFAULT_PROFILE_SECONDS: u64 = 30;
/// How long a thread dump waits for one thread's handler.
const DUMP_TIMEOUT: Duration = Duration::from_millis(500);

/// An answer that is not a success: status and a message for a person.
struct Fail(StatusCode, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Fail {
    Fail(StatusCode::BAD_REQUEST, msg.into())
}

type Params = Query<HashMap<String, String>>;

/// The control routes over `inner`, with the token check when a token is
/// configured.
pub fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/debug/kiln/start", post(start))
        .route("/debug/kiln/stop", post(stop))
        .route("/debug/kiln/status", get(status))
        .route("/debug/kiln/threads", get(threads))
        .route("/debug/pprof/profile", get(profile))
        .route("/debug/pprof/symbol", get(symbol_count).post(symbolize))
        .route("/debug/pprof/heap", get(heap))
        .route("/debug/pprof/allocs", get(heap))
        .route("/debug/pprof/mutex", get(not_yet))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(inner.clone(), auth))
        .with_state(inner)
}

/// Equal in time whatever the inputs' common prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

async fn auth(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    if let Some(token) = &inner.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            let mut r = Fail(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer $KILN_CONTROL_TOKEN)".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

fn parse_hz(q: &HashMap<String, String>, default: u32) -> Result<u32, Fail> {
    match q.get("hz") {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(hz) if (1..=10_000).contains(&hz) => Ok(hz),
            _ => Err(bad(format!(
                "hz={v:?}: expected a whole number from 1 to 10000"
            ))),
        },
    }
}

fn session_hz(inner: &Inner, q: &HashMap<String, String>) -> Result<u32, Fail> {
    let default = if inner.cpu_hz > 0 {
        inner.cpu_hz
    } else {
        config::DEFAULT_CPU_HZ
    };
    parse_hz(q, default)
}

/// Starts a session in the sampler; the id, or why not.
fn begin(
    inner: &Inner,
    event: &str,
    hz: u32,
    duration: Duration,
    ship: bool,
) -> Result<String, Fail> {
    if event == "alloc" {
        let st = inner.alloc_status(true);
        if !st.on {
            return Err(Fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("allocations are not sampled: {}", st.reason),
            ));
        }
    } else if inner.engine.is_none() {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no CPU sampling engine: {}", inner.engine_reason),
        ));
    }
    let id = inner
        .sessions
        .begin(event, hz, duration, ship)
        .ok_or_else(|| {
            Fail(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{MAX_SESSIONS} sessions are running already; stop one first"),
            )
        })?;
    let sent = inner.send(Cmd::StartSession {
        id: id.clone(),
        period_ns: if event == "alloc" {
            0
        } else {
            1_000_000_000 / u64::from(hz)
        },
        until: Some(std::time::Instant::now() + duration),
        ship,
    });
    if !sent {
        inner.sessions.forget(&id);
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
        ));
    }
    Ok(id)
}

async fn start(State(inner): State<Arc<Inner>>, Query(q): Params) -> Result<Response, Fail> {
    let event = q.get("event").map_or("cpu", String::as_str);
    match event {
        "cpu" | "alloc" => {}
        "wall" | "lock" => {
            return Err(Fail(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "event={event} is not sampled by this version of the agent; cpu and alloc are"
                ),
            ));
        }
        other => {
            return Err(bad(format!(
                "event={other:?}: expected cpu, wall, alloc or lock"
            )));
        }
    }
    let hz = session_hz(&inner, &q)?;
    let duration = match q.get("duration") {
        None => MAX_SESSION,
        Some(v) => {
            let d = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&s| s > 0)
                .map(Duration::from_secs)
                .or_else(|| config::parse_duration(v))
                .ok_or_else(|| {
                    bad(format!(
                        "duration={v:?}: expected seconds or a duration such as 30s, 500ms, 5m"
                    ))
                })?;
            if d > MAX_SESSION {
                return Err(bad(format!(
                    "duration={v:?}: longer than the {}s a session may last",
                    MAX_SESSION.as_secs()
                )));
            }
            d
        }
    };
    if let Some(v) = q.get("engine") {
        let wanted = config::parse_engine(v).ok_or_else(|| {
            bad(format!(
                "engine={v:?}: expected auto, perf, ctimer or itimer"
            ))
        })?;
        if wanted != Engine::Auto && Some(wanted) != inner.engine {
            return Err(Fail(
                StatusCode::CONFLICT,
                format!(
                    "engine={v}: this process samples with {} ({}); one engine serves the whole process, chosen at start (KILN_ENGINE)",
                    inner
                        .engine
                        .map_or("no engine".to_string(), |e| format!("{e:?}").to_lowercase()),
                    inner.engine_reason
                ),
            ));
        }
    }
    let id = begin(&inner, event, hz, duration, true)?;
    let info = inner.sessions.get(&id);
    Ok(axum::Json(json!({
        "id": id,
        "event": event,
        "hz": hz,
        "engine": inner.engine,
        "until_ms": info.map(|i| i.until_ms),
    }))
    .into_response())
}

/// Stops session `id` and waits for its report.
async fn finish(inner: &Inner, id: &str) -> Result<SessionReport, Fail> {
    let (tx, rx) = oneshot::channel();
    if !inner.send(Cmd::StopSession {
        id: id.to_string(),
        reply: Some(tx),
    }) {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
        ));
    }
    match rx.await {
        Ok(SessionOutcome::Done(r)) => Ok(*r),
        // It ended by itself meanwhile: its report lands in the registry.
        Ok(SessionOutcome::Unknown) | Err(_) => {
            let until = std::time::Instant::now() + SESSION_SHIP_WAIT + Duration::from_secs(2);
            while std::time::Instant::now() < until {
                if let Some(r) = inner.sessions.get(id).and_then(|s| s.report) {
                    return Ok(r);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(Fail(
                StatusCode::GATEWAY_TIMEOUT,
                format!("session {id} ended but its report did not arrive in time"),
            ))
        }
    }
}

async fn stop(State(inner): State<Arc<Inner>>, Query(q): Params) -> Result<Response, Fail> {
    let id = q
        .get("id")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad("id: missing; POST /debug/kiln/start answers one"))?;
    let Some(info) = inner.sessions.get(id) else {
        return Err(Fail(StatusCode::NOT_FOUND, format!("no session {id:?}")));
    };
    if let Some(report) = info.report {
        return Ok(axum::Json(report).into_response());
    }
    if !info.ship {
        return Err(Fail(
            StatusCode::CONFLICT,
            format!("session {id} belongs to a /debug/pprof/profile request"),
        ));
    }
    inner.sessions.stopping(id);
    let report = finish(&inner, id).await?;
    Ok(axum::Json(report).into_response())
}

async fn status(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(inner.status()).into_response()
}

/// Stops the session when the request is abandoned (client gone).
struct StopOnDrop {
    inner: Arc<Inner>,
    id: Option<String>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.inner.send(Cmd::StopSession { id, reply: None });
        }
    }
}

async fn profile(State(inner): State<Arc<Inner>>, Query(q): Params) -> Result<Response, Fail> {
    let seconds = match q.get("seconds") {
        None => DEFAULT_PROFILE_SECONDS,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(s) if (1..=MAX_PROFILE_SECONDS).contains(&s) => s,
            _ => {
                return Err(bad(format!(
                    "seconds={v:?}: expected a whole number from 1 to {MAX_PROFILE_SECONDS}"
                )));
            }
        },
    };
    let hz = session_hz(&inner, &q)?;
    let wait = Duration::from_secs(seconds);
    // The sampler ends it a little after we ask, should this task be slow.
    let id = begin(&inner, "cpu", hz, wait + Duration::from_secs(5), false)?;
    let mut guard = StopOnDrop {
        inner: inner.clone(),
        id: Some(id.clone()),
    };
    tokio::time::sleep(wait).await;
    guard.id = None;
    inner.sessions.stopping(&id);
    let report = finish(&inner, &id).await?;
    Ok(pprof_download(
        "attachment; filename=\"profile\"",
        report.pprof,
    ))
}

/// `GET /debug/pprof/symbol`: Go's symbolz handshake, saying symbols are
/// served.
async fn symbol_count() -> &'static str {
    "num_symbols: 1\n"
}

/// Addresses one `/debug/pprof/symbol` request may ask about.
const MAX_SYMBOL_ADDRS: usize = 100_000;

/// `POST /debug/pprof/symbol` with `0xADDR+0xADDR…`: one `0xADDR name`
/// line per address that resolves, as Go's handler answers, so `go tool
/// pprof` can name frames a profile left unsymbolized.
async fn symbolize(State(inner): State<Arc<Inner>>, body: String) -> Result<Response, Fail> {
    let mut addrs = Vec::new();
    for word in body.split(['+', ' ', '\n', '\r']).filter(|w| !w.is_empty()) {
        let hex = word.strip_prefix("0x").unwrap_or(word);
        let a = u64::from_str_radix(hex, 16).map_err(|_| {
            bad(format!(
                "address {word:?}: expected hexadecimal such as 0x4a3b2c"
            ))
        })?;
        addrs.push(a);
        if addrs.len() > MAX_SYMBOL_ADDRS {
            return Err(bad(format!("more than {MAX_SYMBOL_ADDRS} addresses")));
        }
    }
    let (tx, rx) = oneshot::channel();
    if !inner.jobs(Job::Resolve {
        addrs: addrs.clone(),
        reply: tx,
    }) {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
        ));
    }
    let frames = rx.await.unwrap_or_default();
    let mut out = String::new();
    for (a, f) in addrs.iter().zip(frames.iter()) {
        // The physical function: the outermost of an address's frames.
        if let Some(fr) = f.last() {
            out.push_str(&format!("{a:#x} {}\n", fr.name));
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
}

/// `GET /debug/pprof/heap` and `/debug/pprof/allocs`, as Go serves them:
/// gzipped pprof with `alloc_objects`, `alloc_space` (every sampled
/// allocation since the agent started), `inuse_objects`, `inuse_space`
/// (the sampled blocks live now), each sample weighted to estimate the
/// whole.
async fn heap(State(inner): State<Arc<Inner>>) -> Result<Response, Fail> {
    let st = inner.alloc_status(true);
    if !st.on {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("allocations are not sampled: {}", st.reason),
        ));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !inner.send(Cmd::Heap { reply: tx }) {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
        ));
    }
    let bytes = match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(b)) => b,
        _ => {
            return Err(Fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent did not answer (stopping, or its writer is behind)".into(),
            ));
        }
    };
    Ok(pprof_download("attachment; filename=\"heap\"", bytes))
}

/// A gzipped pprof answered as Go's handlers answer it: a download.
fn pprof_download(disposition: &'static str, body: impl IntoResponse) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(disposition),
    );
    (headers, body).into_response()
}

async fn not_yet() -> Fail {
    Fail(
        StatusCode::NOT_IMPLEMENTED,
        "this profile is not collected by this version of the agent; /debug/pprof/profile (CPU) and /debug/pprof/heap are"
            .into(),
    )
}

/// One thread of a dump.
#[derive(Serialize)]
struct DumpThread {
    tid: u32,
    name: String,
    /// `R` running, `S` sleeping, `D` in uninterruptible I/O, …
    state: String,
    frames: Vec<DumpFrame>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct DumpFrame {
    address: String,
    function: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    file: String,
    #[serde(skip_serializing_if = "is_zero")]
    line: u32,
    /// Inlined into the frame that follows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inlined: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn thread_state(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.get(s.rfind(')')? + 2..)?;
            after.split(' ').next().map(str::to_string)
        })
        .unwrap_or_default()
}

/// One thread as the dump found it: id, name, state, and its raw stack
/// (leaf first, cut or not) or why there is none.
type RawThread = (u32, String, String, Result<(Vec<u64>, bool), String>);

/// Every thread's stack, taken now by signalling each thread.
fn take_dump() -> Vec<RawThread> {
    let Ok(shared) = crate::sys::shared() else {
        return Vec::new();
    };
    crate::sys::refresh_tables(shared);
    let mut tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids.into_iter()
        .filter_map(|tid| {
            let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .ok()?
                .trim_end()
                .to_string();
            let state = thread_state(tid);
            let stack = match crate::sys::thread_stack(shared, tid, DUMP_TIMEOUT) {
                Ok(s) => Ok(s),
                Err(crate::sys::DumpError::Exited) => return None,
                Err(crate::sys::DumpError::NoAnswer) => Err(format!(
                    "no answer within {DUMP_TIMEOUT:?} (the thread blocks SIGPROF or is stopped)"
                )),
                Err(crate::sys::DumpError::Signal(e)) => Err(e),
            };
            Some((tid, name, state, stack))
        })
        .collect()
}

async fn threads(State(inner): State<Arc<Inner>>, Query(q): Params) -> Result<Response, Fail> {
    let json_out = match q.get("format").map(String::as_str) {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => return Err(bad(format!("format={other:?}: expected text or json"))),
    };
    let dump = tokio::task::spawn_blocking(take_dump)
        .await
        .map_err(|e| Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Leaves are exact; callers are return addresses, looked up one byte
    // earlier to land inside the call.
    let mut addrs = Vec::new();
    for (_, _, _, s) in &dump {
        if let Ok((ips, _)) = s {
            addrs.extend(
                ips.iter()
                    .enumerate()
                    .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) }),
            );
        }
    }
    let (tx, rx) = oneshot::channel();
    let frames = if inner.jobs(Job::Resolve {
        addrs: addrs.clone(),
        reply: tx,
    }) {
        rx.await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut k = 0;
    let mut out = Vec::with_capacity(dump.len());
    for (tid, name, state, s) in dump {
        let mut t = DumpThread {
            tid,
            name,
            state,
            frames: Vec::new(),
            truncated: false,
            error: None,
        };
        match s {
            Ok((ips, truncated)) => {
                t.truncated = truncated;
                for &ip in &ips {
                    let resolved = frames.get(k).filter(|f| !f.is_empty());
                    k += 1;
                    match resolved {
                        Some(fs) => {
                            for (j, f) in fs.iter().enumerate() {
                                t.frames.push(DumpFrame {
                                    address: format!("{ip:#x}"),
                                    function: f.name.to_string(),
                                    file: f.file.to_string(),
                                    line: f.line,
                                    inlined: j + 1 < fs.len(),
                                });
                            }
                        }
                        None => t.frames.push(DumpFrame {
                            address: format!("{ip:#x}"),
                            function: "[unknown]".into(),
                            file: String::new(),
                            line: 0,
                            inlined: false,
                        }),
                    }
                }
            }
            Err(e) => t.error = Some(e),
        }
        out.push(t);
    }
    if json_out {
        return Ok(axum::Json(json!({
            "pid": std::process::id(),
            "time_ms": crate::session::now_ms(),
            "threads": out,
        }))
        .into_response());
    }
    let mut text = format!(
        "Thread dump of process {} ({} threads)\n",
        std::process::id(),
        out.len()
    );
    for t in &out {
        text.push_str(&format!(
            "\n\"{}\" tid={} state={}\n",
            t.name, t.tid, t.state
        ));
        if let Some(e) = &t.error {
            text.push_str(&format!("    <{e}>\n"));
        }
        for f in &t.frames {
            let at = if f.file.is_empty() {
                String::new()
            } else if f.line > 0 {
                format!(" ({}:{})", f.file, f.line)
            } else {
                format!(" ({})", f.file)
            };
            let mark = if f.inlined { " [inlined]" } else { "" };
            text.push_str(&format!("    {} {}{at}{mark}\n", f.address, f.function));
        }
        if t.truncated {
            text.push_str("    … (truncated)\n");
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

fn escape(v: &str) -> String {
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
    out
}

async fn metrics(State(inner): State<Arc<Inner>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics_text(&inner),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret", b""));
        assert!(constant_time_eq(b"", b""));
    }
}
