//! Query handlers: Pyroscope's render, render-diff and label endpoints,
//! and the native `/api/v1/` (top with the Pareto mark, flame-graph tree,
//! diff, timeline, series, labels, profile types, merged pprof; the threads
//! table is in `threads`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use kiln_profile::Profile;
use kiln_store::{Detail, selector};
use serde_json::{Value, json};

use crate::{ApiError, AppState, flamebearer, tenant};

type Params = Query<HashMap<String, String>>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A query with its range, parsed from `query`/`from`/`until` (or the
/// prefixed `leftQuery`, `rightFrom`, …).
pub(crate) struct Selection {
    pub q: selector::Query,
    /// Milliseconds since the epoch.
    pub from: i64,
    pub until: i64,
}

/// For endpoints whose selector names no type (`{service_name="x"}`):
/// sets `query` to `profile` with the selector's matchers, and returns
/// those matchers as written (`service_name="x"`; empty for `{}`), for
/// queries that add their own.
pub(crate) fn retype(p: &mut HashMap<String, String>, profile: &str) -> String {
    let raw = p.get("query").cloned().unwrap_or_else(|| "{}".into());
    let raw = raw.trim();
    let inner = raw[raw.find('{').unwrap_or(raw.len())..]
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim()
        .to_string();
    p.insert("query".into(), format!("{profile}{{{inner}}}"));
    inner
}

/// Steps of whole minutes over `s`, at most 60: `(from, until)` each.
fn minute_steps(s: &Selection) -> Vec<(i64, i64)> {
    let minute = kiln_store::BUCKET_MS;
    let from = s.from.div_euclid(minute) * minute;
    let step = ((s.until - from + 59) / 60).div_euclid(minute).max(1) * minute;
    let mut out = Vec::new();
    let mut t = from;
    while t < s.until {
        let end = (t + step).min(s.until);
        out.push((t, end));
        t = end;
    }
    out
}

pub(crate) fn selection(p: &HashMap<String, String>, prefix: &str) -> Result<Selection, ApiError> {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            let mut c = k.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or_default();
            format!("{prefix}{first}{}", c.as_str())
        }
    };
    let qk = key("query");
    let raw = p
        .get(&qk)
        .ok_or_else(|| ApiError::bad(format!("{qk}: missing (TYPE{{selector}})")))?;
    let q = selector::parse(raw).map_err(|e| ApiError::bad(format!("{qk}: {e}")))?;
    let now = now_ms();
    let time = |k: &str, default: i64| -> Result<i64, ApiError> {
        match p.get(k) {
            None => Ok(default),
            Some(v) => {
                crate::time::parse(v, now).map_err(|e| ApiError::bad(format!("{k}={v:?}: {e}")))
            }
        }
    };
    let from = time(&key("from"), now - 3_600_000)?;
    let until = time(&key("until"), now)?;
    if until <= from {
        return Err(ApiError::bad(format!(
            "{}: must be after {}",
            key("until"),
            key("from")
        )));
    }
    Ok(Selection { q, from, until })
}

/// The merged profile of a selection — this server's blocks and head and
/// every peer's unflushed head — and the index of its sample type.
pub(crate) async fn load(
    st: &AppState,
    tenant: &str,
    s: &Selection,
    detail: Detail,
) -> Result<Option<(Arc<Profile>, usize)>, ApiError> {
    let t = Instant::now();
    let p = crate::cluster::select(st, tenant, &s.q, s.from, s.until, detail).await?;
    st.metrics.query_seconds.observe(t.elapsed().as_secs_f64());
    Ok(p.and_then(|p| {
        let ty = match s.q.sample_type() {
            Some(t) => p.sample_type_index(&t),
            None => p.default_type_index(),
        }?;
        Some((p, ty))
    }))
}

/// Runs a query's CPU work (a flame tree, a top table, a diff, encoding,
/// summing series) on a blocking thread, so the async threads stay free
/// for small requests while it runs.
pub(crate) async fn cpu<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn max_nodes(p: &HashMap<String, String>) -> Result<usize, ApiError> {
    match p.get("maxNodes").or_else(|| p.get("max_nodes")) {
        None => Ok(8192),
        Some(v) => v
            .parse()
            .ok()
            .filter(|&n: &usize| n <= 1_000_000)
            .ok_or_else(|| ApiError::bad(format!("maxNodes={v:?}: expected 0 to 1000000"))),
    }
}

