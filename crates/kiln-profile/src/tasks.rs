//! Tasks on the wire: the latency [`Sketch`] that merges exactly, one
//! task's figures over a window ([`TaskRow`]), and the `tasks` profile
//! that carries them — written by the agent ([`tasks_profile`]), read
//! back by the server after any merge ([`read_tasks`]). Riding as a
//! profile, tasks get the profiles' durability, sinks, compaction and
//! rollups for nothing; summing two `tasks` profiles sums their
//! histograms bucket by bucket, which is the exact merge.
//!
//! The profile's sample types (all `…:operations:count` profile types):
//! `operations` (count), `latency` (count per latency bucket),
//! `latency_sum` (ns), `cpu` (ns), `io` (ns), `other` (ns), `stuck`
//! (count), `sites` (count). Every sample carries the label `task`; its
//! stack is the task's name as the root frame, then
//! - nothing, for `operations`, `latency_sum`, `cpu`, `other` and `stuck`;
//! - the I/O kind (`sql`), for `io`;
//! - the site key (`board::open:171`), for `sites`;
//! - the latency bucket, `≤1.234ms #412` ([`bucket_frame`]), for `latency`.
//!
//! A stack's second frame is read for the type whose value is non-zero,
//! so an I/O kind and a site of one name never collide.

use std::collections::BTreeMap;

use crate::{Label, LocationId, Profile};

/// Ratio between a latency bucket's bounds: 1.02, so a bucket's middle is
/// within 1% of every value in it.
pub const GAMMA: f64 = 1.02;
/// Highest bucket index: about 2.1·10^13 ns (6 hours); longer latencies
/// count in it.
pub const MAX_BUCKET: u32 = 1550;
/// The profile name the agent ships tasks under.
pub const PROFILE: &str = "tasks";
/// The label every sample of the `tasks` profile carries, and that CPU,
/// wall, memory and lock samples taken inside a task carry.
pub const TASK_LABEL: &str = "task";

/// The `tasks` profile's sample types, in order.
pub const SAMPLE_TYPES: [(&str, &str); 8] = [
    ("operations", "count"),
    ("latency", "count"),
    ("latency_sum", "nanoseconds"),
    ("cpu", "nanoseconds"),
    ("io", "nanoseconds"),
    ("other", "nanoseconds"),
    ("stuck", "count"),
    ("sites", "count"),
];

/// The bucket a latency of `ns` falls in: 0 for 0, else ⌈log_γ ns⌉
/// (bucket `i` holds (γ^(i−1), γ^i]), at most [`MAX_BUCKET`].
pub fn bucket(ns: u64) -> u32 {
    if ns <= 1 {
        return ns as u32;
    }
    let i = ((ns as f64).ln() / GAMMA.ln()).ceil();
    (i as u32).clamp(1, MAX_BUCKET)
}

/// Bucket `i`'s upper bound in ns, γ^i.
pub fn upper(i: u32) -> f64 {
    if i == 0 { 0.0 } else { GAMMA.powi(i as i32) }
}

/// The value bucket `i` stands for: the point whose relative distance to
/// both bounds is equal, 2γ^i/(γ+1), within (γ−1)/(γ+1) < 1% of anything
/// in the bucket.
pub fn middle(i: u32) -> u64 {
    if i <= 1 {
        return u64::from(i);
    }
    (2.0 * upper(i) / (GAMMA + 1.0)).round() as u64
}

/// A latency histogram: operations per log bucket. Adding two sketches
/// is exact: the same value lands in the same bucket on every instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sketch {
    /// Operations per bucket index.
    pub counts: BTreeMap<u32, u64>,
}

impl Sketch {
    /// Counts one operation of `ns`.
    pub fn record(&mut self, ns: u64) {
        self.add_bucket(bucket(ns), 1);
    }

    /// Adds `n` operations to bucket `i`.
    pub fn add_bucket(&mut self, i: u32, n: u64) {
        if n > 0 {
            let c = self.counts.entry(i.min(MAX_BUCKET)).or_default();
            *c = c.saturating_add(n);
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        for (&i, &n) in &other.counts {
            self.add_bucket(i, n);
        }
    }

    /// Operations counted.
    pub fn count(&self) -> u64 {
        self.counts.values().fold(0, |a, &c| a.saturating_add(c))
    }

    /// The `q`-quantile (0 ≤ q ≤ 1) in ns, within 1% of the true value:
    /// the middle of the bucket holding the ⌈q·n⌉-th smallest operation.
    /// 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (&i, &c) in &self.counts {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return middle(i);
            }
        }
        self.max()
    }

    /// The largest operation, within 1%.
    pub fn max(&self) -> u64 {
        self.counts.keys().next_back().map_or(0, |&i| middle(i))
    }

    /// Operations at most `ns` long, counting a bucket whose upper bound
    /// is at most `ns` (Prometheus's `le`, to bucket precision).
    pub fn at_most(&self, ns: f64) -> u64 {
        self.counts
            .iter()
            .take_while(|&(&i, _)| upper(i) <= ns * (1.0 + 1e-12))
            .fold(0, |a, (_, &c)| a.saturating_add(c))
    }
}

