//! `GET /api/v1/group`: a selection's total split by one label, biggest
//! first: `by=lock` on a `mutex:delay` query says which lock everyone
//! waits on, `by=thread_state` on a wall query what threads are doing,
//! `by=instance` which instance burns the most. Sample labels
//! (`thread_name`, `lock`, `task`, …) and series labels alike.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_store::Detail;
use serde_json::json;

use crate::query::{cpu, load, selection};
use crate::{ApiError, AppState, tenant};

/// Rows answered at most (the rest are summed into one `other` row).
const MAX_ROWS: usize = 500;

/// `GET /api/v1/group?query=TYPE{selector}&from=&until=&by=LABEL` →
/// `{"type", "unit", "total", "by", "rows": [{"name", "value", "share"}]}`;
/// a sample without the label is counted under `""`.
pub async fn group(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let by = p
        .get("by")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad("by: missing (a label name, e.g. by=lock)"))?;
    if by.len() > 128
        || !by
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(ApiError::bad(format!(
            "by={by:?}: expected a label name (letters, digits, _ and .)"
        )));
    }
    let s = selection(&p, "")?;
    let Some((prof, ty)) = load(&st, &tenant, &s, Detail::Labels).await? else {
        return Ok(axum::Json(json!({"total": 0, "by": by, "rows": []})).into_response());
    };
    let body = cpu(move || {
        let total = prof.total(ty);
        let (name, unit) = prof.sample_type_names(ty);
        let groups = kiln_profile::group_by_label(&prof, ty, &by)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        let share = |v: i64| {
            if total > 0 {
                v as f64 / total as f64
            } else {
                0.0
            }
        };
        let mut rows: Vec<_> = groups
            .iter()
            .take(MAX_ROWS)
            .map(|(n, v)| json!({"name": n, "value": v, "share": share(*v)}))
            .collect();
        if groups.len() > MAX_ROWS {
            let rest: i64 = groups[MAX_ROWS..].iter().map(|(_, v)| v).sum();
            rows.push(json!({"name": kiln_profile::OTHER, "value": rest, "share": share(rest)}));
        }
        Ok(json!({"type": name, "unit": unit, "total": total, "by": by, "rows": rows}))
    })
    .await?;
    Ok(axum::Json(body).into_response())
}
