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
/// units, `"cores"` and `"seen_ns"`; where the agents send their
/// `threads` profile, `"counters"` (CPU, run delay, voluntary and
/// involuntary switches over the range) and `"switchy"`: more than one
/// switch per millisecond of CPU (docs/api.md).
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
    // Each thread's own counters (the agent's `threads` profile), beside
    // whatever type was asked for.
    let counters_q = kiln_store::selector::Query {
        profile_type: "threads".into(),
        matchers: s.q.matchers.clone(),
    };
    let counters =
        crate::cluster::select(&st, &tenant, &counters_q, s.from, s.until, Detail::Labels).await?;
    let body = cpu(move || {
        let per = |key: &str| -> HashMap<String, [i64; 4]> {
            let mut out: HashMap<String, [i64; 4]> = HashMap::new();
            let Some(c) = counters.as_ref() else {
                return out;
            };
            for (i, ty) in [
                "cpu",
                "run_delay",
                "voluntary_switches",
                "involuntary_switches",
            ]
            .iter()
            .enumerate()
            {
                let Some(t) = c.sample_type_index(ty) else {
                    continue;
                };
                for (name, v) in kiln_profile::group_by_label(c, t, key).unwrap_or_default() {
                    out.entry(name).or_default()[i] += v;
                }
            }
            out
        };
        let (pool_counts, thread_counts) = (per("thread_pool"), per("thread_name"));
        let total = prof.total(ty);
        let (name, unit) = prof.sample_type_names(ty);
        let rows = |key: &str,
                    seen: &Observed,
                    counts: &HashMap<String, [i64; 4]>|
         -> Result<Vec<Value>, ApiError> {
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
                    if let Some(&[cpu_ns, delay_ns, vol, invol]) = counts.get(&name) {
                        r["counters"] = json!({
                            "cpu_ns": cpu_ns,
                            "run_delay_ns": delay_ns,
                            "voluntary_switches": vol,
                            "involuntary_switches": invol,
                        });
                        // Switching far more than computing: more than one
                        // switch per millisecond on a CPU (the work
                        // handed to it is shorter than a switch is worth).
                        let switches = vol + invol;
                        r["switchy"] = json!(switches >= 100 && switches * 1_000_000 > cpu_ns);
                    }
                    r
                })
                .collect())
        };
        Ok(json!({
            "type": name,
            "unit": unit,
            "total": total,
            "pools": rows("thread_pool", &pools_seen, &pool_counts)?,
            "threads": rows("thread_name", &threads_seen, &thread_counts)?,
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
