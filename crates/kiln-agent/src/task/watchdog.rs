//! The watchdog: tasks with a deadline (their own, or the agent's
//! `.watchdog(d)`) are listed in a fixed table of slots while they run;
//! the sampler thread scans it every drain interval (10 ms), waking at
//! the earliest due deadline, and, for a task past its deadline, asks the thread running it for its stack (the
//! thread dump's signal) — once past the deadline, again past four times
//! it, so one can see whether it moved. The flush thread symbolizes each
//! capture into a [`WatchdogEvent`]: logged through `tracing`, counted in
//! `kiln_task_stuck_total`, kept for `/debug/kiln/stuck` and shipped in
//! the window's `events` profile. Starting and ending a task with a
//! deadline costs a compare-and-swap on a slot and two stores.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

/// Tasks with a deadline watched at once; past it, the rest run unwatched
/// (counted in [`UNWATCHED`]).
pub const MAX_WATCHED: usize = 1024;
/// Events kept for `/debug/kiln/stuck`.
pub const MAX_RECENT: usize = 256;
/// Events waiting to be shipped with the next window; past it the oldest
/// are dropped.
pub const MAX_PENDING: usize = 1024;

struct Slot {
    /// The running thread (0: free).
    tid: AtomicU32,
    task: AtomicU32,
    start_ns: AtomicU64,
    deadline_ns: AtomicU64,
    /// Captures taken: 0, 1 (past the deadline), 2 (past four times it).
    caught: AtomicU8,
}

static SLOTS: [Slot; MAX_WATCHED] = [const {
    Slot {
        tid: AtomicU32::new(0),
        task: AtomicU32::new(0),
        start_ns: AtomicU64::new(0),
        deadline_ns: AtomicU64::new(0),
        caught: AtomicU8::new(0),
    }
}; MAX_WATCHED];
/// Slots in use (the scan is skipped at 0).
static IN_USE: AtomicUsize = AtomicUsize::new(0);
/// Tasks with a deadline that found no free slot.
pub static UNWATCHED: AtomicU64 = AtomicU64::new(0);

/// Lists a task with a deadline, started at `start_ns` (monotonic) on
/// thread `tid`; its slot, if one was free.
pub(crate) fn watch(tid: u32, task: u32, start_ns: u64, deadline_ns: u64) -> Option<usize> {
    let from = (tid as usize).wrapping_mul(0x9E37_79B9) % MAX_WATCHED;
    for k in 0..MAX_WATCHED {
        let i = (from + k) % MAX_WATCHED;
        let s = &SLOTS[i];
        if s.tid.load(Ordering::Relaxed) == 0
            && s.tid
                .compare_exchange(0, u32::MAX, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            s.task.store(task, Ordering::Relaxed);
            s.start_ns.store(start_ns, Ordering::Relaxed);
            s.deadline_ns.store(deadline_ns, Ordering::Relaxed);
            s.caught.store(0, Ordering::Relaxed);
            s.tid.store(tid, Ordering::Release);
            IN_USE.fetch_add(1, Ordering::Relaxed);
            return Some(i);
        }
    }
    UNWATCHED.fetch_add(1, Ordering::Relaxed);
    None
}

/// The task in slot `i` ended; whether the watchdog caught it.
pub(crate) fn unwatch(i: usize) -> bool {
    let s = &SLOTS[i];
    let caught = s.caught.load(Ordering::Relaxed) > 0;
    s.tid.store(0, Ordering::Release);
    IN_USE.fetch_sub(1, Ordering::Relaxed);
    caught
}

/// A stuck task's stack as its thread gave it, before symbolization.
#[derive(Clone, Debug)]
pub struct Capture {
    pub tid: u32,
    pub task: u32,
    pub elapsed_ns: u64,
    pub deadline_ns: u64,
    pub time_ms: u64,
    /// 1: past the deadline; 2: past four times it.
    pub nth: u8,
    /// Leaf first, raw return addresses.
    pub ips: Vec<u64>,
}

/// The earliest moment (monotonic ns) a watched task comes due for a
/// capture, found by the last [`scan`]; `None` when none is watched.
pub(crate) fn next_due_ns() -> Option<u64> {
    match NEXT_DUE.load(Ordering::Relaxed) {
        u64::MAX => None,
        t => Some(t),
    }
}

