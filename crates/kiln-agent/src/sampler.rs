//! The sampler thread: notices threads as they come and go (arming and
//! releasing their timers), keeps the readable-memory table fresh, drains
//! the sample buffers into the current window and every on-demand session
//! ([`crate::fold`]), and hands each finished window or session to the
//! flush thread.
//!
//! One engine samples the process at the highest rate anyone asked for
//! (the continuous profile, or a session wanting more); every sample is
//! weighed in CPU nanoseconds at the rate it was taken, so a session at
//! 1000 Hz does not change what the continuous profile says, only how
//! finely it says it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{DRAIN_INTERVAL, THREAD_SCAN_INTERVAL};
use crate::flush::{Job, SessionJob};
use crate::fold::{Event, Fold, Session, thread_name};
use crate::sys::engine::{PerfEvent, ThreadTimer, set_itimer};
use crate::sys::{Shared, TIMER_CTIMER, TIMER_ITIMER};
use crate::window::Window;
use crate::{Counters, Engine};

/// How often every thread's counters are read (so a thread that exits
/// keeps what it did until its last second).
const THREAD_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Continuous windows waiting for the flush thread, at most; a window
/// finished while this many wait is dropped and counted.
pub const MAX_PENDING_WINDOWS: usize = 2;

/// What keeps a thread sampled; dropping it disarms the thread. The
/// fields are never read, only owned.
enum Arm {
    Perf(#[allow(dead_code)] PerfEvent),
    Timer(#[allow(dead_code)] ThreadTimer),
    None,
}

struct Thread {
    name: String,
    arm: Arm,
    /// Its CPU time and the samples it had given at the last check that
    /// its engine still fires.
    checked: Option<(u64, u64)>,
}

/// A thread whose CPU grew by this many periods with no sample since the
/// last check has lost its engine's signal (a standard signal is pending
/// at most once: one the host sent, or a request pending when the
/// overflow fired, swallows it, and the event or one-shot timer is
/// re-armed only by its handler): its engine is armed again.
const SILENT_PERIODS: u64 = 20;

/// What the sampler needs to run.
pub struct SamplerConfig {
    /// The engine chosen (never `Auto`).
    pub engine: Engine,
    /// Perf events must exclude kernel time.
    pub perf_user_only: bool,
    /// The continuous profile's period in nanoseconds; 0 when continuous
    /// sampling is off (sessions still sample).
    pub period_ns: u64,
    /// Window length.
    pub window: Duration,
    /// Mean bytes between allocation samples; 0: allocations not sampled.
    pub alloc_rate: u64,
    /// Mean nanoseconds of lock waiting between samples; 0: not sampled.
    pub lock_rate: u64,
    /// Wall-clock samples per second of the continuous profile; 0: off.
    pub wall_hz: u32,
    /// Read every thread's counters at each window's end.
    pub thread_stats: bool,
}

/// Orders to the sampler thread. Dropping every sender stops it.
pub enum Cmd {
    /// Begin an on-demand session.
    StartSession {
        /// Its id.
        id: String,
        /// What it records.
        event: Event,
        /// Its CPU sampling period (CPU sessions only).
        period_ns: u64,
        /// When it ends by itself, if ever.
        until: Option<Instant>,
        /// Ship its profile to the sinks when it ends (else only reply).
        ship: bool,
    },
    /// End a session now; its profile goes to the flush thread, with
    /// `reply` told the outcome.
    StopSession {
        /// Its id.
        id: String,
        /// Told how the session ended.
        reply: Option<tokio::sync::oneshot::Sender<crate::session::SessionOutcome>>,
    },
    /// What `event` recorded since the agent started, for
    /// `/debug/pprof/heap` (every sampled allocation and the blocks live
    /// now) and `/debug/pprof/mutex` (every sampled lock wait); built and
    /// encoded by the flush thread, which answers `reply`.
    Total {
        /// `Alloc` or `Lock`.
        event: Event,
        /// Told the gzipped pprof.
        reply: tokio::sync::oneshot::Sender<Vec<u8>>,
    },
    /// Stop the sampler (as dropping every sender does).
    Shutdown,
}

/// Runs until `cmds` receives [`Cmd::Shutdown`] (or disconnects); then
/// disarms every timer, drains once more, and sends the partial window and
/// every open session.
pub fn run(
    shared: &'static Shared,
    cfg: SamplerConfig,
    counters: Arc<Counters>,
    cmds: Receiver<Cmd>,
    jobs: Sender<Job>,
    pending: Arc<AtomicUsize>,
) {
    let mut threads: HashMap<u32, Thread> = HashMap::new();
    let continuous = cfg.period_ns > 0;
    let mut fold = Fold::new(counters.clone());
    fold.wall_continuous = cfg.wall_hz > 0;
    let me = crate::sys::gettid();
    let mut last_wall_hz = 0u32;
    let mut ring_dropped = 0u64;
    let mut tids: Vec<u32> = Vec::new();
    crate::sys::heap::RATE.store(cfg.alloc_rate, Ordering::Relaxed);
    crate::sys::contention::RATE.store(cfg.lock_rate, Ordering::Relaxed);
    let mut stats = crate::threads::ThreadStats::default();
    // Cycles of threads waiting on each other's locks.
    let mut deadlocks = crate::task::deadlock::Detector::default();
    // Each task's figures at the last window's end.
    let mut task_prev = crate::task::stats::baseline();
    let mut stats_at = Instant::now();
    if cfg.thread_stats {
        // The first window counts from here.
        stats.window(|_| String::new());
    }
    let mut window_end = Instant::now() + cfg.window;
    let mut last_scan = Instant::now() - THREAD_SCAN_INTERVAL;
    let mut last_maps = Refreshed::default();
    shared.active.store(true, Ordering::Release);
    loop {
        let mut stopping = false;
        // A wall tick due before the next drain is not made to wait.
        let wait = if last_wall_hz > 0 {
            fold.wall
                .until_due(Instant::now())
                .min(DRAIN_INTERVAL)
                .max(Duration::from_millis(1))
        } else {
            DRAIN_INTERVAL
        };
        // Nor a watched task's deadline.
        let wait = match crate::task::watchdog::next_due_ns() {
            Some(due) => {
                let now = crate::sys::monotonic_ns();
                wait.min(Duration::from_nanos(due.saturating_sub(now)))
                    .max(Duration::from_millis(1))
            }
            None => wait,
        };
        let got = cmds.recv_timeout(wait);
        // Tasks past their deadline: their stacks now, symbolized by the
        // flush thread.
        for c in crate::task::watchdog::scan(crate::sys::monotonic_ns()) {
            let _ = jobs.send(Job::Stuck(c));
        }
        match got {
            Ok(Cmd::Shutdown) | Err(RecvTimeoutError::Disconnected) => stopping = true,
            Err(RecvTimeoutError::Timeout) => {}
            Ok(Cmd::StartSession {
                id,
                event,
                period_ns,
                until,
                ship,
            }) => fold.sessions.push(Session {
                id,
                event,
                period_ns,
                until,
                ship,
                window: Window::new(SystemTime::now()),
            }),
            Ok(Cmd::Total { event, reply }) => {
                fold.drain(shared, continuous, &|t| {
                    threads.get(&t).map(|x| x.name.clone())
                });
                let mut w = fold.total.clone_of(event);
                w.end = SystemTime::now();
                if event == Event::Alloc {
                    fold.live_into(&mut w);
                }
                let _ = jobs.send(Job::Total {
                    event,
                    window: w,
                    reply,
                });
            }
            Ok(Cmd::StopSession { id, reply }) => {
                // Samples taken up to now belong to the session.
                fold.drain(shared, continuous, &|t| {
                    threads.get(&t).map(|x| x.name.clone())
                });
                match fold.sessions.iter().position(|s| s.id == id) {
                    Some(i) => finish(fold.close(i), reply, &jobs),
                    None => {
                        if let Some(r) = reply {
                            let _ = r.send(crate::session::SessionOutcome::Unknown);
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < fold.sessions.len() {
            if fold.sessions[i].until.is_some_and(|u| now >= u) {
                fold.drain(shared, continuous, &|t| {
                    threads.get(&t).map(|x| x.name.clone())
                });
                finish(fold.close(i), None, &jobs);
            } else {
                i += 1;
            }
        }
        let wanted = if stopping {
            0
        } else {
            fold.sessions
                .iter()
                .filter(|s| s.event == Event::Cpu)
                .map(|s| s.period_ns)
                .chain((cfg.period_ns > 0).then_some(cfg.period_ns))
                .min()
                .unwrap_or(0)
        };
        if wanted != fold.period_ns {
            // Samples in the buffer were taken at the old rate.
            fold.drain(shared, continuous, &|t| {
                threads.get(&t).map(|x| x.name.clone())
            });
            fold.period_ns = wanted;
            let period_ns = wanted;
            threads.clear();
            shared.perf_period.store(
                if cfg.engine == Engine::Perf {
                    period_ns
                } else {
                    0
                },
                Ordering::Relaxed,
            );
            let (timer_period, kind) = match cfg.engine {
                Engine::Ctimer => (period_ns, TIMER_CTIMER),
                Engine::Itimer => (period_ns, TIMER_ITIMER),
                _ => (0, 0),
            };
            shared.timer_kind.store(kind, Ordering::Relaxed);
            shared.timer_period.store(timer_period, Ordering::Relaxed);
            if cfg.engine == Engine::Itimer
                && let Err(e) = set_itimer(period_ns)
            {
                counters.set_error(format!("setitimer: {e}"));
            }
            last_scan = Instant::now() - THREAD_SCAN_INTERVAL;
        }
        if stopping {
            shared.active.store(false, Ordering::Release);
            crate::sys::heap::RATE.store(0, Ordering::Relaxed);
            crate::sys::contention::RATE.store(0, Ordering::Relaxed);
        } else if (fold.period_ns > 0
            || cfg.alloc_rate > 0
            || cfg.lock_rate > 0
            || fold.wall_hz(cfg.wall_hz) > 0)
            && last_scan.elapsed() >= THREAD_SCAN_INTERVAL
        {
            // Allocation, lock and wall samples walk stacks too: the
            // tables stay fresh even with no CPU sampling.
            last_scan = Instant::now();
            scan(
                shared,
                &cfg,
                fold.period_ns,
                &mut threads,
                &counters,
                &mut last_maps,
            );
        }
        fold.drain(shared, continuous, &|t| {
            threads.get(&t).map(|x| x.name.clone())
        });
        let wall_hz = if stopping {
            0
        } else {
            fold.wall_hz(cfg.wall_hz)
        };
        if wall_hz > 0 && last_wall_hz == 0 {
            // Starting again (a wall session after none): what the sampler
            // last saw is from before the gap.
            fold.wall = crate::wall::WallSampler::new();
        }
        last_wall_hz = wall_hz;
        if wall_hz > 0 {
            tids.clear();
            tids.extend(threads.keys().copied().filter(|&t| t != me));
            tids.sort_unstable();
            fold.wall_tick(wall_hz, &tids, &|t| threads.get(&t).map(|x| x.name.clone()));
        }
        counters
            .wall_missed
            .store(fold.wall.missed, Ordering::Relaxed);
        if stats_at.elapsed() >= THREAD_STATS_INTERVAL {
            stats_at = Instant::now();
            let waits = crate::task::deadlock::waits();
            for c in deadlocks.check(crate::sys::monotonic_ns(), &waits) {
                let _ = jobs.send(Job::Deadlock(c));
            }
            let after = match crate::task::default_deadline_ns() {
                0 => crate::task::deadlock::STALLED_AFTER,
                ns => Duration::from_nanos(ns),
            };
            for c in deadlocks.stalled(crate::sys::monotonic_ns(), after, &waits) {
                let _ = jobs.send(Job::Stalled(c));
            }
            if cfg.thread_stats {
                stats.refresh();
            }
            if !stopping {
                rearm_silent(
                    shared,
                    &cfg,
                    fold.period_ns,
                    &mut threads,
                    &mut fold.cpu_samples,
                    &mut ring_dropped,
                    &counters,
                );
            }
        }
        if stopping || Instant::now() >= window_end {
            let now = SystemTime::now();
            let mut done = std::mem::replace(&mut fold.window, Window::new(now));
            done.end = now;
            fold.live_into(&mut done);
            if cfg.thread_stats {
                // Names as now (threads rename themselves).
                done.threads = stats.window(|tid| thread_name(tid).unwrap_or_default());
            }
            done.tasks = crate::task::stats::window(&mut task_prev);
            window_end = Instant::now() + cfg.window;
            if !done.counts.is_empty()
                || done.has_memory()
                || !done.locks.is_empty()
                || !done.wall.is_empty()
                || !done.threads.is_empty()
                || !done.tasks.is_empty()
            {
                // Stopping waits for the last window; otherwise a writer
                // that fell behind loses windows, never the sampler's pace.
                if !stopping && pending.load(Ordering::Acquire) >= MAX_PENDING_WINDOWS {
                    counters.windows_dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    pending.fetch_add(1, Ordering::AcqRel);
                    if jobs.send(Job::Window(done)).is_err() {
                        counters.windows_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        counters
            .threads
            .store(threads.len() as u64, Ordering::Relaxed);
        if stopping {
            while !fold.sessions.is_empty() {
                finish(fold.close(0), None, &jobs);
            }
            // No one tracks the live blocks any more.
            crate::sys::heap::clear();
            return;
        }
    }
}

fn finish(
    mut s: Session,
    reply: Option<tokio::sync::oneshot::Sender<crate::session::SessionOutcome>>,
    jobs: &Sender<Job>,
) {
    s.window.end = SystemTime::now();
    let _ = jobs.send(Job::Session(SessionJob {
        id: s.id,
        event: s.event,
        period_ns: s.period_ns,
        ship: s.ship,
        window: s.window,
        reply,
    }));
}

/// Field 22 of `/proc/self/task/TID/stat`: when the thread started, to
/// tell a reused thread id from the thread that had it before.
fn start_time(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

/// When the handler's tables were last rebuilt, and the loader's
/// (adds, subs) counters then.
#[derive(Default)]
struct Refreshed {
    at: Option<Instant>,
    loaded: Option<(u64, u64)>,
}

/// How often the readable-memory table is re-read when no thread appeared.
const MAPS_REFRESH: Duration = Duration::from_secs(2);

fn scan(
    shared: &Shared,
    cfg: &SamplerConfig,
    period_ns: u64,
    threads: &mut HashMap<u32, Thread>,
    counters: &Counters,
    last_maps: &mut Refreshed,
) {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let mut alive = Vec::with_capacity(threads.len() + 8);
    let mut fresh = Vec::new();
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        alive.push(tid);
        // Thread ids are handed out cyclically, so one seen at the last
        // scan 50 ms ago is the same thread: only new ids cost a read.
        if threads.contains_key(&tid) {
            continue;
        }
        // A thread whose stat is gone has exited since the listing.
        if start_time(tid).is_some() {
            fresh.push(tid);
        }
    }
    alive.sort_unstable();
    // Exited threads release their event or timer here.
    threads.retain(|tid, _| alive.binary_search(tid).is_ok());
    // The walk reads only the mapping that holds a thread's stack, so the
    // maps are re-read before a new thread is armed (its stack is mapped
    // by now), and now and then for anything else (a stack a thread
    // switched to). A library loaded since (dlopen) needs its CFI rows at
    // once: the loader's counters are one cheap call to read.
    let loaded = crate::sys::modules_generation();
    if !fresh.is_empty()
        || last_maps.at.is_none_or(|t| t.elapsed() >= MAPS_REFRESH)
        || last_maps.loaded != Some(loaded)
    {
        last_maps.loaded = Some(loaded);
        let status = crate::sys::refresh_tables(shared);
        counters.set_unwind(status);
        last_maps.at = Some(Instant::now());
    }
    for tid in fresh {
        let Some(arm) = arm(shared, cfg, period_ns, tid, counters) else {
            continue;
        };
        let name = thread_name(tid).unwrap_or_default();
        threads.insert(
            tid,
            Thread {
                name,
                arm,
                checked: None,
            },
        );
    }
}

/// Thread `tid`'s engine at `period_ns`; `None` when the thread exited.
fn arm(
    shared: &Shared,
    cfg: &SamplerConfig,
    period_ns: u64,
    tid: u32,
    counters: &Counters,
) -> Option<Arm> {
    Some(match cfg.engine {
        _ if period_ns == 0 => Arm::None,
        Engine::Perf => match PerfEvent::open(tid, period_ns, cfg.perf_user_only) {
            Ok(e) => Arm::Perf(e),
            // The thread exited between the listing and now.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return None,
            Err(e) => {
                counters.arm_failures.fetch_add(1, Ordering::Relaxed);
                counters.set_error(format!("perf_event_open for thread {tid}: {e}"));
                Arm::None
            }
        },
        Engine::Ctimer => {
            match ThreadTimer::create(tid, period_ns, crate::sys::next_interval(shared)) {
                Ok(t) => Arm::Timer(t),
                Err(e)
                    if e.raw_os_error() == Some(libc::ESRCH)
                        || e.raw_os_error() == Some(libc::EINVAL) =>
                {
                    return None;
                }
                Err(e) => {
                    counters.arm_failures.fetch_add(1, Ordering::Relaxed);
                    counters.set_error(format!("timer_create for thread {tid}: {e}"));
                    Arm::None
                }
            }
        }
        Engine::Itimer | Engine::Auto => Arm::None,
    })
}

/// Arms again every thread whose CPU time grew by [`SILENT_PERIODS`]
/// periods since the last check with no sample from it (`samples`: per
/// thread, the CPU samples drained so far).
fn rearm_silent(
    shared: &Shared,
    cfg: &SamplerConfig,
    period_ns: u64,
    threads: &mut HashMap<u32, Thread>,
    samples: &mut HashMap<u32, u64>,
    dropped: &mut u64,
    counters: &Counters,
) {
    samples.retain(|tid, _| threads.contains_key(tid));
    // Samples the full ring dropped make any thread look silent.
    let now_dropped = shared.ring.dropped.load(Ordering::Relaxed);
    let lossy = now_dropped != *dropped;
    *dropped = now_dropped;
    if period_ns == 0 {
        return;
    }
    for (&tid, t) in threads.iter_mut() {
        if matches!(t.arm, Arm::None) {
            continue;
        }
        // A user-only perf event does not count time in the kernel.
        let cpu = if cfg.engine == Engine::Perf && cfg.perf_user_only {
            crate::threads::read_user_cpu(tid)
        } else {
            crate::threads::read_cpu(tid)
        };
        let Some(cpu) = cpu else {
            continue;
        };
        let seen = samples.get(&tid).copied().unwrap_or(0);
        if let Some((cpu0, seen0)) = t.checked
            && seen == seen0
            && !lossy
            && cpu.saturating_sub(cpu0) > SILENT_PERIODS * period_ns
            && !crate::threads::blocks_sigprof(tid)
        {
            // Dropping the old event or timer first: one engine a thread.
            t.arm = Arm::None;
            if let Some(a) = arm(shared, cfg, period_ns, tid, counters) {
                t.arm = a;
                counters.rearmed.fetch_add(1, Ordering::Relaxed);
            }
        }
        t.checked = Some((cpu, seen));
    }
}
