//! Alert rules as `kiln.toml` writes them (`[[alerts]]`, `[alerting]`),
//! checked at start: a rule that cannot be evaluated is refused with a
//! message naming it and the field.

use std::time::Duration;

use kiln_store::selector;
use regex::Regex;

use crate::time;

/// What a rule watches.
#[derive(Clone, Debug)]
pub enum Condition {
    /// A function's share of the selection, in percent, above `above`.
    Share {
        /// Matched against each frame's function name.
        function: Regex,
        /// `true`: time in the function and what it calls; `false`: in it.
        total: bool,
        /// Percent of the selection's total.
        above: f64,
    },
    /// A task's latency quantile above `above`.
    Task {
        /// The task's name.
        task: String,
        /// e.g. 0.99.
        quantile: f64,
        /// Nanoseconds.
        above: u64,
    },
    /// Any event of this kind (`stuck`, `deadlock`).
    Event {
        /// The event kind.
        event: String,
    },
}

/// One `[[alerts]]` rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `alertname`.
    pub name: String,
    /// `share`, `task` or `event`.
    pub kind: &'static str,
    /// The selection (`TYPE{selector}` for share rules, `{selector}` else).
    pub query: selector::Query,
    /// The query as written.
    pub query_text: String,
    /// How long the condition holds before the rule fires.
    pub hold: Duration,
    /// The range each evaluation looks at (default 5 minutes).
    pub window: Duration,
    /// What is compared.
    pub condition: Condition,
}

/// `[alerting]`.
#[derive(Clone, Debug)]
pub struct Alerting {
    /// Prometheus Alertmanager's base URL.
    pub alertmanager: Option<String>,
    /// A URL that gets the same JSON.
    pub webhook: Option<String>,
    /// How often rules are evaluated (default 15 s).
    pub every: Duration,
    /// This server's UI address for links (default: the listen address).
    pub external_url: Option<String>,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// Rules are evaluated this often unless `[alerting] every` says.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(15);

impl Default for Alerting {
    fn default() -> Self {
        Alerting {
            alertmanager: None,
            webhook: None,
            every: DEFAULT_EVERY,
            external_url: None,
            rules: Vec::new(),
        }
    }
}

/// `[alerting]` as written.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertingFile {
    alertmanager: Option<String>,
    webhook: Option<String>,
    every: Option<String>,
    external_url: Option<String>,
}

/// One `[[alerts]]` as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    name: Option<String>,
    kind: Option<String>,
    query: Option<String>,
    #[serde(rename = "for")]
    hold: Option<String>,
    window: Option<String>,
    function: Option<String>,
    measure: Option<String>,
    above: Option<toml::Value>,
    task: Option<String>,
    quantile: Option<f64>,
    event: Option<String>,
}

fn url(what: &str, v: Option<String>) -> Result<Option<String>, String> {
    match v {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(format!(
            "alerting.{what}: {u:?} is not an http:// or https:// URL"
        )),
        other => Ok(other.map(|u| u.trim_end_matches('/').to_string())),
    }
}

/// Checks `[alerting]` and every `[[alerts]]` rule.
pub fn parse(a: AlertingFile, rules: Vec<RuleFile>) -> Result<Alerting, String> {
    let mut out = Alerting {
        alertmanager: url("alertmanager", a.alertmanager)?,
        webhook: url("webhook", a.webhook)?,
        external_url: url("external_url", a.external_url)?,
        ..Alerting::default()
    };
    if let Some(e) = a.every {
        out.every = time::duration(&e).map_err(|err| format!("alerting.every = {e:?}: {err}"))?;
        if out.every < Duration::from_millis(100) {
            return Err(format!("alerting.every = {e:?}: at least 100ms"));
        }
    }
    for (i, r) in rules.into_iter().enumerate() {
        let rule = rule(r).map_err(|(name, e)| {
            format!(
                "alert rule {}: {e}",
                name.map_or(format!("#{}", i + 1), |n| format!("{n:?}"))
            )
        })?;
        if out.rules.iter().any(|o| o.name == rule.name) {
            return Err(format!(
                "alert rule {:?}: the name is used twice",
                rule.name
            ));
        }
        out.rules.push(rule);
    }
    Ok(out)
}

