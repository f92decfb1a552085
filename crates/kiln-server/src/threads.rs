//! `GET /api/v1/threads`: the selection by `thread_pool` and by
//! `thread_name`, with each one's share and, for time units, the cores it
//! used while it ran. A thread's CPU time is divided by the time it was
//! seen — the spans of the minutes of its own instance that hold it
//! ([`kiln_store::Store::observed`]) — not by the range asked for: a
//! thread that has hogged a core for the 40 s it has existed shows 1.0 in
//! a 15-minute view, not 0.04.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_store::{Detail, Observed};
use serde_json::{Value, json};

use crate::query::{cpu, load, selection};
use crate::{ApiError, AppState, tenant};

/// `GET /api/v1/threads?query=&from=&until=` → `{"type", "unit", "total",
/// "pools", "threads"}`, rows `{"name", "value", "share"}` and, for time
/// units, `"cores"` and `"seen_ns"` (docs/api.md).
pub async fn threads(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let s = selection(&p, "")?;
    let Some((prof, ty)) = load(&st, &tenant, &s, Detail::Labels).await? else {
        return Ok(axum::Json(json!({"total": 0, "pools": [], "threads": []})).into_response());
    };
    let time = prof.sample_type_names(ty).1 == "nanoseconds";
    let (pools_seen, threads_seen) = if time {
        let by = |label: &'static str| {
            crate::cluster::observed(&st, &tenant, &s.q, s.from, s.until, label)
        };
        futures_util::future::try_join(by("thread_pool"), by("thread_name")).await?
    } else {
        Default::default()
    };
    let range_ns = (s.until - s.from).saturating_mul(1_000_000);
    let body = cpu(move || {
        let total = prof.total(ty);
        let (name, unit) = prof.sample_type_names(ty);
        let rows = |key: &str, seen: &Observed| -> Result<Vec<Value>, ApiError> {
            let g = kiln_profile::group_by_label(&prof, ty, key)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Ok(g.into_iter()
                .map(|(name, v)| {
                    let share = if total > 0 {
                        v as f64 / total as f64
                    } else {
                        0.0
                    };
                    let mut r = json!({"name": name, "value": v, "share": share});
                    if time {
                        let seen_ns = seen_or_range(seen.covered_ns(&name), range_ns);
                        r["cores"] = json!(v as f64 / seen_ns as f64);
                        r["seen_ns"] = json!(seen_ns);
                    }
                    r
                })
                .collect())
        };
        Ok(json!({
            "type": name,
            "unit": unit,
            "total": total,
            "pools": rows("thread_pool", &pools_seen)?,
            "threads": rows("thread_name", &threads_seen)?,
        }))
    })
    .await?;
    Ok(axum::Json(body).into_response())
}

/// The time a group was seen, or the range's length when nothing says
/// (a peer that did not answer held all of its rows).
fn seen_or_range(seen_ns: i64, range_ns: i64) -> i64 {
    if seen_ns > 0 {
        seen_ns
    } else {
        range_ns.max(1)
    }
}
