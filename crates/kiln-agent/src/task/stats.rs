//! Each task name's cumulative figures, as atomics any thread adds to
//! (operations, a latency histogram of [`kiln_profile::tasks`]'s log
//! buckets, CPU, I/O per kind, other waiting, stuck), the registry that
//! hands them out by name, each window's growth as [`TaskRow`]s, the
//! site counts since start, and the `kiln_task_*` metrics.
//!
//! Memory: a task name costs one [`TaskStats`], about 12.5 KiB (the
//! histogram's 1,551 buckets); at most [`MAX_TASKS`] names are kept, the
//! rest count as [`OVERFLOW`]. I/O kinds are at most [`MAX_KINDS`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_profile::tasks::{MAX_BUCKET, Sketch, TaskRow, bucket};

/// Task names kept at most; later names count as [`OVERFLOW`].
pub const MAX_TASKS: usize = 1000;
/// I/O kinds kept at most; later kinds count as [`OVERFLOW`].
pub const MAX_KINDS: usize = 32;
/// The name tasks and kinds past the limits count under.
pub const OVERFLOW: &str = "(other)";
/// Sites kept per task for `/metrics` (the most frequent win a slot as
/// they come; later ones are dropped there, still shipped per window).
pub const MAX_SITES_PER_TASK: usize = 20;

/// One task name's figures since the agent first saw it.
pub(crate) struct TaskStats {
    /// The name.
    pub name: &'static str,
    /// Its id, 1-based (what samples carry).
    pub id: u32,
    /// Operations started (for every Nth stack).
    pub started: AtomicU64,
    /// I/O calls started (for every Nth stack).
    pub io_calls: AtomicU64,
    ops: AtomicU64,
    latency_sum: AtomicU64,
    cpu: AtomicU64,
    /// Latency outside I/O calls; "other" is this less `cpu`.
    other: AtomicU64,
    stuck: AtomicU64,
    io: [AtomicU64; MAX_KINDS],
    buckets: Box<[AtomicU64]>,
}

