//! The HTTP control endpoints: start and stop on-demand sessions, Go's
//! `/debug/pprof/profile`, status, a thread dump and Prometheus metrics.
//! Served by the agent on `control(addr)`, or mounted by the host into its
//! own server through [`crate::Agent::router`]. Every answer to bad input
//! is a 4xx whose message names the parameter and says why. Rooms:
//! `pprof` (Go's endpoints), `threads` (the thread dump), `metrics`.

pub(crate) mod metrics;
mod pprof;
mod threads;

pub use pprof::{DEFAULT_PROFILE_SECONDS, MAX_PROFILE_SECONDS};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::oneshot;

use crate::flush::SESSION_SHIP_WAIT;
use crate::fold::Event;
use crate::sampler::Cmd;
use crate::session::{MAX_SESSION, MAX_SESSIONS, SessionOutcome, SessionReport};
use crate::{Engine, Inner, config};

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
        .route("/debug/kiln/threads", get(threads::threads))
        .route("/debug/kiln/stuck", get(stuck))
        .route("/debug/pprof/profile", get(pprof::profile))
        .route(
            "/debug/pprof/symbol",
            get(pprof::symbol_count).post(pprof::symbolize),
        )
        .route("/debug/pprof/heap", get(pprof::heap))
        .route("/debug/pprof/allocs", get(pprof::heap))
        .route("/debug/pprof/mutex", get(pprof::mutex))
        .route("/metrics", get(metrics::metrics))
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
    event: Event,
    hz: u32,
    duration: Duration,
    ship: bool,
) -> Result<String, Fail> {
    match event {
        Event::Alloc => {
            let st = inner.alloc_status(true);
            if !st.on {
                return Err(Fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("allocations are not sampled: {}", st.reason),
                ));
            }
        }
        Event::Lock => {
            let st = inner.lock_status(true);
            if !st.on {
                return Err(Fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("lock waits are not sampled: {}", st.reason),
                ));
            }
        }
        Event::Wall => {}
        Event::Cpu => {
            if inner.engine.is_none() {
                return Err(Fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no CPU sampling engine: {}", inner.engine_reason),
                ));
            }
        }
    }
    let id = inner
        .sessions
        .begin(event.name(), hz, duration, ship)
        .ok_or_else(|| {
            Fail(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{MAX_SESSIONS} sessions are running already; stop one first"),
            )
        })?;
    let sent = inner.send(Cmd::StartSession {
        id: id.clone(),
        event,
        period_ns: 1_000_000_000 / u64::from(hz.max(1)),
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
    let event = match q.get("event").map_or("cpu", String::as_str) {
        "cpu" => Event::Cpu,
        "alloc" => Event::Alloc,
        "lock" => Event::Lock,
        "wall" => Event::Wall,
        other => {
            return Err(bad(format!(
                "event={other:?}: expected cpu, wall, alloc or lock"
            )));
        }
    };
    let hz = if event == Event::Wall {
        let default = if inner.wall_hz > 0 { inner.wall_hz } else { 20 };
        let hz = parse_hz(&q, default)?;
        if hz > 1000 {
            return Err(bad(format!(
                "hz={hz}: a wall session samples at most 1000 times a second"
            )));
        }
        hz
    } else {
        session_hz(&inner, &q)?
    };
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
        "event": event.name(),
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

/// `GET /debug/kiln/stuck`: the watchdog's recent events in this process,
/// oldest first (`{"events": [...]}`, the server's `/api/v1/events` shape).
async fn stuck() -> Response {
    axum::Json(serde_json::json!({ "events": crate::task::watchdog::recent() })).into_response()
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
