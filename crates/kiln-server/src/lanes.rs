//! `GET /api/v1/lanes`: the thread timeline — one lane per thread over
//! the range, each step split by what the thread was doing. From the
//! `wall` profile where the agent samples wall clock (`running`,
//! `runnable`, `sleeping`, `blocked`, `lock`, the real time sampled in
//! each); else from the `threads` profile every agent sends by default
//! (CPU time is `running`, run-queue delay `runnable`, the rest of the
//! step `sleeping`).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_profile::Profile;
use kiln_store::{Detail, selector};
use serde_json::{Value, json};

use crate::{ApiError, AppState, tenant};

/// Steps a lane has at most.
const MAX_STEPS: i64 = 60;
/// Lanes answered at most (the threads with the most time on a CPU).
const MAX_LANES: usize = 200;

/// Per thread name, per state, nanoseconds.
type Shares = BTreeMap<String, BTreeMap<&'static str, i64>>;

const STATES: [&str; 5] = ["running", "runnable", "sleeping", "blocked", "lock"];

fn label<'a>(
    p: &'a Profile,
    s: &kiln_profile::Sample,
    key: Option<kiln_profile::StringId>,
) -> &'a str {
    key.and_then(|k| p.label_str(s.labels, k)).unwrap_or("")
}

/// What a wall profile says each thread did.
fn from_wall(p: &Profile, out: &mut Shares) {
    let Some(ty) = p.sample_type_index("wall") else {
        return;
    };
    let n = p.sample_types.len();
    let (name, state) = (
        p.strings.find("thread_name"),
        p.strings.find("thread_state"),
    );
    for (i, s) in p.samples.iter().enumerate() {
        let st = label(p, s, state);
        let Some(st) = STATES.iter().find(|x| **x == st) else {
            continue;
        };
        *out.entry(label(p, s, name).to_string())
            .or_default()
            .entry(st)
            .or_default() += p.values[i * n + ty];
    }
}

/// What a threads profile says each thread did over `step_ns`.
fn from_threads(p: &Profile, step_ns: i64, out: &mut Shares) {
    let (Some(cpu), Some(delay)) = (p.sample_type_index("cpu"), p.sample_type_index("run_delay"))
    else {
        return;
    };
    let n = p.sample_types.len();
    let name = p.strings.find("thread_name");
    for (i, s) in p.samples.iter().enumerate() {
        let e = out.entry(label(p, s, name).to_string()).or_default();
        *e.entry("running").or_default() += p.values[i * n + cpu];
        *e.entry("runnable").or_default() += p.values[i * n + delay];
    }
    for e in out.values_mut() {
        let busy: i64 = e.values().sum();
        *e.entry("sleeping").or_default() += (step_ns - busy).max(0);
    }
}

/// `GET /api/v1/lanes?query={selector}&from=&until=` →
/// `{"source": "wall"|"threads"|null, "step_ms", "from", "until",
/// "lanes": [{"thread", "pool", "cpu_ns", "steps": [{"t", "state",
/// "ns": {state: ns}}]}]}`; `state` is the step's biggest, a step with no
/// data is absent.
pub async fn lanes(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let s = crate::query::selection(&p, "")?;
    if !s.q.profile_type.is_empty() {
        return Err(ApiError::bad(format!(
            "query={:?}: a selector only ({{service_name=\"…\"}}): lanes read the wall and threads profiles",
            p.get("query").map_or("", String::as_str)
        )));
    }
    let (q, until) = (s.q, s.until);
    let minute = kiln_store::BUCKET_MS;
    let from = s.from.div_euclid(minute) * minute;
    let span = until - from;
    let step = ((span + MAX_STEPS - 1) / MAX_STEPS)
        .div_euclid(minute)
        .max(1)
        * minute;
    let typed = |name: &str| selector::Query {
        profile_type: name.to_string(),
        matchers: q.matchers.clone(),
    };
    let (wall_q, threads_q) = (typed("wall"), typed("threads"));
    // Wall clock if the range has any; else the threads profile.
    let has_wall = crate::cluster::select(&st, &tenant, &wall_q, from, until, Detail::Stacks)
        .await?
        .is_some_and(|p| !p.samples.is_empty());
    let source_q = if has_wall { &wall_q } else { &threads_q };
    let mut per_step: Vec<(i64, Shares)> = Vec::new();
    let mut t = from;
    while t < until {
        let end = (t + step).min(until);
        let mut shares = Shares::new();
        if let Some(prof) =
            crate::cluster::select(&st, &tenant, source_q, t, end, Detail::Labels).await?
        {
            if has_wall {
                from_wall(&prof, &mut shares);
            } else {
                from_threads(&prof, (end - t) * 1_000_000, &mut shares);
            }
        }
        per_step.push((t, shares));
        t = end;
    }
    let mut cpu: HashMap<String, i64> = HashMap::new();
    for (_, shares) in &per_step {
        for (thread, m) in shares {
            *cpu.entry(thread.clone()).or_default() += m.get("running").copied().unwrap_or(0);
        }
    }
    let mut threads: Vec<(String, i64)> = cpu.into_iter().collect();
    threads.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    threads.truncate(MAX_LANES);
    threads.sort_by(|a, b| a.0.cmp(&b.0));
    let lanes: Vec<Value> = threads
        .iter()
        .map(|(thread, cpu_ns)| {
            let steps: Vec<Value> = per_step
                .iter()
                .filter_map(|(t, shares)| {
                    let m = shares.get(thread)?;
                    let (state, _) = m.iter().max_by_key(|(_, v)| **v)?;
                    Some(json!({"t": t, "state": state, "ns": m}))
                })
                .collect();
            json!({
                "thread": thread,
                "pool": kiln_profile::thread_pool(thread),
                "cpu_ns": cpu_ns,
                "steps": steps,
            })
        })
        .collect();
    let source = if per_step.iter().all(|(_, s)| s.is_empty()) {
        Value::Null
    } else if has_wall {
        json!("wall")
    } else {
        json!("threads")
    };
    Ok(axum::Json(json!({
        "source": source,
        "step_ms": step,
        "from": from,
        "until": until,
        "lanes": lanes,
    }))
    .into_response())
}