impl TaskStats {
    fn new(name: &'static str, id: u32) -> TaskStats {
        TaskStats {
            name,
            id,
            started: AtomicU64::new(0),
            io_calls: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            latency_sum: AtomicU64::new(0),
            cpu: AtomicU64::new(0),
            other: AtomicU64::new(0),
            stuck: AtomicU64::new(0),
            io: [const { AtomicU64::new(0) }; MAX_KINDS],
            buckets: (0..=MAX_BUCKET).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// One operation ended: `elapsed` long, `cpu` of it on a CPU, `io` in
    /// I/O calls.
    pub fn record(&self, elapsed: u64, cpu: u64, io: u64, stuck: bool) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.latency_sum.fetch_add(elapsed, Ordering::Relaxed);
        self.cpu.fetch_add(cpu, Ordering::Relaxed);
        // "Other" is what is neither CPU nor I/O, summed: the CPU may be
        // an estimate (read on a share of operations, scaled), so it is
        // taken off the sum, not off each operation.
        self.other
            .fetch_add(elapsed.saturating_sub(io), Ordering::Relaxed);
        if stuck {
            self.stuck.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket(elapsed) as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One operation caught past its deadline by the watchdog.
    pub fn add_stuck(&self) {
        self.stuck.fetch_add(1, Ordering::Relaxed);
    }

    /// `ns` in an I/O call of kind `kind` (an id of [`kind_id`]).
    pub fn add_io(&self, kind: u32, ns: u64) {
        let i = (kind as usize).clamp(1, MAX_KINDS) - 1;
        self.io[i].fetch_add(ns, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            ops: get(&self.ops),
            latency_sum: get(&self.latency_sum),
            cpu: get(&self.cpu),
            other: get(&self.other).saturating_sub(get(&self.cpu)),
            stuck: get(&self.stuck),
            io: self.io.iter().map(get).collect(),
            buckets: self.buckets.iter().map(get).collect(),
        }
    }
}

/// A task's cumulative figures at one moment.
#[derive(Clone, Default)]
pub(crate) struct Snapshot {
    ops: u64,
    latency_sum: u64,
    cpu: u64,
    other: u64,
    stuck: u64,
    io: Vec<u64>,
    buckets: Vec<u64>,
}

impl Snapshot {
    /// What grew from `prev` to `self`, as a row named `task`.
    fn since(&self, prev: &Snapshot, task: &str, kinds: &[&'static str]) -> TaskRow {
        let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
        let mut latency = Sketch::default();
        for (i, &n) in self.buckets.iter().enumerate() {
            latency.add_bucket(i as u32, n.saturating_sub(at(&prev.buckets, i)));
        }
        let mut io_ns = BTreeMap::new();
        for (i, &ns) in self.io.iter().enumerate() {
            let d = ns.saturating_sub(at(&prev.io, i));
            if d > 0 {
                let kind = kinds.get(i).copied().unwrap_or(OVERFLOW);
                *io_ns.entry(kind.to_string()).or_default() += d;
            }
        }
        TaskRow {
            task: task.to_string(),
            count: self.ops.saturating_sub(prev.ops),
            latency,
            latency_sum_ns: self.latency_sum.saturating_sub(prev.latency_sum),
            cpu_ns: self.cpu.saturating_sub(prev.cpu),
            io_ns,
            other_ns: self.other.saturating_sub(prev.other),
            stuck: self.stuck.saturating_sub(prev.stuck),
            sites: BTreeMap::new(),
        }
    }
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<&'static str, &'static TaskStats>,
    all: Vec<&'static TaskStats>,
    kinds: Vec<&'static str>,
    /// Sites since start per task id, at most [`MAX_SITES_PER_TASK`] each.
    sites: HashMap<u32, BTreeMap<String, u64>>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

thread_local! {
    /// This thread's names already looked up, by the name's address: the
    /// common path takes no lock.
    static CACHE: RefCell<HashMap<(usize, usize), &'static TaskStats>> =
        RefCell::new(HashMap::new());
    /// This thread's I/O kinds already looked up, by address.
    static KIND_CACHE: RefCell<HashMap<(usize, usize), u32>> = RefCell::new(HashMap::new());
}

/// The figures of task `name`, registered on first use.
pub(crate) fn stats_of(name: &'static str) -> &'static TaskStats {
    let key = (name.as_ptr() as usize, name.len());
    if let Ok(Some(s)) = CACHE.try_with(|c| c.borrow().get(&key).copied()) {
        return s;
    }
    let s = registry(|r| {
        if let Some(&s) = r.by_name.get(name) {
            return s;
        }
        let name = if r.all.len() + 1 >= MAX_TASKS {
            OVERFLOW
        } else {
            name
        };
        if let Some(&s) = r.by_name.get(name) {
            return s;
        }
        let s: &'static TaskStats =
            Box::leak(Box::new(TaskStats::new(name, r.all.len() as u32 + 1)));
        r.all.push(s);
        r.by_name.insert(name, s);
        s
    });
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut()
            && c.len() < MAX_TASKS
        {
            c.insert(key, s);
        }
    });
    s
}

/// The id of I/O kind `kind`, 1-based, registered on first use (past
/// [`MAX_KINDS`], the last id, [`OVERFLOW`]).
pub(crate) fn kind_id(kind: &'static str) -> u32 {
    let key = (kind.as_ptr() as usize, kind.len());
    if let Ok(Some(id)) = KIND_CACHE.try_with(|c| c.borrow().get(&key).copied()) {
        return id;
    }
    let id = kind_id_locked(kind);
    let _ = KIND_CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut()
            && c.len() < MAX_TASKS
        {
            c.insert(key, id);
        }
    });
    id
}

fn kind_id_locked(kind: &'static str) -> u32 {
    registry(|r| {
        if let Some(i) = r.kinds.iter().position(|&k| k == kind) {
            return i as u32 + 1;
        }
        if r.kinds.len() + 1 >= MAX_KINDS {
            if r.kinds.len() < MAX_KINDS {
                r.kinds.push(OVERFLOW);
            }
            return MAX_KINDS as u32;
        }
        r.kinds.push(kind);
        r.kinds.len() as u32
    })
}

/// The name of task `id`, if registered.
pub(crate) fn task_name(id: u32) -> Option<&'static str> {
    registry(|r| r.all.get((id as usize).checked_sub(1)?).map(|s| s.name))
}

/// Every task's figures now: what a starting agent counts its first
/// window from (an earlier agent in this process counted the rest).
pub(crate) fn baseline() -> HashMap<u32, Snapshot> {
    let all = registry(|r| r.all.clone());
    all.iter().map(|s| (s.id, s.snapshot())).collect()
}

/// Every task's growth since `prev` (updated to now), tasks with none
/// left out.
pub(crate) fn window(prev: &mut HashMap<u32, Snapshot>) -> Vec<TaskRow> {
    let (all, kinds) = registry(|r| (r.all.clone(), r.kinds.clone()));
    let mut rows = Vec::new();
    for s in all {
        let now = s.snapshot();
        let before = prev.get(&s.id).cloned().unwrap_or_default();
        let row = now.since(&before, s.name, &kinds);
        prev.insert(s.id, now);
        if row.count > 0 || row.cpu_ns > 0 || row.stuck > 0 || !row.io_ns.is_empty() {
            rows.push(row);
        }
    }
    rows
}

/// Adds a window's site counts of task `id` to the since-start counts
/// `/metrics` shows.
pub(crate) fn add_sites(id: u32, sites: &BTreeMap<String, u64>) {
    registry(|r| {
        let mine = r.sites.entry(id).or_default();
        for (site, &n) in sites {
            if let Some(c) = mine.get_mut(site) {
                *c += n;
            } else if mine.len() < MAX_SITES_PER_TASK {
                mine.insert(site.clone(), n);
            }
        }
    });
}

/// `le` bounds of `kiln_task_duration_seconds`, in seconds.
const LE: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The `kiln_task_*` families in Prometheus's text format: the duration
/// histogram (an operation counts in the first `le` at least its log
/// bucket's upper bound, so a bound is exact to 2%), CPU, I/O per kind,
/// stuck and site counters, since the agent started.
pub(crate) fn metrics_text(out: &mut String) {
    let (all, kinds, sites) = registry(|r| (r.all.clone(), r.kinds.clone(), r.sites.clone()));
    let snaps: Vec<(&'static str, u32, Snapshot)> =
        all.iter().map(|s| (s.name, s.id, s.snapshot())).collect();
    let _ = writeln!(
        out,
        "# HELP kiln_task_duration_seconds Latency of each task's operations.\n# TYPE kiln_task_duration_seconds histogram"
    );
    for (name, _, s) in &snaps {
        let t = crate::control::metrics::escape(name);
        let mut sk = Sketch::default();
        for (i, &n) in s.buckets.iter().enumerate() {
            sk.add_bucket(i as u32, n);
        }
        for le in LE {
            let _ = writeln!(
                out,
                "kiln_task_duration_seconds_bucket{{task=\"{t}\",le=\"{le}\"}} {}",
                sk.at_most(le * 1e9)
            );
        }
        let _ = writeln!(
            out,
            "kiln_task_duration_seconds_bucket{{task=\"{t}\",le=\"+Inf\"}} {}\nkiln_task_duration_seconds_sum{{task=\"{t}\"}} {}\nkiln_task_duration_seconds_count{{task=\"{t}\"}} {}",
            s.ops,
            s.latency_sum as f64 / 1e9,
            s.ops
        );
    }
    let family = |out: &mut String, name: &str, help: &str, v: &dyn Fn(&Snapshot) -> f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (task, _, s) in &snaps {
            let _ = writeln!(
                out,
                "{name}{{task=\"{}\"}} {}",
                crate::control::metrics::escape(task),
                v(s)
            );
        }
    };
    family(
        out,
        "kiln_task_cpu_seconds_total",
        "CPU time of each task's operations.",
        &|s| s.cpu as f64 / 1e9,
    );
    family(
        out,
        "kiln_task_stuck_total",
        "Operations that ran past their deadline.",
        &|s| s.stuck as f64,
    );
    let _ = writeln!(
        out,
        "# HELP kiln_task_io_seconds_total Time of each task inside I/O calls, per kind.\n# TYPE kiln_task_io_seconds_total counter"
    );
    for (task, _, s) in &snaps {
        for (i, &ns) in s.io.iter().enumerate() {
            if ns > 0 {
                let kind = kinds.get(i).copied().unwrap_or(OVERFLOW);
                let _ = writeln!(
                    out,
                    "kiln_task_io_seconds_total{{task=\"{}\",kind=\"{}\"}} {}",
                    crate::control::metrics::escape(task),
                    crate::control::metrics::escape(kind),
                    ns as f64 / 1e9
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP kiln_task_site_total Sampled stacks of each task per call site (top sites).\n# TYPE kiln_task_site_total counter"
    );
    for (task, id, _) in &snaps {
        for (site, n) in sites.get(id).into_iter().flatten() {
            let _ = writeln!(
                out,
                "kiln_task_site_total{{task=\"{}\",site=\"{}\"}} {n}",
                crate::control::metrics::escape(task),
                crate::control::metrics::escape(site)
            );
        }
    }
}