fn units(unit: &str) -> &'static str {
    match unit {
        "nanoseconds" => "nanoseconds",
        "bytes" => "bytes",
        "count" => "objects",
        _ => "samples",
    }
}

/// The selection's total per step ([`kiln_store::Store::totals_step`]),
/// for a flamebearer's `timeline`.
async fn totals(
    st: &AppState,
    tenant: &str,
    s: &Selection,
) -> Result<(i64, BTreeMap<String, BTreeMap<i64, i64>>), ApiError> {
    let lines = st
        .store
        .series_totals(tenant, &s.q, s.from, s.until, None)
        .await?;
    in_steps(st, tenant, s, lines).await
}

/// Minute (or, from day sums, hour) totals summed into the range's
/// timeline steps, with the step. A gauge's step (the live heap, stored as
/// its integral over time) is its mean over the time data came in it: a
/// heap over time, in bytes held — a step an instance started in is not
/// diluted.
async fn in_steps(
    st: &AppState,
    tenant: &str,
    s: &Selection,
    lines: BTreeMap<String, BTreeMap<i64, i64>>,
) -> Result<(i64, BTreeMap<String, BTreeMap<i64, i64>>), ApiError> {
    let step = kiln_store::Store::totals_step(s.from, s.until);
    let at = |t: i64| t.div_euclid(step) * step;
    let mut out: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
    for (k, pts) in lines {
        let line = out.entry(k).or_default();
        for (t, v) in pts {
            let x = line.entry(at(t)).or_default();
            *x = x.saturating_add(v);
        }
    }
    if crate::cluster::gauge_query(&s.q) {
        let mut covered: BTreeMap<i64, i64> = BTreeMap::new();
        for (minute, ns) in st.store.coverage(tenant, &s.q, s.from, s.until).await? {
            *covered.entry(at(minute)).or_default() += ns / 1_000_000;
        }
        for pts in out.values_mut() {
            for (t, v) in pts.iter_mut() {
                let ms = covered.get(t).copied().filter(|&ms| ms > 0).unwrap_or(step);
                *v = kiln_profile::gauge::step_mean(*v, ms);
            }
        }
    }
    Ok((step, out))
}

fn timeline_json(step: i64, lines: &BTreeMap<String, BTreeMap<i64, i64>>, s: &Selection) -> Value {
    let start = s.from.div_euclid(step) * step;
    let n = ((s.until - start) / step).max(0) as usize + 1;
    let mut samples = vec![0i64; n.min(100_000)];
    for line in lines.values() {
        for (&t, &v) in line {
            let i = ((t - start) / step) as usize;
            if let Some(x) = samples.get_mut(i) {
                *x += v;
            }
        }
    }
    json!({
        "startTime": start / 1000,
        "samples": samples,
        "durationDelta": step / 1000,
    })
}

/// `GET /pyroscope/render`: flamebearer JSON.
pub async fn render(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    if let Some(f) = p.get("format").filter(|f| *f != "json") {
        return Err(ApiError::bad(format!("format={f:?}: only json is served")));
    }
    let s = selection(&p, "")?;
    let max = max_nodes(&p)?;
    let loaded = load(&st, &tenant, &s, Detail::Stacks).await?;
    let (step, lines) = totals(&st, &tenant, &s).await?;
    let body = cpu(move || {
        let (fb, unit) = match &loaded {
            Some((prof, ty)) => {
                let tree = kiln_profile::flame_tree(prof, *ty, max)
                    .map_err(|e| ApiError::bad(e.to_string()))?;
                (flamebearer::single(&tree), tree.unit.clone())
            }
            None => (
                json!({"names": ["total"], "levels": [[0, 0, 0, 0]], "numTicks": 0, "maxSelf": 0}),
                String::new(),
            ),
        };
        Ok(json!({
            "version": 1,
            "flamebearer": fb,
            "metadata": {
                "format": "single",
                "units": units(&unit),
                "name": s.q.profile_type,
                "spyName": "",
                "sampleRate": 1_000_000_000,
            },
            "timeline": timeline_json(step, &lines, &s),
        }))
    })
    .await?;
    Ok(axum::Json(body).into_response())
}

