//! Tasks: every operation a service performs, timed and split. A
//! [`Task`] guard from [`start`] times one operation on the calling
//! thread: its latency, the thread's CPU time while it runs, the time
//! inside [`io`] per kind, and the rest ("other": run-queue delay, locks,
//! nested tasks, untracked blocking). Nested tasks attribute to the
//! innermost: its CPU and I/O are its own, not its parent's. While a task
//! runs, every sample the agent takes on its thread (CPU, wall, memory,
//! locks) carries the `task` label. Every `task_stack_every`-th operation
//! of a task, and of its I/O calls, records the calling stack; the flush
//! thread reduces it to a site key. Without a running agent each call is
//! one relaxed load.
//!
//! The thread's CPU clock is a system call (about 200 ns; the vDSO does
//! not serve it), twice per task. A thread that starts tasks less than
//! [`CPU_EVERY_NS`] apart on average reads it for a random one in `k` of
//! its outermost tasks (with everything nested in them), `k` the ratio of
//! that gap to the mean gap, and counts each read `k` times: an unbiased
//! estimate (Horvitz–Thompson) at any rate, with at most ~20,000 clock
//! pairs a second per thread. Slower threads read it for every task.
//! `io` calls inside a task whose CPU is read are paced the same way, on
//! their own.
//!
//! Per task the figures are cumulative atomics ([`stats`]); each window
//! ships their growth as the `tasks` profile
//! ([`kiln_profile::tasks`]), and `/metrics` exports them as
//! `kiln_task_*`. The async form, one task per `tracing` span, is
//! [`crate::tracing`].

pub(crate) mod deadlock;
pub(crate) mod sites;
pub(crate) mod stats;
pub(crate) mod watchdog;

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

pub(crate) use stats::{TaskStats, kind_id, stats_of};

/// On while an agent runs.
static ON: AtomicBool = AtomicBool::new(false);
/// Every Nth operation records its stack (0: none).
static STACK_EVERY: AtomicU32 = AtomicU32::new(0);
/// Default deadline in ns for tasks without one (0: none).
static DEFAULT_DEADLINE_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Deepest nesting tracked on one thread; deeper tasks are not timed.
pub const MAX_NESTING: usize = 64;
/// A thread whose outermost tasks start closer together than this on
/// average (ns) reads its CPU clock on a random share of them (module
/// doc).
pub const CPU_EVERY_NS: u64 = 50_000;

thread_local! {
    /// The innermost task's id on this thread (0: none). Read by the
    /// signal handler: a `const`-initialised `Cell` without a destructor
    /// is a plain thread-local word, readable from a handler.
    static CURRENT: Cell<u32> = const { Cell::new(0) };
    /// The tasks running on this thread, outermost first.
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
    /// The root `tracing` span entered on this thread ([`crate::tracing`]'s
    /// number for it; 0: none), read by the signal handler as `CURRENT`.
    static SPAN: Cell<u32> = const { Cell::new(0) };
    /// When this thread's last outermost task started (ns), the mean gap
    /// between them (ns, a moving average), and a random state.
    static PACE: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
    /// The same for its `io` calls inside tasks whose CPU is read.
    static IO_PACE: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
}

/// A running operation on the thread's stack of tasks.
pub(crate) struct Frame {
    stats: &'static TaskStats,
    start_ns: u64,
    /// Its CPU counts `cpu_k` times (0: the CPU clock is not read).
    cpu_k: u32,
    cpu_start: u64,
    /// CPU of nested tasks and of `io` calls, not this task's own.
    cpu_elsewhere: u64,
    io_ns: u64,
    deadline_ns: u64,
    /// An entry of a `tracing` span, not a [`Task`] guard.
    span: bool,
    /// Its slot in the watchdog's table (tasks with a deadline).
    slot: Option<usize>,
}

/// The innermost task on the calling thread (0: none); async-signal-safe.
#[inline]
pub(crate) fn current_id() -> u32 {
    CURRENT.try_with(Cell::get).unwrap_or(0)
}

/// The root span entered on the calling thread (0: none);
/// async-signal-safe.
#[inline]
pub(crate) fn current_span() -> u32 {
    SPAN.try_with(Cell::get).unwrap_or(0)
}

/// Makes `span` the calling thread's root span; the one it replaces.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn set_span(span: u32) -> u32 {
    SPAN.try_with(|s| s.replace(span)).unwrap_or(0)
}

/// For an outermost task (or, with `IO_PACE`, an `io` call) starting at
/// `now` (ns): how many times its CPU counts, 0 for not read (module doc).
fn cpu_weight(pace: &'static std::thread::LocalKey<Cell<(u64, u64, u64)>>, now: u64) -> u32 {
    pace.try_with(|p| {
        let (last, gap, mut rng) = p.get();
        let gap = match (last, gap) {
            (0, _) => 0,
            (_, 0) => now.saturating_sub(last).max(1),
            // Eighths: a moving average over the last ten or so.
            _ => gap - gap / 8 + now.saturating_sub(last) / 8,
        };
        let k = if gap == 0 || gap >= CPU_EVERY_NS {
            1
        } else {
            CPU_EVERY_NS.div_ceil(gap.max(1)).min(u64::from(u32::MAX))
        };
        let read = k == 1 || {
            // xorshift64*, seeded from the clock on a thread's first use.
            if rng == 0 {
                rng = now | 1;
            }
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % k == 0
        };
        p.set((now, gap, rng));
        if read { k as u32 } else { 0 }
    })
    .unwrap_or(1)
}

