//! `GET /api/v1/tasks`: every task of the selection, merged over its
//! instances and windows from the agents' `tasks` profiles
//! ([`kiln_profile::tasks`]): count and rate, latency percentiles from
//! the merged histogram (exact merge, 1% relative), CPU, I/O per kind,
//! other waiting, stuck count and top sites. With `task=NAME&step=S`, also
//! that task's latency over time, one point per step.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_profile::tasks::{PROFILE, TaskRow, read_tasks};
use kiln_store::{Detail, selector};
use serde_json::{Value, json};

use crate::query::cpu;
use crate::{ApiError, AppState, tenant};

/// Sites listed per task, most frequent first.
pub const TOP_SITES: usize = 10;
/// Points of a task's latency over time at most.
pub const MAX_POINTS: i64 = 120;

/// The selection's tasks over `[from, until)`, merged.
pub(crate) async fn rows(
    st: &AppState,
    tenant: &str,
    q: &selector::Query,
    from: i64,
    until: i64,
) -> Result<Vec<TaskRow>, ApiError> {
    let Some(p) = crate::cluster::select(st, tenant, q, from, until, Detail::Stacks).await? else {
        return Ok(Vec::new());
    };
    cpu(move || Ok(read_tasks(&p))).await
}

/// A row as the API answers it; `range_ms` for the rate.
pub fn row_json(r: &TaskRow, range_ms: i64) -> Value {
    let mut sites: Vec<(&String, &u64)> = r.sites.iter().collect();
    sites.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let sites: Vec<Value> = sites
        .into_iter()
        .take(TOP_SITES)
        .map(|(s, c)| json!({"site": s, "count": c}))
        .collect();
    json!({
        "task": r.task,
        "count": r.count,
        "rate_per_s": r.count as f64 * 1000.0 / range_ms.max(1) as f64,
        "mean_ns": r.latency_sum_ns.checked_div(r.count).unwrap_or(0),
        "p50_ns": r.latency.quantile(0.5),
        "p90_ns": r.latency.quantile(0.9),
        "p99_ns": r.latency.quantile(0.99),
        "p999_ns": r.latency.quantile(0.999),
        "max_ns": r.latency.max(),
        "latency_sum_ns": r.latency_sum_ns,
        "cpu_ns": r.cpu_ns,
        "io_ns": r.io_ns,
        "other_ns": r.other_ns,
        "stuck": r.stuck,
        "sites": sites,
    })
}

/// `GET /api/v1/tasks?query={selector}&from=&until=[&task=&step=]` →
/// `{"tasks":[…]}` sorted by time spent (count × mean latency), and with
/// `task`, `"timeline"`: `[{"time_ms", "count", "p50_ns", "p99_ns"}]`.
pub async fn tasks(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(mut p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    // The selector alone names no type: tasks are their own profile.
    let inner = crate::query::retype(&mut p, PROFILE);
    let s = crate::query::selection(&p, "")?;
    let mut all = rows(&st, &tenant, &s.q, s.from, s.until).await?;
    all.sort_by(|a, b| {
        b.latency_sum_ns
            .cmp(&a.latency_sum_ns)
            .then(a.task.cmp(&b.task))
    });
    let range_ms = s.until - s.from;
    let mut body = json!({
        "from": s.from,
        "until": s.until,
        "tasks": all.iter().map(|r| row_json(r, range_ms)).collect::<Vec<_>>(),
    });
    if let Some(task) = p.get("task") {
        let step_ms = match p.get("step") {
            Some(v) => {
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| ApiError::bad(format!("step={v:?}: expected seconds > 0")))?;
                (secs * 1000.0) as i64
            }
            None => (range_ms / 60).max(10_000),
        }
        .max(range_ms / MAX_POINTS)
        .max(1000);
        let value = task.replace('\\', "\\\\").replace('"', "\\\"");
        let sep = if inner.is_empty() { "" } else { "," };
        let label = kiln_profile::tasks::TASK_LABEL;
        let q = selector::parse(&format!("{PROFILE}{{{inner}{sep}{label}=\"{value}\"}}"))
            .map_err(|e| ApiError::bad(format!("task: {e}")))?;
        let mut points = Vec::new();
        let mut t = s.from;
        while t < s.until {
            let end = (t + step_ms).min(s.until);
            let r = rows(&st, &tenant, &q, t, end).await?;
            let r = r.into_iter().find(|r| &r.task == task).unwrap_or_default();
            points.push(json!({
                "time_ms": t,
                "count": r.count,
                "p50_ns": r.latency.quantile(0.5),
                "p99_ns": r.latency.quantile(0.99),
            }));
            t = end;
        }
        body["timeline"] = json!(points);
        body["step_ms"] = json!(step_ms);
    }
    Ok(axum::Json(body).into_response())
}