/// `GET /pyroscope/render-diff`: flamebearer JSON of format `double`.
pub async fn render_diff(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let l = selection(&p, "left")?;
    let r = selection(&p, "right")?;
    let max = max_nodes(&p)?;
    let empty = || kiln_profile::FlameTree {
        ty: String::new(),
        unit: String::new(),
        nodes: vec![kiln_profile::FlameNode {
            name: "total".into(),
            self_value: 0,
            total: 0,
            children: Vec::new(),
            samples: None,
        }],
    };
    let tree =
        move |loaded: Option<(Arc<Profile>, usize)>| -> Result<kiln_profile::FlameTree, ApiError> {
            match loaded {
                Some((prof, ty)) => kiln_profile::flame_tree(&prof, ty, max)
                    .map_err(|e| ApiError::bad(e.to_string())),
                None => Ok(empty()),
            }
        };
    let (ll, rl) = (
        load(&st, &tenant, &l, Detail::Stacks).await?,
        load(&st, &tenant, &r, Detail::Stacks).await?,
    );
    let ((lstep, llines), (rstep, rlines)) = (
        totals(&st, &tenant, &l).await?,
        totals(&st, &tenant, &r).await?,
    );
    let body = cpu(move || {
        let (lt, rt) = (tree(ll)?, tree(rl)?);
        let unit = if lt.unit.is_empty() {
            rt.unit.clone()
        } else {
            lt.unit.clone()
        };
        Ok(json!({
            "version": 1,
            "flamebearer": flamebearer::diff(&lt, &rt),
            "metadata": {"format": "double", "units": units(&unit), "name": l.q.profile_type},
            "leftTimeline": timeline_json(lstep, &llines, &l),
            "rightTimeline": timeline_json(rstep, &rlines, &r),
        }))
    })
    .await?;
    Ok(axum::Json(body).into_response())
}

/// Values of the label named by parameter `param`, among the series
/// matching `query` when given: a JSON array.
fn values_of(
    st: &AppState,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
    param: &str,
) -> Result<Response, ApiError> {
    let tenant = tenant(st, headers)?;
    let name = p
        .get(param)
        .ok_or_else(|| ApiError::bad(format!("{param}: missing")))?;
    let q = match p.get("query") {
        Some(q) => Some(selector::parse(q).map_err(|e| ApiError::bad(format!("query: {e}")))?),
        None => None,
    };
    Ok(axum::Json(st.store.label_values(&tenant, name, q.as_ref())).into_response())
}

/// `GET /pyroscope/label-values?label=NAME[&query=…]`: a JSON array.
pub async fn pyroscope_label_values(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    st.store.wait_loaded().await?;
    values_of(&st, &headers, &p, "label")
}

/// `GET /api/v1/label-values?name=[&query=]`: values of a label.
pub async fn label_values(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    st.store.wait_loaded().await?;
    values_of(&st, &headers, &p, "name")
}

/// `GET /pyroscope/label-names` and `/api/v1/labels`: a JSON array.
pub async fn label_names(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    st.store.wait_loaded().await?;
    Ok(axum::Json(st.store.label_names(&tenant)).into_response())
}

/// `GET /api/v1/top`: functions by self value, Pareto set marked.
pub async fn top(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let s = selection(&p, "")?;
    let n: usize = match p.get("n") {
        None => 100,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad(format!("n={v:?}: expected a whole number")))?,
    };
    let Some((prof, ty)) = load(&st, &tenant, &s, Detail::Stacks).await? else {
        return Ok(axum::Json(
            json!({"type": s.q.profile_type, "unit": "", "total": 0, "rows": []}),
        )
        .into_response());
    };
    let body = cpu(move || {
        let top = kiln_profile::top(&prof, ty).map_err(|e| ApiError::bad(e.to_string()))?;
        let rows: Vec<Value> = top
        .rows
        .iter()
        .take(if n == 0 { usize::MAX } else { n })
        .map(
            |r| json!({"name": r.name, "self": r.self_value, "total": r.total, "pareto": r.pareto}),
        )
        .collect();
        Ok(json!({"type": top.ty, "unit": top.unit, "total": top.total, "rows": rows}))
    })
    .await?;
    Ok(axum::Json(body).into_response())
}

