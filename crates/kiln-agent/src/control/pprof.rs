//! Go's `net/http/pprof` endpoints: `/debug/pprof/profile` (a CPU
//! session of `seconds`), `/debug/pprof/symbol`, `/debug/pprof/heap` and
//! `/allocs`, `/debug/pprof/mutex`; each answers gzipped pprof as Go's
//! handlers do, so `go tool pprof URL` reads them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::{Fail, Params, StopOnDrop, bad, begin, finish, session_hz};
use crate::Inner;
use crate::flush::Job;
use crate::fold::Event;
use crate::sampler::Cmd;

/// Longest `/debug/pprof/profile?seconds=`.
pub const MAX_PROFILE_SECONDS: u64 = 3600;
/// `/debug/pprof/profile` without `seconds`, as Go's handler.
pub const DEFAULT_PROFILE_SECONDS: u64 = 30;

pub(super) async fn profile(
    State(inner): State<Arc<Inner>>,
    Query(q): Params,
) -> Result<Response, Fail> {
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
    let id = begin(&inner, Event::Cpu, hz, wait + Duration::from_secs(5), false)?;
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
pub(super) async fn symbol_count() -> &'static str {
    "num_symbols: 1\n"
}

/// Addresses one `/debug/pprof/symbol` request may ask about.
const MAX_SYMBOL_ADDRS: usize = 100_000;

/// `POST /debug/pprof/symbol` with `0xADDR+0xADDR…`: one `0xADDR name`
/// line per address that resolves, as Go's handler answers, so `go tool
/// pprof` can name frames a profile left unsymbolized.
pub(super) async fn symbolize(
    State(inner): State<Arc<Inner>>,
    body: String,
) -> Result<Response, Fail> {
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
pub(super) async fn heap(State(inner): State<Arc<Inner>>) -> Result<Response, Fail> {
    let st = inner.alloc_status(true);
    if !st.on {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("allocations are not sampled: {}", st.reason),
        ));
    }
    let bytes = total(&inner, Event::Alloc).await?;
    Ok(pprof_download("attachment; filename=\"heap\"", bytes))
}

/// `GET /debug/pprof/mutex`, as Go serves it: gzipped pprof with
/// `contentions` and `delay` (nanoseconds) of every sampled wait on a
/// [`crate::sync`] lock since the agent started, weighted to estimate
/// every wait, labelled `lock`.
pub(super) async fn mutex(State(inner): State<Arc<Inner>>) -> Result<Response, Fail> {
    let st = inner.lock_status(true);
    if !st.on {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("lock waits are not sampled: {}", st.reason),
        ));
    }
    let bytes = total(&inner, Event::Lock).await?;
    Ok(pprof_download("attachment; filename=\"mutex\"", bytes))
}

/// What `event` recorded since the agent started, as gzipped pprof.
async fn total(inner: &Inner, event: Event) -> Result<Vec<u8>, Fail> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if !inner.send(Cmd::Total { event, reply: tx }) {
        return Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is stopping".into(),
        ));
    }
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(b)) => Ok(b),
        _ => Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent did not answer (stopping, or its writer is behind)".into(),
        )),
    }
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
