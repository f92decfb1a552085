//! `GET /debug/kiln/threads`: a thread dump, every thread's stack now,
//! taken by signalling each thread and symbolized by the flush thread.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::{Fail, Params, bad};
use crate::Inner;
use crate::flush::Job;

/// How long a thread dump waits for one thread's handler.
const DUMP_TIMEOUT: Duration = Duration::from_millis(500);

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
                    "no answer within {DUMP_TIMEOUT:?} (the thread blocks SIGVTALRM or is stopped)"
                )),
                Err(crate::sys::DumpError::Signal(e)) => Err(e),
            };
            Some((tid, name, state, stack))
        })
        .collect()
}

pub(super) async fn threads(
    State(inner): State<Arc<Inner>>,
    Query(q): Params,
) -> Result<Response, Fail> {
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