/// The selection of `s`'s sample counts: the stored profile type with the
/// same name and period whose sample unit is `count` (for
/// `process_cpu:cpu:nanoseconds:cpu:nanoseconds`,
/// `process_cpu:samples:count:cpu:nanoseconds`). `s` itself when its unit
/// is `count`; `None` when its profile has no count column.
fn counts_of(st: &AppState, tenant: &str, s: &Selection) -> Option<Selection> {
    let parts: Vec<&str> = s.q.profile_type.split(':').collect();
    let [name, _, unit, period, period_unit] = parts.as_slice() else {
        return None;
    };
    let q = |profile_type: String| selector::Query {
        profile_type,
        matchers: s.q.matchers.clone(),
    };
    if *unit == "count" {
        return Some(Selection {
            q: q(s.q.profile_type.clone()),
            ..*s
        });
    }
    st.store.profile_types(tenant).into_iter().find_map(|t| {
        let p: Vec<&str> = t.split(':').collect();
        (p.len() == 5
            && p[0] == *name
            && p[2] == "count"
            && p[3] == *period
            && p[4] == *period_unit)
            .then(|| Selection {
                q: q(t.clone()),
                ..*s
            })
    })
}

/// `GET /api/v1/flamegraph`: the flame-graph tree; with `samples=true`
/// each node also carries the samples through it.
pub async fn flamegraph(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let s = selection(&p, "")?;
    let max = max_nodes(&p)?;
    let counts = match p.get("samples").map(String::as_str) {
        None | Some("false") => None,
        Some("true") => counts_of(&st, &tenant, &s),
        Some(v) => return Err(ApiError::bad(format!("samples={v:?}: true or false"))),
    };
    let (loaded, counted) = match &counts {
        Some(c) => {
            let (a, b) = tokio::join!(
                load(&st, &tenant, &s, Detail::Stacks),
                load(&st, &tenant, c, Detail::Stacks)
            );
            (a?, b?)
        }
        None => (load(&st, &tenant, &s, Detail::Stacks).await?, None),
    };
    match loaded {
        Some((prof, ty)) => {
            let tree = cpu(move || {
                let mut tree = kiln_profile::flame_tree(&prof, ty, max).map_err(|e| ApiError::bad(e.to_string()))?;
                if let Some((cp, cty)) = counted {
                    tree.add_samples(&cp, cty).map_err(|e| ApiError::bad(e.to_string()))?;
                }
                Ok(tree)
            })
            .await?;
            Ok(axum::Json(tree).into_response())
        }
        None => Ok(axum::Json(json!({"type": "", "unit": "", "nodes": [{"name": "total", "self": 0, "total": 0, "children": []}]})).into_response()),
    }
}

/// `GET /api/v1/diff?leftQuery=&leftFrom=&…&rightQuery=&…`: per function
/// and per stack, normalised by totals.
pub async fn diff(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let l = selection(&p, "left")?;
    let r = selection(&p, "right")?;
    let (Some((lp, lt)), Some((rp, rt))) = (
        load(&st, &tenant, &l, Detail::Stacks).await?,
        load(&st, &tenant, &r, Detail::Stacks).await?,
    ) else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "one side of the comparison has no data",
        ));
    };
    let d =
        cpu(move || kiln_profile::diff(&lp, lt, &rp, rt).map_err(|e| ApiError::bad(e.to_string())))
            .await?;
    Ok(axum::Json(d).into_response())
}

/// `GET /api/v1/timeline?query=&from=&until=[&groupBy=label]`: the total
/// per minute, one line per value of `groupBy`.
pub async fn timeline(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let s = selection(&p, "")?;
    let group = p.get("groupBy").cloned();
    if let Some(f) = p.get("function") {
        return function_timeline(&st, &tenant, &s, f, p.get("measure").map(String::as_str)).await;
    }
    if s.q
        .matchers
        .iter()
        .any(|m| crate::cluster::SAMPLE_LABELS.contains(&m.name.as_str()))
    {
        return sampled_timeline(&st, &tenant, &s, group.as_deref()).await;
    }
    let lines = st
        .store
        .series_totals(&tenant, &s.q, s.from, s.until, group.as_deref())
        .await?;
    let (step, lines) = in_steps(&st, &tenant, &s, lines).await?;
    let out: Vec<Value> = lines
        .into_iter()
        .map(|(k, pts)| json!({"group": k, "points": pts.into_iter().map(|(t, v)| [t, v]).collect::<Vec<_>>()}))
        .collect();
    Ok(axum::Json(json!({"step_ms": step, "lines": out})).into_response())
}

