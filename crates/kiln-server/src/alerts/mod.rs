//! Alerts: the `[[alerts]]` rules ([`rules`]) evaluated every
//! `[alerting] every` (default 15 s) over the default tenant's data, each
//! with Prometheus's states — inactive → pending (the condition holds) →
//! firing (it held for the rule's `for`) → resolved (it stopped) — and
//! sent, firing and resolved, to Prometheus Alertmanager
//! (`POST /api/v2/alerts`, resent every evaluation while firing, with an
//! end four evaluations ahead) and to a webhook (the same JSON). A rule's
//! value: a function's share of the selection in percent (`share`), a
//! task's latency quantile in ns (`task`), events of a kind in the window
//! (`event`). `GET /api/v1/alerts` shows each rule's state.

pub mod rules;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use kiln_profile::Profile;
use kiln_store::{Detail, selector};
use serde_json::{Value, json};

use crate::{ApiError, AppState, Inner};
use rules::{Condition, Rule};

/// Where a rule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The condition does not hold.
    Inactive,
    /// It holds, not yet for the rule's `for`.
    Pending,
    /// It held for `for`: sent.
    Firing,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
        }
    }
}

/// A rule's state.
#[derive(Clone, Debug)]
pub struct RuleState {
    /// Where it is.
    pub phase: Phase,
    /// Since when (ms), in this phase.
    pub since_ms: i64,
    /// The last value (NaN: no data).
    pub value: f64,
    /// When it last fired (for the resolved notice's start), ms.
    pub fired_ms: i64,
    /// The last evaluation's error, if any.
    pub error: Option<String>,
}

/// Every rule's state, in rule order.
#[derive(Default)]
pub struct States(Mutex<Vec<RuleState>>);

impl States {
    /// A copy of every rule's state now.
    pub fn snapshot(&self) -> Vec<RuleState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The share, in percent, of `p`'s sample type `ty` in functions matching
/// `f`: in their own code (`total` false: the leaf frame matches), or in
/// them and what they call (any frame of the stack matches, counted once).
pub fn share(p: &Profile, ty: usize, f: &regex::Regex, total: bool) -> f64 {
    let all = p.total(ty);
    if all <= 0 {
        return f64::NAN;
    }
    let n = p.sample_types.len();
    let matches = |loc: kiln_profile::LocationId, innermost_only: bool| {
        let mut hit = false;
        let mut seen = false;
        p.frame_names(loc, |name| {
            if !(innermost_only && seen) && f.is_match(&name.to_string()) {
                hit = true;
            }
            seen = true;
        });
        hit
    };
    let mut matched: i64 = 0;
    for (i, s) in p.samples.iter().enumerate() {
        let v = p.values[i * n + ty];
        let stack = p.stack(s.stack);
        let hit = v != 0
            && if total {
                stack.iter().any(|&loc| matches(loc, false))
            } else {
                stack.first().is_some_and(|&loc| matches(loc, true))
            };
        if hit {
            matched = matched.saturating_add(v);
        }
    }
    100.0 * matched as f64 / all as f64
}

/// The value of `rule` now (NaN: no data in its window).
async fn value(st: &AppState, rule: &Rule, now: i64) -> Result<f64, ApiError> {
    let from = now - rule.window.as_millis() as i64;
    match &rule.condition {
        Condition::Share {
            function, total, ..
        } => {
            let s = crate::query::Selection {
                q: rule.query.clone(),
                from,
                until: now,
            };
            let Some((p, ty)) = crate::query::load(st, "", &s, Detail::Stacks).await? else {
                return Ok(f64::NAN);
            };
            let (f, t) = (function.clone(), *total);
            crate::query::cpu(move || Ok(share(&p, ty, &f, t))).await
        }
        Condition::Task { task, quantile, .. } => {
            let rows = crate::tasks::rows(st, "", &rule.query, from, now).await?;
            Ok(rows
                .iter()
                .find(|r| &r.task == task && r.count > 0)
                .map_or(f64::NAN, |r| r.latency.quantile(*quantile) as f64))
        }
        Condition::Event { event } => {
            let Some(p) =
                crate::cluster::select(st, "", &rule.query, from, now, Detail::Labels).await?
            else {
                return Ok(0.0);
            };
            let key = p.strings.iter().position(|s| s == "kind");
            let mut n = 0i64;
            for (i, s) in p.samples.iter().enumerate() {
                let kind =
                    key.and_then(|k| p.label_str(s.labels, kiln_profile::StringId(k as u32)));
                if kind == Some(event.as_str()) {
                    n += p.sample_values(i).first().copied().unwrap_or(0);
                }
            }
            Ok(n as f64)
        }
    }
}

fn holds(rule: &Rule, v: f64) -> bool {
    if v.is_nan() {
        return false;
    }
    match &rule.condition {
        Condition::Share { above, .. } => v > *above,
        Condition::Task { above, .. } => v > *above as f64,
        Condition::Event { .. } => v > 0.0,
    }
}

/// The alert's labels: `alertname`, the selector's equality matchers
/// (`service_name`, …), and `function` or `task`.
fn labels(rule: &Rule) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".to_string(), rule.name.clone());
    for m in &rule.query.matchers {
        if m.op == selector::Op::Eq {
            l.insert(m.name.clone(), m.value.clone());
        }
    }
    match &rule.condition {
        Condition::Share { function, .. } => {
            let re = function.as_str();
            let bare = re
                .strip_prefix("^(?:")
                .and_then(|r| r.strip_suffix(")$"))
                .unwrap_or(re);
            l.insert("function".into(), bare.into());
        }
        Condition::Task { task, .. } => {
            l.insert("task".into(), task.clone());
        }
        Condition::Event { event } => {
            l.insert("event".into(), event.clone());
        }
    }
    l
}

