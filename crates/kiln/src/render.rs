//! Turning results into what the user reads: text tables, JSON, SVG.

use anyhow::Result;
use kiln_profile::{Diff, Profile, Top};
use serde::Serialize;

/// A value in its unit, short: `1.25s`, `3.4MB`, `1200`.
pub fn human(v: i64, unit: &str) -> String {
    let f = v as f64;
    match unit {
        "nanoseconds" => {
            let a = f.abs();
            if a >= 1e9 {
                format!("{:.2}s", f / 1e9)
            } else if a >= 1e6 {
                format!("{:.2}ms", f / 1e6)
            } else if a >= 1e3 {
                format!("{:.2}us", f / 1e3)
            } else {
                format!("{v}ns")
            }
        }
        "bytes" => {
            let a = f.abs();
            if a >= (1u64 << 30) as f64 {
                format!("{:.2}GB", f / (1u64 << 30) as f64)
            } else if a >= (1 << 20) as f64 {
                format!("{:.2}MB", f / (1 << 20) as f64)
            } else if a >= 1024.0 {
                format!("{:.2}kB", f / 1024.0)
            } else {
                format!("{v}B")
            }
        }
        _ => v.to_string(),
    }
}

fn pct(v: i64, total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * v as f64 / total as f64
    }
}

fn limit<T>(rows: &[T], n: usize) -> &[T] {
    if n == 0 {
        rows
    } else {
        &rows[..rows.len().min(n)]
    }
}

/// `kiln top` as text, pprof's columns plus a Pareto mark.
pub fn top_text(t: &Top, n: usize, groups: Option<(&str, &[(String, i64)])>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let pareto = t.rows.iter().filter(|r| r.pareto).count();
    let _ = writeln!(
        out,
        "Type: {} ({})  Total: {}  Functions: {}  Pareto 80%: {} functions (marked *)",
        t.ty,
        t.unit,
        human(t.total, &t.unit),
        t.rows.len(),
        pareto
    );
    let _ = writeln!(
        out,
        "{:>12} {:>7} {:>7} {:>12} {:>7}   name",
        "self", "self%", "sum%", "total", "total%"
    );
    let mut sum = 0;
    for r in limit(&t.rows, n) {
        sum += r.self_value;
        let _ = writeln!(
            out,
            "{:>12} {:>6.2}% {:>6.2}% {:>12} {:>6.2}% {} {}",
            human(r.self_value, &t.unit),
            pct(r.self_value, t.total),
            pct(sum, t.total),
            human(r.total, &t.unit),
            pct(r.total, t.total),
            if r.pareto { '*' } else { ' ' },
            r.name
        );
    }
    if let Some((label, groups)) = groups {
        let _ = writeln!(out, "\nBy {label}:");
        for (value, v) in groups {
            let name = if value.is_empty() { "(none)" } else { value };
            let _ = writeln!(
                out,
                "{:>12} {:>6.2}%  {name}",
                human(*v, &t.unit),
                pct(*v, t.total)
            );
        }
    }
    out
}

#[derive(Serialize)]
struct TopJson<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    unit: &'a str,
    total: i64,
    rows: &'a [kiln_profile::TopRow],
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<Group<'a>>>,
}

#[derive(Serialize)]
struct Group<'a> {
    label: &'a str,
    value: &'a str,
    total: i64,
}

/// `kiln top --format json`, as DESIGN.md writes it.
pub fn top_json(t: &Top, n: usize, groups: Option<(&str, &[(String, i64)])>) -> Result<String> {
    let groups = groups.map(|(label, g)| {
        g.iter()
            .map(|(value, total)| Group {
                label,
                value,
                total: *total,
            })
            .collect()
    });
    let j = TopJson {
        ty: &t.ty,
        unit: &t.unit,
        total: t.total,
        rows: limit(&t.rows, n),
        groups,
    };
    Ok(serde_json::to_string_pretty(&j)? + "\n")
}

/// `kiln diff` as text: functions by change of self share.
pub fn diff_text(d: &Diff, n: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Type: {} ({})  Base total: {}  New total: {}  (shares normalised by each total)",
        d.ty,
        d.unit,
        human(d.base_total, &d.unit),
        human(d.new_total, &d.unit)
    );
    let _ = writeln!(
        out,
        "{:>9} {:>9} {:>9} {:>10}   function",
        "Δself", "base", "new", "Δtotal"
    );
    for r in limit(&d.functions, n) {
        let _ = writeln!(
            out,
            "{:>+8.2}% {:>8.2}% {:>8.2}% {:>+9.2}%   {}",
            r.self_delta_pct,
            pct(r.base_self, d.base_total),
            pct(r.new_self, d.new_total),
            r.total_delta_pct,
            r.name
        );
    }
    out
}

#[derive(Serialize)]
struct DiffJson<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    unit: &'a str,
    base_total: i64,
    new_total: i64,
    functions: &'a [kiln_profile::DiffRow],
    stacks: &'a [kiln_profile::StackDiff],
}