/// Turns recording on for a starting agent, with its settings.
pub(crate) fn enable(stack_every: u32, default_deadline: Option<Duration>) {
    watchdog::clear();
    STACK_EVERY.store(stack_every, Ordering::Relaxed);
    DEFAULT_DEADLINE_NS.store(
        default_deadline.map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64),
        Ordering::Relaxed,
    );
    ON.store(true, Ordering::Release);
}

/// Turns recording off (the agent stopped); running tasks end unrecorded.
pub(crate) fn disable() {
    ON.store(false, Ordering::Release);
}

/// One operation; dropping it records it. Bound to the thread that
/// started it (not `Send`): for work that hops threads, use the
/// [`crate::tracing`] layer.
#[must_use = "a task ends when its guard is dropped"]
pub struct Task {
    /// Its place on the thread's stack of tasks, 1-based (0: not timed).
    depth: usize,
    _thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("timed", &(self.depth > 0))
            .finish()
    }
}

/// Starts the operation `name` on the calling thread; it ends when the
/// returned guard drops. Costs one relaxed load without a running agent.
pub fn start(name: &'static str) -> Task {
    start_inner(name, None)
}

/// [`start`] with a deadline: an operation that runs past it is counted
/// as stuck (`kiln_task_stuck_total`).
pub fn start_with_deadline(name: &'static str, deadline: Duration) -> Task {
    start_inner(name, Some(deadline))
}

fn start_inner(name: &'static str, deadline: Option<Duration>) -> Task {
    let off = Task {
        depth: 0,
        _thread: PhantomData,
    };
    if !ON.load(Ordering::Relaxed) {
        return off;
    }
    let stats = stats_of(name);
    let deadline_ns = deadline.map_or_else(
        || DEFAULT_DEADLINE_NS.load(Ordering::Relaxed),
        |d| d.as_nanos().min(u64::MAX as u128) as u64,
    );
    let depth = push_frame(stats, deadline_ns, false);
    let Some(depth) = depth else { return off };
    maybe_site(stats, 0, &stats.started);
    Task {
        depth,
        _thread: PhantomData,
    }
}

/// Records a site every `task_stack_every`-th tick of `counter`.
pub(crate) fn maybe_site(stats: &TaskStats, kind: u32, counter: &std::sync::atomic::AtomicU64) {
    let every = STACK_EVERY.load(Ordering::Relaxed);
    if every > 0
        && counter
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(u64::from(every))
    {
        crate::sys::record_site(stats.id, kind);
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(f) = pop_frame(self.depth)
            && ON.load(Ordering::Relaxed)
        {
            f.stats.record(f.elapsed, f.cpu, f.io_ns, f.overran());
        }
    }
}

/// What a frame measured when it came off the thread's stack.
pub(crate) struct Ended {
    pub stats: &'static TaskStats,
    pub elapsed: u64,
    /// Its own CPU (nested tasks' and I/O calls' left out).
    pub cpu: u64,
    pub io_ns: u64,
    pub deadline_ns: u64,
    /// The watchdog caught it (and counted it stuck) while it ran.
    pub caught: bool,
}

impl Ended {
    /// Ran past its deadline and the watchdog did not count it already.
    pub fn overran(&self) -> bool {
        !self.caught && self.deadline_ns > 0 && self.elapsed > self.deadline_ns
    }
}

/// Puts task `stats` on top of the calling thread's stack of tasks (a
/// span's entry when `span`); its depth, 1-based, or `None` when not
/// timed (too deep, or the thread is exiting).
pub(crate) fn push_frame(stats: &'static TaskStats, deadline_ns: u64, span: bool) -> Option<usize> {
    FRAMES
        .try_with(|frames| {
            let mut frames = frames.try_borrow_mut().ok()?;
            if frames.len() >= MAX_NESTING {
                return None;
            }
            let now = crate::sys::monotonic_ns();
            let slot = (deadline_ns > 0).then(|| {
                watchdog::watch(crate::sys::contention::my_tid(), stats.id, now, deadline_ns)
            });
            // Nested tasks are read with their outermost, or not at all.
            let cpu_k = match frames.last() {
                Some(parent) => parent.cpu_k,
                None => cpu_weight(&PACE, now),
            };
            frames.push(Frame {
                slot: slot.flatten(),
                stats,
                start_ns: now,
                cpu_k,
                cpu_start: if cpu_k > 0 {
                    crate::sys::thread_cpu_ns()
                } else {
                    0
                },
                cpu_elsewhere: 0,
                io_ns: 0,
                deadline_ns,
                span,
            });
            CURRENT.set(stats.id);
            Some(frames.len())
        })
        .ok()
        .flatten()
}