/// What the value and threshold read as.
fn describe(rule: &Rule, v: f64) -> (String, String) {
    match &rule.condition {
        Condition::Share { above, .. } => (format!("{v:.2}%"), format!("{above}%")),
        Condition::Task {
            above, quantile, ..
        } => (
            format!("p{} {:.1} ms", quantile * 100.0, v / 1e6),
            format!("{:.1} ms", *above as f64 / 1e6),
        ),
        Condition::Event { event } => (format!("{v} {event} events"), "0".into()),
    }
}

/// A link to what the rule watches in Kiln's UI.
fn link(base: &str, rule: &Rule) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let from = format!("now-{}s", rule.window.as_secs().max(60));
    match &rule.condition {
        Condition::Share { .. } => format!("{base}/?query={}&from={from}", enc(&rule.query_text)),
        Condition::Task { .. } => format!(
            "{base}/?query={}&from={from}&tab=tasks",
            enc(&rule.query_text)
        ),
        Condition::Event { .. } => format!(
            "{base}/?query={}&from={from}&tab=events",
            enc(&rule.query_text)
        ),
    }
}

/// The Alertmanager JSON of one alert.
fn alert_json(inner: &Inner, rule: &Rule, v: f64, starts: i64, ends: i64) -> Value {
    let (value, threshold) = describe(rule, v);
    let base = inner.alerting().external_url.clone().unwrap_or_default();
    json!({
        "labels": labels(rule),
        "annotations": {
            "summary": format!("{}: {value} (threshold {threshold})", rule.name),
            "value": value,
            "threshold": threshold,
            "link": link(&base, rule),
        },
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
        "generatorURL": link(&base, rule),
    })
}