/// `kiln diff --format json`.
pub fn diff_json(d: &Diff, n: usize) -> Result<String> {
    let j = DiffJson {
        ty: &d.ty,
        unit: &d.unit,
        base_total: d.base_total,
        new_total: d.new_total,
        functions: limit(&d.functions, n),
        stacks: limit(&d.stacks, n),
    };
    Ok(serde_json::to_string_pretty(&j)? + "\n")
}

/// An SVG flame graph from folded lines (`stack v` or, differential,
/// `stack base new`).
pub fn flamegraph_svg(
    lines: &[String],
    title: &str,
    unit: &str,
    differential: bool,
) -> Result<Vec<u8>> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = unit.to_string();
    if differential {
        opts.subtitle =
            Some("red: grew, blue: shrank (new side normalised to the base total)".into());
    }
    let mut svg = Vec::new();
    if lines.is_empty() {
        anyhow::bail!("the profile has no samples of this type: nothing to draw");
    }
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)?;
    Ok(svg)
}

#[derive(Serialize)]
struct ProfileJson<'a> {
    sample_types: Vec<[&'a str; 2]>,
    period_type: Option<[&'a str; 2]>,
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    comments: Vec<&'a str>,
    samples: Vec<SampleJson<'a>>,
}

#[derive(Serialize)]
struct SampleJson<'a> {
    /// Frames, leaf first.
    stack: Vec<String>,
    values: &'a [i64],
    labels: Vec<LabelJson<'a>>,
}

#[derive(Serialize)]
struct LabelJson<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    str: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    num: Option<i64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    unit: &'a str,
}

/// `kiln convert --to json`: the profile with names resolved, for reading
/// and for scripts.
pub fn profile_json(p: &Profile) -> Result<Vec<u8>> {
    let vt = |v: &kiln_profile::ValueType| [p.str(v.ty), p.str(v.unit)];
    let samples = p
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut stack = Vec::new();
            for &l in p.stack(s.stack) {
                p.frame_names(l, |f| stack.push(f.to_string()));
            }
            SampleJson {
                stack,
                values: p.sample_values(i),
                labels: p
                    .labels(s.labels)
                    .iter()
                    .map(|l| LabelJson {
                        key: p.str(l.key),
                        str: p.str(l.str),
                        num: (l.str.0 == 0).then_some(l.num),
                        unit: p.str(l.num_unit),
                    })
                    .collect(),
            }
        })
        .collect();
    let j = ProfileJson {
        sample_types: p.sample_types.iter().map(vt).collect(),
        period_type: p.period_type.as_ref().map(vt),
        period: p.period,
        time_nanos: p.time_nanos,
        duration_nanos: p.duration_nanos,
        comments: p.comments.iter().map(|&c| p.str(c)).collect(),
        samples,
    };
    Ok(serde_json::to_vec_pretty(&j)?)
}

/// `ns` as a short duration: `850ns`, `12.3µs`, `4.56ms`, `1.20s`.
fn dur(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// The tasks table of an `/api/v1/tasks` answer, `n` rows (0: all): per
/// task its rate, percentiles, and where its time went (CPU, each I/O
/// kind, other) as shares of its latency, then its top site.
pub fn tasks_text(v: &serde_json::Value, n: usize) -> String {
    let rows = v["tasks"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}  {:<30} {}\n",
        "TASK",
        "COUNT",
        "RATE/s",
        "P50",
        "P99",
        "P999",
        "STUCK",
        "TIME: CPU | I/O | OTHER",
        "TOP SITE"
    );
    let take = if n == 0 { rows.len() } else { n };
    for r in rows.iter().take(take) {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let total = f("latency_sum_ns").max(1.0);
        let mut split = format!("cpu {:.0}%", 100.0 * f("cpu_ns") / total);
        if let Some(io) = r["io_ns"].as_object() {
            for (k, ns) in io {
                split.push_str(&format!(
                    " {k} {:.0}%",
                    100.0 * ns.as_f64().unwrap_or(0.0) / total
                ));
            }
        }
        split.push_str(&format!(" other {:.0}%", 100.0 * f("other_ns") / total));
        let site = r["sites"][0]["site"].as_str().unwrap_or("");
        out.push_str(&format!(
            "{:<28} {:>9} {:>9.2} {:>9} {:>9} {:>9} {:>6}  {:<30} {}\n",
            r["task"].as_str().unwrap_or(""),
            f("count"),
            f("rate_per_s"),
            dur(f("p50_ns")),
            dur(f("p99_ns")),
            dur(f("p999_ns")),
            f("stuck"),
            split,
            site
        ));
    }
    if rows.is_empty() {
        out.push_str("(no tasks in this range: does the service run kiln_agent::task or its tracing layer?)\n");
    }
    out
}