/// Takes the frame at `depth` off the thread's stack, with what it
/// measured. Frames above it (guards dropped out of order) end with it:
/// tasks among them are recorded, spans' entries dropped. `None` when
/// that frame is already gone.
pub(crate) fn pop_frame(depth: usize) -> Option<Ended> {
    if depth == 0 {
        return None;
    }
    FRAMES
        .try_with(|frames| {
            let mut frames = frames.try_borrow_mut().ok()?;
            let mut mine = None;
            while frames.len() >= depth {
                let f = frames.pop()?;
                let cpu_total = if f.cpu_k > 0 {
                    crate::sys::thread_cpu_ns().saturating_sub(f.cpu_start)
                } else {
                    0
                };
                if let Some(parent) = frames.last_mut() {
                    parent.cpu_elsewhere += cpu_total;
                }
                let caught = f.slot.is_some_and(watchdog::unwatch);
                let ended = Ended {
                    caught,
                    stats: f.stats,
                    elapsed: crate::sys::monotonic_ns().saturating_sub(f.start_ns),
                    cpu: cpu_total
                        .saturating_sub(f.cpu_elsewhere)
                        .saturating_mul(u64::from(f.cpu_k)),
                    io_ns: f.io_ns,
                    deadline_ns: f.deadline_ns,
                };
                if frames.len() + 1 == depth {
                    mine = Some(ended);
                } else if !f.span && ON.load(Ordering::Relaxed) {
                    let stuck = ended.overran();
                    ended
                        .stats
                        .record(ended.elapsed, ended.cpu, ended.io_ns, stuck);
                }
            }
            CURRENT.set(frames.last().map_or(0, |f| f.stats.id));
            mine
        })
        .ok()
        .flatten()
}

/// Time spent in one I/O call of the current task; dropping it ends the
/// call. The form of [`io`] for code that cannot be a closure.
#[must_use = "an I/O call ends when its guard is dropped"]
pub struct Io {
    /// The task's depth and the kind's id (depth 0: not timed).
    depth: usize,
    kind: u32,
    /// Start, ns (0: not timed).
    start_ns: u64,
    /// The CPU clock at the start (when read), and how many times the
    /// call's CPU counts.
    cpu_start: Option<(u64, u32)>,
    _thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("timed", &(self.depth > 0))
            .finish()
    }
}

/// Starts an I/O call of `kind` (`"sql"`, `"redis"`, `"http"`) in the
/// current task; the guard's drop ends it. Outside a task, or without a
/// running agent, it times nothing.
pub fn io_guard(kind: &'static str) -> Io {
    let mut g = Io {
        depth: 0,
        kind: 0,
        start_ns: 0,
        cpu_start: None,
        _thread: PhantomData,
    };
    if !ON.load(Ordering::Relaxed) || current_id() == 0 {
        return g;
    }
    let Some((depth, stats, read)) = FRAMES
        .try_with(|f| {
            let f = f.try_borrow().ok()?;
            let top = f.last()?;
            Some((f.len(), top.stats, top.cpu_k > 0))
        })
        .ok()
        .flatten()
    else {
        return g;
    };
    g.depth = depth;
    g.kind = kind_id(kind);
    maybe_site(stats, g.kind, &stats.io_calls);
    let now = crate::sys::monotonic_ns().max(1);
    // Read when the task's CPU is, at the I/O calls' own pace.
    let k = if read { cpu_weight(&IO_PACE, now) } else { 0 };
    g.cpu_start = (k > 0).then(|| (crate::sys::thread_cpu_ns(), k));
    g.start_ns = now;
    g
}

impl Drop for Io {
    fn drop(&mut self) {
        if self.start_ns == 0 {
            return;
        }
        let ns = crate::sys::monotonic_ns().saturating_sub(self.start_ns);
        let cpu = self.cpu_start.map_or(0, |(c, k)| {
            crate::sys::thread_cpu_ns()
                .saturating_sub(c)
                .saturating_mul(u64::from(k))
        });
        let _ = FRAMES.try_with(|frames| {
            let Ok(mut frames) = frames.try_borrow_mut() else {
                return;
            };
            if frames.len() != self.depth {
                return;
            }
            if let Some(f) = frames.last_mut() {
                f.io_ns += ns;
                // CPU inside the call is the call's, not the task's.
                f.cpu_elsewhere += cpu;
                f.stats.add_io(self.kind, ns);
            }
        });
    }
}

/// Runs `f` as an I/O call of `kind` in the current task: the time inside
/// is that kind's, not the task's CPU or other waiting.
pub fn io<R>(kind: &'static str, f: impl FnOnce() -> R) -> R {
    let _g = io_guard(kind);
    f()
}

/// The default deadline in ns (0: none).
pub(crate) fn default_deadline_ns() -> u64 {
    DEFAULT_DEADLINE_NS.load(Ordering::Relaxed)
}

/// Whether tasks are being recorded (an agent runs).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_an_agent() {
        let t = start("nothing");
        assert_eq!(t.depth, 0);
        assert_eq!(io("sql", || 7), 7);
        assert_eq!(current_id(), 0);
    }
}