static NEXT_DUE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Scans the slots at monotonic time `now_ns`; the stacks of tasks that
/// just passed their deadline (or four times it), taken by signalling
/// their threads.
pub(crate) fn scan(now_ns: u64) -> Vec<Capture> {
    NEXT_DUE.store(u64::MAX, Ordering::Relaxed);
    if IN_USE.load(Ordering::Relaxed) == 0 {
        return Vec::new();
    }
    let Ok(shared) = crate::sys::shared() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut next_due = u64::MAX;
    for s in &SLOTS {
        let tid = s.tid.load(Ordering::Acquire);
        if tid == 0 || tid == u32::MAX {
            continue;
        }
        let (start, deadline) = (
            s.start_ns.load(Ordering::Relaxed),
            s.deadline_ns.load(Ordering::Relaxed),
        );
        let elapsed = now_ns.saturating_sub(start);
        let caught = s.caught.load(Ordering::Relaxed);
        let at = match caught {
            0 => start.saturating_add(deadline),
            1 => start.saturating_add(deadline.saturating_mul(4)),
            _ => u64::MAX,
        };
        if now_ns <= at {
            next_due = next_due.min(at.saturating_add(1));
            continue;
        }
        let task = s.task.load(Ordering::Relaxed);
        let Ok((ips, _)) =
            crate::sys::thread_stack(shared, tid, std::time::Duration::from_millis(200))
        else {
            continue;
        };
        // Still the same operation (the slot was not freed and taken again
        // meanwhile).
        if s.tid.load(Ordering::Acquire) != tid || s.start_ns.load(Ordering::Relaxed) != start {
            continue;
        }
        s.caught.store(caught + 1, Ordering::Relaxed);
        if caught == 0
            && let Some(name) = super::stats::task_name(task)
        {
            super::stats_of(name).add_stuck();
        }
        out.push(Capture {
            tid,
            task,
            elapsed_ns: elapsed,
            deadline_ns: deadline,
            time_ms: crate::session::now_ms(),
            nth: caught + 1,
            ips,
        });
        if caught == 0 {
            next_due = next_due.min(
                start
                    .saturating_add(deadline.saturating_mul(4))
                    .saturating_add(1),
            );
        }
    }
    NEXT_DUE.store(next_due, Ordering::Relaxed);
    out
}

/// A stuck task, a stalled lock holder, or one thread of a deadlock, as
/// `/debug/kiln/stuck` and the server's `/api/v1/events` show it.
#[derive(Clone, Debug, Serialize)]
pub struct WatchdogEvent {
    /// `"stuck"` or `"deadlock"`.
    pub kind: &'static str,
    /// When it was caught, ms since the epoch.
    pub time_ms: u64,
    pub task: String,
    pub thread_name: String,
    pub thread_id: u32,
    /// How long it had run.
    pub elapsed_ns: u64,
    pub deadline_ns: u64,
    /// 1: caught past its deadline; 2: still there past four times it.
    pub capture: u8,
    /// The innermost frame of the service's own code.
    pub site: String,
    /// Frames, leaf first: `function (file:line)`.
    pub stack: Vec<String>,
    /// A deadlock's: the lock this thread waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<String>,
    /// A deadlock's: the lock this thread holds that the next one waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<String>,
    /// A deadlock's: every thread in the cycle, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<String>,
}

struct Events {
    recent: VecDeque<WatchdogEvent>,
    pending: VecDeque<WatchdogEvent>,
}

static EVENTS: Mutex<Events> = Mutex::new(Events {
    recent: VecDeque::new(),
    pending: VecDeque::new(),
});

/// Keeps an event for `/debug/kiln/stuck` and the next window, and logs it.
pub(crate) fn record(e: WatchdogEvent) {
    ::tracing::warn!(
        target: "kiln_agent",
        task = %e.task,
        thread = %e.thread_name,
        elapsed_ms = e.elapsed_ns / 1_000_000,
        deadline_ms = e.deadline_ns / 1_000_000,
        site = %e.site,
        kind = e.kind,
        "task stuck past its deadline, or deadlocked"
    );
    let mut g = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    if g.recent.len() >= MAX_RECENT {
        g.recent.pop_front();
    }
    g.recent.push_back(e.clone());
    if g.pending.len() >= MAX_PENDING {
        g.pending.pop_front();
    }
    g.pending.push_back(e);
}

/// Forgets every event (a new agent starts: an earlier one's events were
/// its own).
pub(crate) fn clear() {
    let mut g = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    g.recent.clear();
    g.pending.clear();
}

/// The events kept, oldest first.
pub(crate) fn recent() -> Vec<WatchdogEvent> {
    let g = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    g.recent.iter().cloned().collect()
}

/// The events not shipped yet, taken.
pub(crate) fn take_pending() -> Vec<WatchdogEvent> {
    let mut g = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
    g.pending.drain(..).collect()
}