fn rule(r: RuleFile) -> Result<Rule, (Option<String>, String)> {
    let name = r.name.clone();
    let fail = |e: String| (name.clone(), e);
    let n = r
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| fail("name: missing".into()))?;
    let dur = |field: &str, v: &Option<String>, default: Duration| match v {
        None => Ok(default),
        Some(s) => time::duration(s).map_err(|e| fail(format!("{field} = {s:?}: {e}"))),
    };
    let hold = dur("for", &r.hold, Duration::ZERO)?;
    let window = dur("window", &r.window, Duration::from_secs(300))?;
    if window.is_zero() {
        return Err(fail("window: must be longer than 0".into()));
    }
    let query_text = r
        .query
        .clone()
        .ok_or_else(|| fail("query: missing".into()))?;
    let kind = r
        .kind
        .as_deref()
        .ok_or_else(|| fail("kind: missing (share, task or event)".into()))?;
    let parse_q = |text: &str| selector::parse(text).map_err(|e| fail(format!("query: {e}")));
    let (kind, query, condition) = match kind {
        "share" => {
            let q = parse_q(&query_text)?;
            if q.profile_type.is_empty() {
                return Err(fail("query: a share rule needs TYPE{selector}".into()));
            }
            let f = r
                .function
                .as_deref()
                .ok_or_else(|| fail("function: missing (a regex)".into()))?;
            let function =
                Regex::new(&format!("^(?:{f})$")).map_err(|e| fail(format!("function: {e}")))?;
            let total = match r.measure.as_deref().unwrap_or("self") {
                "self" => false,
                "total" => true,
                m => return Err(fail(format!("measure = {m:?}: expected self or total"))),
            };
            let above = match &r.above {
                Some(toml::Value::Integer(n)) => *n as f64,
                Some(toml::Value::Float(x)) => *x,
                Some(toml::Value::String(s)) => {
                    s.trim().trim_end_matches('%').parse().map_err(|_| {
                        fail(format!("above = {s:?}: expected a percent such as 15"))
                    })?
                }
                _ => return Err(fail("above: missing (percent of the selection)".into())),
            };
            if !(0.0..=100.0).contains(&above) {
                return Err(fail(format!("above = {above}: a percent from 0 to 100")));
            }
            (
                "share",
                q,
                Condition::Share {
                    function,
                    total,
                    above,
                },
            )
        }
        "task" => {
            let braces = &query_text[query_text.find('{').unwrap_or(query_text.len())..];
            let q = parse_q(&format!("{}{braces}", kiln_profile::tasks::PROFILE))?;
            let task = r.task.clone().ok_or_else(|| fail("task: missing".into()))?;
            let quantile = r.quantile.unwrap_or(0.99);
            if !(0.0..=1.0).contains(&quantile) {
                return Err(fail(format!("quantile = {quantile}: from 0 to 1")));
            }
            let above = match &r.above {
                Some(toml::Value::String(s)) => time::duration(s)
                    .map_err(|e| fail(format!("above = {s:?}: {e}")))?
                    .as_nanos() as u64,
                _ => return Err(fail("above: missing (a latency such as \"500ms\")".into())),
            };
            (
                "task",
                q,
                Condition::Task {
                    task,
                    quantile,
                    above,
                },
            )
        }
        "event" => {
            let braces = &query_text[query_text.find('{').unwrap_or(query_text.len())..];
            let q = parse_q(&format!("events{braces}"))?;
            let event = r.event.clone().unwrap_or_else(|| "stuck".into());
            if !matches!(event.as_str(), "stuck" | "deadlock") {
                return Err(fail(format!(
                    "event = {event:?}: expected stuck or deadlock"
                )));
            }
            ("event", q, Condition::Event { event })
        }
        k => return Err(fail(format!("kind = {k:?}: expected share, task or event"))),
    };
    Ok(Rule {
        name: n,
        kind,
        query,
        query_text,
        hold,
        window,
        condition,
    })
}