/// Evaluates every rule once, moves its state, and sends what fires or
/// resolves.
pub async fn evaluate(st: &AppState) {
    let cfg = st.alerting();
    if cfg.rules.is_empty() {
        return;
    }
    let now = now_ms();
    let mut out = Vec::new();
    let mut values = Vec::with_capacity(cfg.rules.len());
    for rule in &cfg.rules {
        values.push(value(st, rule, now).await.map_err(|e| e.1));
    }
    {
        let mut states = st.alerts.0.lock().unwrap_or_else(|e| e.into_inner());
        if states.len() != cfg.rules.len() {
            *states = vec![
                RuleState {
                    phase: Phase::Inactive,
                    since_ms: now,
                    value: f64::NAN,
                    fired_ms: 0,
                    error: None,
                };
                cfg.rules.len()
            ];
        }
        let every = cfg.every.as_millis() as i64;
        for ((rule, s), v) in cfg.rules.iter().zip(states.iter_mut()).zip(values) {
            let (v, err) = match v {
                Ok(v) => (v, None),
                // An evaluation that failed keeps the phase (a storage
                // hiccup neither fires nor resolves).
                Err(e) => (s.value, Some(e)),
            };
            s.error = err.clone();
            if err.is_some() {
                continue;
            }
            s.value = v;
            let on = holds(rule, v);
            match (s.phase, on) {
                (Phase::Inactive, true) => {
                    s.phase = Phase::Pending;
                    s.since_ms = now;
                }
                (Phase::Pending, false) | (Phase::Firing, false) => {
                    if s.phase == Phase::Firing {
                        out.push(alert_json(st, rule, v, s.fired_ms, now));
                        st.metrics.alerts_resolved.inc();
                        tracing::info!(target: "kiln_server", alert = %rule.name, "resolved");
                    }
                    s.phase = Phase::Inactive;
                    s.since_ms = now;
                }
                _ => {}
            }
            if s.phase == Phase::Pending && now - s.since_ms >= rule.hold.as_millis() as i64 {
                s.phase = Phase::Firing;
                s.since_ms = now;
                s.fired_ms = now;
                st.metrics.alerts_fired.inc();
                tracing::warn!(target: "kiln_server", alert = %rule.name, value = v, "firing");
            }
            if s.phase == Phase::Firing {
                out.push(alert_json(st, rule, v, s.fired_ms, now + 4 * every));
            }
        }
    }
    if out.is_empty() {
        return;
    }
    let body = Value::Array(out);
    for target in [
        cfg.alertmanager
            .as_ref()
            .map(|a| format!("{a}/api/v2/alerts")),
        cfg.webhook.clone(),
    ]
    .into_iter()
    .flatten()
    {
        let r = st.http.post(&target).json(&body).send().await;
        match r {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                st.metrics.alerts_send_errors.inc();
                tracing::error!(target: "kiln_server", "alerts to {target}: {}", r.status());
            }
            Err(e) => {
                st.metrics.alerts_send_errors.inc();
                tracing::error!(target: "kiln_server", "alerts to {target}: {e}");
            }
        }
    }
}

/// `GET /api/v1/alerts` → `{"alerts": [{"name", "kind", "state", "value",
/// "since_ms", "query", "error"}]}`.
pub async fn alerts(State(st): State<AppState>) -> Result<Response, ApiError> {
    let cfg = st.alerting();
    let states = st.alerts.snapshot();
    let rows: Vec<Value> = cfg
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let s = states.get(i);
            let v = s.map_or(f64::NAN, |s| s.value);
            json!({
                "name": r.name,
                "kind": r.kind,
                "query": r.query_text,
                "state": s.map_or("inactive", |s| s.phase.name()),
                "value": if v.is_nan() { Value::Null } else { json!(v) },
                "since_ms": s.map(|s| s.since_ms),
                "error": s.and_then(|s| s.error.clone()),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "alerts": rows })).into_response())
}

/// `kiln_function_share_percent`: the last value of each `share` rule, in
/// OpenMetrics text, labelled as its alerts are (empty without such
/// rules).
pub fn share_gauges(st: &AppState) -> String {
    let cfg = st.alerting();
    let states = st.alerts.snapshot();
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut out = String::new();
    for (i, rule) in cfg.rules.iter().enumerate() {
        let Condition::Share { total, .. } = &rule.condition else {
            continue;
        };
        let Some(v) = states.get(i).map(|s| s.value).filter(|v| v.is_finite()) else {
            continue;
        };
        if out.is_empty() {
            out.push_str("# TYPE kiln_function_share_percent gauge\n# HELP kiln_function_share_percent A function's share of its alert rule's selection, percent, at the last evaluation.\n");
        }
        let mut l = labels(rule);
        l.insert(
            "measure".into(),
            if *total { "total" } else { "self" }.into(),
        );
        let labels: Vec<String> = l
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        out.push_str(&format!(
            "kiln_function_share_percent{{{}}} {v}\n",
            labels.join(",")
        ));
    }
    out
}
