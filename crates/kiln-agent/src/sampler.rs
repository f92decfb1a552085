//! The sampler thread: notices threads as they come and go (arming and
//! releasing their timers), keeps the readable-memory table fresh, drains
//! the sample buffer into the current window's counts, and hands each
//! finished window to the flush thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use kiln_profile::intern::SliceTable;

use crate::config::{DRAIN_INTERVAL, THREAD_SCAN_INTERVAL};
use crate::sys::engine::{PerfEvent, ThreadTimer, set_itimer};
use crate::sys::{Shared, regions::parse_maps};
use crate::{Counters, Engine};

/// Marks a stack the walk cut at the depth limit.
pub const TRUNCATED: u64 = u64::MAX;

/// One window's samples, folded.
pub struct Window {
    /// Wall-clock start.
    pub start: SystemTime,
    /// Wall-clock end.
    pub end: SystemTime,
    /// Stacks of raw addresses, leaf first; a trailing [`TRUNCATED`] marks a cut.
    pub stacks: SliceTable<u64>,
    /// Samples per (thread id, stack index).
    pub counts: HashMap<(u32, u32), u64>,
    /// Names of the threads seen.
    pub names: HashMap<u32, String>,
}

impl Window {
    fn new(start: SystemTime) -> Self {
        Window {
            start,
            end: start,
            stacks: SliceTable::default(),
            counts: HashMap::new(),
            names: HashMap::new(),
        }
    }
}

/// What keeps a thread sampled; dropping it disarms the thread. The
/// fields are never read, only owned.
enum Arm {
    Perf(#[allow(dead_code)] PerfEvent),
    Timer(#[allow(dead_code)] ThreadTimer),
    None,
}

struct Thread {
    name: String,
    _arm: Arm,
}

/// What the sampler needs to run.
pub struct SamplerConfig {
    /// The engine chosen (never `Auto`).
    pub engine: Engine,
    /// Perf events must exclude kernel time.
    pub perf_user_only: bool,
    /// Sampling period in nanoseconds.
    pub period_ns: u64,
    /// Window length.
    pub window: Duration,
}

/// Runs until `stop` receives (or disconnects); then disarms every timer,
/// drains once more and sends the partial window.
pub fn run(
    shared: &'static Shared,
    cfg: SamplerConfig,
    counters: Arc<Counters>,
    stop: Receiver<()>,
    windows: SyncSender<Window>,
) {
    let mut threads: HashMap<u32, Thread> = HashMap::new();
    let mut window = Window::new(SystemTime::now());
    let mut window_end = Instant::now() + cfg.window;
    let mut last_scan = Instant::now() - THREAD_SCAN_INTERVAL;
    let mut last_maps = None;
    let mut buf = Vec::with_capacity(crate::sys::ring::MAX_DEPTH + 1);
    if cfg.engine == Engine::Itimer
        && let Err(e) = set_itimer(cfg.period_ns)
    {
        counters.set_error(format!("setitimer: {e}"));
    }
    shared.active.store(true, Ordering::Release);
    loop {
        let stopping = match stop.recv_timeout(DRAIN_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        if stopping {
            if cfg.engine == Engine::Itimer {
                let _ = set_itimer(0);
            }
            threads.clear();
            shared.active.store(false, Ordering::Release);
        } else if last_scan.elapsed() >= THREAD_SCAN_INTERVAL {
            last_scan = Instant::now();
            scan(shared, &cfg, &mut threads, &counters, &mut last_maps);
        }
        drain(shared, &mut window, &threads, &mut buf);
        if stopping || Instant::now() >= window_end {
            let now = SystemTime::now();
            let mut done = std::mem::replace(&mut window, Window::new(now));
            done.end = now;
            window_end = Instant::now() + cfg.window;
            if !done.counts.is_empty() {
                let send = if stopping {
                    windows.send(done).map_err(|_| ())
                } else {
                    match windows.try_send(done) {
                        Ok(()) => Ok(()),
                        Err(TrySendError::Full(_)) => Err(()),
                        Err(TrySendError::Disconnected(_)) => Err(()),
                    }
                };
                if send.is_err() {
                    counters.windows_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counters
            .threads
            .store(threads.len() as u64, Ordering::Relaxed);
        if stopping {
            return;
        }
    }
}

fn drain(shared: &Shared, window: &mut Window, threads: &HashMap<u32, Thread>, buf: &mut Vec<u64>) {
    shared.ring.drain(|s| {
        buf.clear();
        buf.extend_from_slice(&s.ips[..(s.depth as usize).max(1)]);
        if s.truncated {
            buf.push(TRUNCATED);
        }
        let stack = window.stacks.intern(buf);
        *window.counts.entry((s.tid, stack)).or_default() += u64::from(s.weight.max(1));
        window
            .names
            .entry(s.tid)
            .or_insert_with(|| match threads.get(&s.tid) {
                Some(t) => t.name.clone(),
                None => thread_name(s.tid).unwrap_or_else(|| format!("tid-{}", s.tid)),
            });
    });
}

fn thread_name(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Field 22 of `/proc/self/task/TID/stat`: when the thread started, to
/// tell a reused thread id from the thread that had it before.
fn start_time(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
}

/// How often the readable-memory table is re-read when no thread appeared.
const MAPS_REFRESH: Duration = Duration::from_secs(2);

fn scan(
    shared: &Shared,
    cfg: &SamplerConfig,
    threads: &mut HashMap<u32, Thread>,
    counters: &Counters,
    last_maps: &mut Option<Instant>,
) {
    let mut appeared = false;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    let mut alive = Vec::with_capacity(threads.len() + 8);
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
        let Some(_start) = start_time(tid) else {
            continue;
        };
        appeared = true;
        let arm = match cfg.engine {
            Engine::Perf => match PerfEvent::open(tid, cfg.period_ns, cfg.perf_user_only) {
                Ok(e) => Arm::Perf(e),
                // The thread exited between the listing and now.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
                Err(e) => {
                    counters.arm_failures.fetch_add(1, Ordering::Relaxed);
                    counters.set_error(format!("perf_event_open for thread {tid}: {e}"));
                    Arm::None
                }
            },
            Engine::Ctimer => match ThreadTimer::create(tid, cfg.period_ns) {
                Ok(t) => Arm::Timer(t),
                Err(e)
                    if e.raw_os_error() == Some(libc::ESRCH)
                        || e.raw_os_error() == Some(libc::EINVAL) =>
                {
                    continue;
                }
                Err(e) => {
                    counters.arm_failures.fetch_add(1, Ordering::Relaxed);
                    counters.set_error(format!("timer_create for thread {tid}: {e}"));
                    Arm::None
                }
            },
            Engine::Itimer | Engine::Auto => Arm::None,
        };
        let name = thread_name(tid).unwrap_or_default();
        threads.insert(tid, Thread { name, _arm: arm });
    }
    alive.sort_unstable();
    // Exited threads release their event or timer here.
    threads.retain(|tid, _| alive.binary_search(tid).is_ok());
    // The walk only needs the mappings that hold thread stacks, and those
    // appear with threads: re-read the maps then, and now and then for
    // anything else (a stack a thread switched to).
    if appeared || last_maps.is_none_or(|t| t.elapsed() >= MAPS_REFRESH) {
        if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
            shared.regions.publish(&parse_maps(&maps));
        }
        *last_maps = Some(Instant::now());
    }
}