/// One task's figures over a window or a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRow {
    /// The task's name.
    pub task: String,
    /// Operations that ended.
    pub count: u64,
    /// Their latencies.
    pub latency: Sketch,
    /// The sum of their latencies, ns.
    pub latency_sum_ns: u64,
    /// CPU time on the threads that ran them, ns (nested tasks' own CPU
    /// counts to them, not to the task around them).
    pub cpu_ns: u64,
    /// Time inside `io(kind, …)` per kind, ns.
    pub io_ns: BTreeMap<String, u64>,
    /// Latency neither on a CPU nor inside `io`: run-queue delay, locks,
    /// nested tasks, untracked blocking; ns.
    pub other_ns: u64,
    /// Operations that ran past their deadline.
    pub stuck: u64,
    /// Sampled stacks per site key (`module::function:line`).
    pub sites: BTreeMap<String, u64>,
}

impl TaskRow {
    /// Adds every figure of `o` (a row of the same task).
    pub fn merge(&mut self, o: &TaskRow) {
        // Saturating: rows read from pushed profiles are not trusted.
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.count, o.count);
        self.latency.merge(&o.latency);
        add(&mut self.latency_sum_ns, o.latency_sum_ns);
        add(&mut self.cpu_ns, o.cpu_ns);
        for (k, v) in &o.io_ns {
            add(self.io_ns.entry(k.clone()).or_default(), *v);
        }
        add(&mut self.other_ns, o.other_ns);
        add(&mut self.stuck, o.stuck);
        for (k, v) in &o.sites {
            add(self.sites.entry(k.clone()).or_default(), *v);
        }
    }
}

/// The frame naming latency bucket `i`: its upper bound, readable in a
/// flame graph, then `#i`, what [`read_tasks`] parses.
pub fn bucket_frame(i: u32) -> String {
    let ns = upper(i);
    let human = if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.3}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.3}ms", ns / 1e6)
    } else {
        format!("{:.3}s", ns / 1e9)
    };
    format!("≤{human} #{i}")
}

fn bucket_of_frame(name: &str) -> Option<u32> {
    name.rsplit_once(" #")?.1.parse().ok()
}

/// The `tasks` profile of `rows` over the window `[time_nanos,
/// time_nanos + duration_nanos)`.
pub fn tasks_profile(rows: &[TaskRow], time_nanos: i64, duration_nanos: i64) -> Profile {
    let mut p = Profile::with_sample_types(&SAMPLE_TYPES);
    p.period_type = Some(p.value_type("operations", "count"));
    p.period = 1;
    p.time_nanos = time_nanos;
    p.duration_nanos = duration_nanos;
    p.default_sample_type = p.strings.intern("cpu");
    let key = p.strings.intern(TASK_LABEL);
    let frame = |p: &mut Profile, name: &str| p.add_named_location(name);
    let n = SAMPLE_TYPES.len();
    let one = |ty: usize, v: u64| -> Vec<i64> {
        let mut vals = vec![0; n];
        vals[ty] = v.min(i64::MAX as u64) as i64;
        vals
    };
    for r in rows {
        let root = frame(&mut p, &r.task);
        let label = [Label {
            key,
            str: p.strings.intern(&r.task),
            ..Label::default()
        }];
        let own = [
            r.count,
            0,
            r.latency_sum_ns,
            r.cpu_ns,
            0,
            r.other_ns,
            r.stuck,
            0,
        ]
        .map(|v| v.min(i64::MAX as u64) as i64);
        p.push_sample(&[root], &label, &own);
        for (&i, &c) in &r.latency.counts {
            let leaf = frame(&mut p, &bucket_frame(i));
            p.push_sample(&[leaf, root], &label, &one(1, c));
        }
        for (kind, &ns) in &r.io_ns {
            let leaf = frame(&mut p, kind);
            p.push_sample(&[leaf, root], &label, &one(4, ns));
        }
        for (site, &c) in &r.sites {
            let leaf = frame(&mut p, site);
            p.push_sample(&[leaf, root], &label, &one(7, c));
        }
    }
    p
}