/// A function's share of the selection over time, in percent: one merge
/// per step (at most 60 steps of whole minutes), the share computed as an
/// alert rule computes it ([`crate::alerts::share`]).
async fn function_timeline(
    st: &AppState,
    tenant: &str,
    s: &Selection,
    function: &str,
    measure: Option<&str>,
) -> Result<Response, ApiError> {
    let re = regex::Regex::new(&format!("^(?:{function})$"))
        .map_err(|e| ApiError::bad(format!("function: {e}")))?;
    let total = match measure.unwrap_or("self") {
        "self" => false,
        "total" => true,
        m => {
            return Err(ApiError::bad(format!(
                "measure={m:?}: expected self or total"
            )));
        }
    };
    let steps = minute_steps(s);
    let step = steps.first().map_or(kiln_store::BUCKET_MS, |(a, b)| b - a);
    let mut points = Vec::new();
    for (t, end) in steps {
        let sel = Selection {
            q: s.q.clone(),
            from: t,
            until: end,
        };
        if let Some((prof, ty)) = load(st, tenant, &sel, Detail::Stacks).await? {
            let re = re.clone();
            let v = cpu(move || Ok(crate::alerts::share(&prof, ty, &re, total))).await?;
            if v.is_finite() {
                points.push(json!([t, v]));
            }
        }
    }
    Ok(axum::Json(json!({
        "step_ms": step,
        "unit": "percent",
        "function": function,
        "measure": if total { "total" } else { "self" },
        "lines": [{"group": function, "points": points}],
    }))
    .into_response())
}

/// The timeline of a selection that keeps samples by their labels
/// (`{lock="sessions"}`): series totals cannot say it, so each step is a
/// merge of its own — at most 60 steps of whole minutes.
async fn sampled_timeline(
    st: &AppState,
    tenant: &str,
    s: &Selection,
    group: Option<&str>,
) -> Result<Response, ApiError> {
    let steps = minute_steps(s);
    let step = steps.first().map_or(kiln_store::BUCKET_MS, |(a, b)| b - a);
    let mut lines: BTreeMap<String, Vec<[i64; 2]>> = BTreeMap::new();
    for (t, end) in steps {
        let sel = Selection {
            q: s.q.clone(),
            from: t,
            until: end,
        };
        if let Some((prof, ty)) = load(st, tenant, &sel, Detail::Labels).await? {
            let rows = match group {
                Some(g) => {
                    let g = g.to_string();
                    cpu(move || {
                        kiln_profile::group_by_label(&prof, ty, &g)
                            .map_err(|e| ApiError::bad(e.to_string()))
                    })
                    .await?
                }
                None => vec![(String::new(), prof.total(ty))],
            };
            for (k, v) in rows {
                lines.entry(k).or_default().push([t, v]);
            }
        }
    }
    let out: Vec<Value> = lines
        .into_iter()
        .map(|(k, pts)| json!({"group": k, "points": pts}))
        .collect();
    Ok(axum::Json(json!({"step_ms": step, "lines": out})).into_response())
}

/// `GET /api/v1/series?query=`: label sets of the matching series.
pub async fn series(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let raw = p.get("query").map_or("{}", String::as_str);
    let q = if raw.trim() == "{}" {
        selector::Query {
            profile_type: String::new(),
            matchers: Vec::new(),
        }
    } else {
        selector::parse(raw).map_err(|e| ApiError::bad(format!("query: {e}")))?
    };
    st.store.wait_loaded().await?;
    let sets: Vec<HashMap<String, String>> = st
        .store
        .series(&tenant, &q)
        .into_iter()
        .map(|l| l.into_iter().collect())
        .collect();
    Ok(axum::Json(sets).into_response())
}

/// `GET /api/v1/profile-types`: the profile type IDs stored.
pub async fn profile_types(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    st.store.wait_loaded().await?;
    Ok(axum::Json(st.store.profile_types(&tenant)).into_response())
}

/// `GET /api/v1/pprof`: the merged selection as gzipped pprof.
pub async fn pprof(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Params,
) -> Result<Response, ApiError> {
    let tenant = tenant(&st, &headers)?;
    let s = selection(&p, "")?;
    let t = Instant::now();
    let merged =
        crate::cluster::select(&st, &tenant, &s.q, s.from, s.until, Detail::Labels).await?;
    st.metrics.query_seconds.observe(t.elapsed().as_secs_f64());
    let Some(prof) = merged else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no profiles match",
        ));
    };
    let gz = cpu(move || Ok(kiln_profile::pprof::encode_gzip(&prof))).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"profile.pb.gz\"",
            ),
        ],
        gz,
    )
        .into_response())
}
