//! `GET /api/v1/events`: what the agents' watchdogs caught — stuck tasks
//! with the stack of the thread that ran them — from the `events` profile
//! each window ships (one sample per event, its stack the captured frames,
//! its labels the event's fields; docs/api.md), per instance, newest
//! first.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_store::{Detail, selector};
use serde_json::{Value, json};

use crate::query::cpu;
use crate::{ApiError, AppState, tenant};

/// Events answered at most, newest first.
pub const MAX_EVENTS: usize = 1000;

fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The events of one merged `events` profile of one instance.
fn read(p: &kiln_profile::Profile, service: &str, instance: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, s) in p.samples.iter().enumerate() {
        if p.sample_values(i).first().copied().unwrap_or(0) <= 0 {
            continue;
        }
        let mut e = json!({"service_name": service, "instance": instance});
        for l in p.labels(s.labels) {
            let k = p.str(l.key);
            e[k] = if l.str.0 != 0 {
                json!(p.str(l.str))
            } else {
                json!(l.num)
            };
        }
        let mut stack = Vec::new();
        for &loc in p.stack(s.stack) {
            p.frame_names(loc, |f| stack.push(f.to_string()));
        }
        e["stack"] = json!(stack);
        out.push(e);
    }
    out
}

/// `GET /api/v1/events?query={selector}&from=&until=[&kind=stuck]` →
/// `{"events": [{"kind", "time_ms", "service_name", "instance", "task",
/// "thread_name", "elapsed_ns", "deadline_ns", "capture", "site",
/// "stack": [...]}]}`, newest first.
pub async fn events(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(mut p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let inner = crate::query::retype(&mut p, "events");
    let s = crate::query::selection(&p, "")?;
    st.store.wait_loaded().await?;
    let mut all = Vec::new();
    for set in st.store.series(&tenant, &s.q) {
        let get = |k: &str| {
            set.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (service, instance) = (get("service_name"), get("instance"));
        let sep = if inner.is_empty() { "" } else { ", " };
        let q = selector::parse(&format!(
            "events{{{inner}{sep}service_name={}, instance={}}}",
            quoted(&service),
            quoted(&instance)
        ))
        .map_err(|e| ApiError::bad(format!("query: {e}")))?;
        let Some(prof) =
            crate::cluster::select(&st, &tenant, &q, s.from, s.until, Detail::Labels).await?
        else {
            continue;
        };
        let (svc, inst) = (service.clone(), instance.clone());
        all.extend(cpu(move || Ok(read(&prof, &svc, &inst))).await?);
    }
    if let Some(kind) = p.get("kind") {
        all.retain(|e| e["kind"] == kind.as_str());
    }
    all.sort_by_key(|e| std::cmp::Reverse(e["time_ms"].as_i64().unwrap_or(0)));
    all.dedup();
    all.truncate(MAX_EVENTS);
    Ok(axum::Json(json!({"from": s.from, "until": s.until, "events": all})).into_response())
}