/// The tasks a `tasks` profile holds (several instances and windows
/// merged into it sum), sorted by name. Types it lacks read as zero; a
/// profile of another kind yields no rows.
pub fn read_tasks(p: &Profile) -> Vec<TaskRow> {
    let idx: Vec<Option<usize>> = SAMPLE_TYPES
        .iter()
        .map(|(ty, unit)| p.sample_type_index(&format!("{ty}:{unit}")))
        .collect();
    if idx[0].is_none() || idx[1].is_none() {
        return Vec::new();
    }
    let mut rows: BTreeMap<String, TaskRow> = BTreeMap::new();
    for (s, sample) in p.samples.iter().enumerate() {
        let stack = p.stack(sample.stack);
        let Some(&root) = stack.last() else { continue };
        let name_of = |loc: LocationId| {
            let mut out = String::new();
            p.frame_names(loc, |f| {
                if out.is_empty() {
                    out = f.to_string();
                }
            });
            out
        };
        let task = name_of(root);
        let vals = p.sample_values(s);
        let v = |t: usize| idx[t].map_or(0, |i| vals[i].max(0) as u64);
        let row = rows.entry(task.clone()).or_insert_with(|| TaskRow {
            task,
            ..TaskRow::default()
        });
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        if stack.len() == 1 {
            add(&mut row.count, v(0));
            add(&mut row.latency_sum_ns, v(2));
            add(&mut row.cpu_ns, v(3));
            add(&mut row.other_ns, v(5));
            add(&mut row.stuck, v(6));
            continue;
        }
        let leaf = name_of(stack[0]);
        if v(1) > 0
            && let Some(i) = bucket_of_frame(&leaf)
        {
            row.latency.add_bucket(i, v(1));
        }
        if v(4) > 0 {
            add(row.io_ns.entry(leaf.clone()).or_default(), v(4));
        }
        if v(7) > 0 {
            add(row.sites.entry(leaf).or_default(), v(7));
        }
    }
    rows.into_values()
        .filter(|r| r.count > 0 || r.cpu_ns > 0 || r.stuck > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_one_percent() {
        let mut s = Sketch::default();
        let values: Vec<u64> = (1..=10_000u64).map(|i| i * i * 37).collect();
        for &v in &values {
            s.record(v);
        }
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let truth = values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64;
            let got = s.quantile(q) as f64;
            assert!(
                (got - truth).abs() / truth <= 0.01,
                "q{q}: {got} vs {truth}"
            );
        }
        assert_eq!(s.count(), 10_000);
        assert!(s.at_most(1e6) > 0 && s.at_most(1e6) < 10_000);
    }

    #[test]
    fn profile_round_trip_and_exact_merge() {
        let mut a = TaskRow {
            task: "open_board".into(),
            count: 3,
            latency_sum_ns: 6_000_000,
            cpu_ns: 1_000_000,
            other_ns: 2_000_000,
            stuck: 1,
            ..TaskRow::default()
        };
        for ns in [1_000_000, 2_000_000, 3_000_000] {
            a.latency.record(ns);
        }
        a.io_ns.insert("sql".into(), 3_000_000);
        a.sites.insert("board::load:12".into(), 2);
        let p = tasks_profile(std::slice::from_ref(&a), 0, 10);
        p.validate().unwrap();
        let back = read_tasks(&p);
        assert_eq!(back, vec![a.clone()]);
        // Two instances' profiles merged: every figure sums, the
        // histogram bucket by bucket.
        let m = crate::merge(&[p.clone(), p]).unwrap();
        let both = read_tasks(&m);
        let mut twice = a.clone();
        twice.merge(&a);
        assert_eq!(both, vec![twice]);
        assert_eq!(both[0].latency.quantile(0.5), middle(bucket(2_000_000)));
    }

    #[test]
    fn hostile_counts_saturate() {
        let mut r = TaskRow {
            task: "t".into(),
            count: u64::MAX,
            ..TaskRow::default()
        };
        r.latency.add_bucket(3, u64::MAX);
        r.latency.add_bucket(9_999_999, u64::MAX);
        let again = r.clone();
        r.merge(&again);
        assert_eq!(r.count, u64::MAX);
        assert_eq!(r.latency.count(), u64::MAX);
        assert!(r.latency.quantile(0.999) <= middle(MAX_BUCKET));
        // (Within 1 ns: a constant-folded `powi` may round otherwise.)
        assert!(r.latency.max().abs_diff(middle(MAX_BUCKET)) <= 1);
        assert_eq!(r.latency.at_most(f64::MAX), u64::MAX);
    }
}