/// The `events` profile of a window: one sample per event, its stack the
/// captured frames, labelled `kind`, `task`, `thread_name`, `site` and the
/// numbers `time_ms`, `elapsed_ns`, `deadline_ns`, `capture`
/// (docs/api.md).
pub(crate) fn events_profile(
    events: &[WatchdogEvent],
    time_nanos: i64,
    duration_nanos: i64,
) -> kiln_profile::Profile {
    use kiln_profile::{Label, Profile};
    let mut p = Profile::with_sample_types(&[("events", "count")]);
    p.period_type = Some(p.value_type("events", "count"));
    p.period = 1;
    p.time_nanos = time_nanos;
    p.duration_nanos = duration_nanos;
    for e in events {
        let mut locs = Vec::with_capacity(e.stack.len().max(1));
        let frames: Vec<&str> = if e.stack.is_empty() {
            vec!["[no stack]"]
        } else {
            e.stack.iter().map(String::as_str).collect()
        };
        for f in frames {
            locs.push(p.add_named_location(f));
        }
        let s = |p: &mut Profile, k: &str, v: &str| Label {
            key: p.strings.intern(k),
            str: p.strings.intern(v),
            ..Label::default()
        };
        let n = |p: &mut Profile, k: &str, v: u64| Label {
            key: p.strings.intern(k),
            num: v.min(i64::MAX as u64) as i64,
            ..Label::default()
        };
        let labels = [
            s(&mut p, "kind", e.kind),
            s(&mut p, "task", &e.task),
            s(&mut p, "thread_name", &e.thread_name),
            s(&mut p, "site", &e.site),
            n(&mut p, "time_ms", e.time_ms),
            n(&mut p, "elapsed_ns", e.elapsed_ns),
            n(&mut p, "deadline_ns", e.deadline_ns),
            n(&mut p, "capture", u64::from(e.capture)),
            n(&mut p, "thread_id", u64::from(e.thread_id)),
        ];
        let mut labels = labels.to_vec();
        if let Some(w) = &e.waits_for {
            labels.push(s(&mut p, "waits_for", w));
        }
        if let Some(h) = &e.holds {
            labels.push(s(&mut p, "holds", h));
        }
        if !e.cycle.is_empty() {
            labels.push(s(&mut p, "cycle", &e.cycle.join(", ")));
        }
        p.push_sample(&locs, &labels, &[1]);
    }
    p
}

/// The frames of a stack as events show them, and its site.
fn stack_and_site(frames: &[crate::symbolize::Frames]) -> (Vec<String>, String) {
    let mut stack = Vec::new();
    let mut site = String::new();
    for fs in frames {
        if fs.is_empty() {
            stack.push("[unknown]".to_string());
            continue;
        }
        for f in fs.iter() {
            if site.is_empty() && super::sites::own_code(&f.name, &f.file) {
                site = format!("{}:{}", f.name, f.line);
            }
            stack.push(if f.file.is_empty() {
                f.name.to_string()
            } else {
                format!("{} ({}:{})", f.name, f.file, f.line)
            });
        }
    }
    (stack, site)
}

fn thread_name(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// A capture symbolized by `frames` (one entry per address of `c.ips`).
pub(crate) fn event_of(c: &Capture, frames: &[crate::symbolize::Frames]) -> WatchdogEvent {
    let (stack, site) = stack_and_site(frames);
    WatchdogEvent {
        kind: "stuck",
        time_ms: c.time_ms,
        task: super::stats::task_name(c.task).unwrap_or("?").to_string(),
        thread_name: thread_name(c.tid),
        thread_id: c.tid,
        elapsed_ns: c.elapsed_ns,
        deadline_ns: c.deadline_ns,
        capture: c.nth,
        site,
        stack,
        waits_for: None,
        holds: None,
        cycle: Vec::new(),
    }
}

/// A deadlock's events, one per thread of the cycle; `frames` symbolizes
/// a stack.
pub(crate) fn deadlock_events(
    c: &super::deadlock::DeadlockCapture,
    mut frames: impl FnMut(&[u64]) -> Vec<crate::symbolize::Frames>,
) -> Vec<WatchdogEvent> {
    let names: Vec<String> = c
        .threads
        .iter()
        .map(|(_, w, _)| thread_name(w.tid))
        .collect();
    let label = |w: &crate::sys::contention::Wait| {
        w.site
            .label()
            .unwrap_or_else(|| format!("lock at {:#x}", w.lock))
    };
    let n = c.threads.len();
    c.threads
        .iter()
        .enumerate()
        .map(|(i, (waited, w, ips))| {
            let (stack, site) = stack_and_site(&frames(ips));
            // Thread i holds what the thread before it in the cycle waits on.
            let before = &c.threads[(i + n - 1) % n].1;
            WatchdogEvent {
                kind: "deadlock",
                time_ms: c.time_ms,
                // Another thread's task is its own thread-local: not known here.
                task: String::new(),
                thread_name: names[i].clone(),
                thread_id: w.tid,
                elapsed_ns: *waited,
                deadline_ns: 0,
                capture: 1,
                site,
                stack,
                waits_for: Some(label(w)),
                holds: Some(label(before)),
                cycle: names.clone(),
            }
        })
        .collect()
}

/// A stalled holder's event: `"stuck"`, no task, the lock it holds.
pub(crate) fn stall_event(
    c: &super::deadlock::StallCapture,
    frames: &[crate::symbolize::Frames],
) -> WatchdogEvent {
    let (stack, site) = stack_and_site(frames);
    WatchdogEvent {
        kind: "stuck",
        time_ms: c.time_ms,
        task: String::new(),
        thread_name: thread_name(c.tid),
        thread_id: c.tid,
        elapsed_ns: c.stalled_ns,
        deadline_ns: 0,
        capture: 1,
        site,
        stack,
        waits_for: None,
        holds: Some(
            c.wait
                .site
                .label()
                .unwrap_or_else(|| format!("lock at {:#x}", c.wait.lock)),
        ),
        cycle: Vec::new(),
    }
}
