//! Per-thread figures of each window: every thread's CPU time, run-queue
//! delay (time runnable but waiting for a CPU) and voluntary and
//! involuntary context switches over the window, read from
//! `/proc/self/task/TID/schedstat` and `status`, as the `threads:*`
//! profile types — one sample per thread, its stack the thread's name,
//! labelled `thread_name`, `thread_pool` and `thread_id`. The sampler
//! thread reads them at each window's end; the flush thread builds the
//! profile. Nothing here runs on a signal path.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_profile::{Label, Profile, thread_pool};

/// One thread's counters as the kernel keeps them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Time on a CPU, ns.
    pub cpu_ns: u64,
    /// Time runnable but waiting for a CPU, ns.
    pub delay_ns: u64,
    /// Switches out because the thread blocked or slept.
    pub voluntary: u64,
    /// Switches out because the scheduler preempted it.
    pub involuntary: u64,
}

/// One thread's counters over a window.
#[derive(Clone, Debug)]
pub struct ThreadDelta {
    /// Its id.
    pub tid: u32,
    /// Its name.
    pub name: String,
    /// What its counters grew by.
    pub counts: Counts,
}

/// Thread `tid`'s CPU time so far (its schedstat's first field).
pub fn read_cpu(tid: u32) -> Option<u64> {
    let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    sched.split_whitespace().next()?.parse().ok()
}

/// Thread `tid`'s CPU time in user mode so far, from `stat`'s `utime`
/// (in USER_HZ ticks, 100 a second on Linux whatever the kernel's HZ).
pub fn read_user_cpu(tid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = after_comm.split(' ').nth(11)?.parse().ok()?;
    Some(ticks * 10_000_000)
}

/// Whether thread `tid` blocks SIGPROF (its `SigBlk` mask): it is not
/// sampled, by its own choice.
pub fn blocks_sigprof(tid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        // SIGPROF is signal 27: bit 26.
        .is_some_and(|mask| mask & (1 << 26) != 0)
}

/// The counters of thread `tid`, if it is alive and they are readable.
pub fn read(tid: u32) -> Option<Counts> {
    let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut f = sched.split_whitespace().map(|v| v.parse::<u64>().ok());
    let cpu_ns = f.next()??;
    let delay_ns = f.next()??;
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(Counts {
        cpu_ns,
        delay_ns,
        voluntary: field("voluntary_ctxt_switches:")?,
        involuntary: field("nonvoluntary_ctxt_switches:")?,
    })
}

/// Each thread's counters at the last window's end and as last read, to
/// take the next window's differences from. Read every second, so a
/// thread that exits within a window keeps what it did until its last
/// second.
#[derive(Default)]
pub struct ThreadStats {
    /// Per thread: counters at the window's start, the latest read, and
    /// its name as last read (an exited thread's is gone from `/proc`).
    seen: HashMap<u32, (Counts, Counts, String)>,
}

impl ThreadStats {
    /// Reads every live thread's counters (a thread seen for the first
    /// time counts from its start: it began within the window, or this
    /// is the first read).
    pub fn refresh(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(c) = read(tid) {
                let comm = || {
                    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                        .map(|s| s.trim_end().to_string())
                        .unwrap_or_default()
                };
                let e = self
                    .seen
                    .entry(tid)
                    .or_insert_with(|| (Counts::default(), Counts::default(), comm()));
                // A reused id: counters that went down are a new thread.
                if c.cpu_ns < e.1.cpu_ns {
                    *e = (Counts::default(), c, comm());
                } else {
                    e.1 = c;
                    // Threads name themselves after they start.
                    e.2 = comm();
                }
            }
        }
    }

    /// What every thread did since the last call (threads that exited
    /// since, up to their last read), with its name from `name`; the next
    /// window starts here.
    pub fn window(&mut self, name: impl Fn(u32) -> String) -> Vec<ThreadDelta> {
        self.refresh();
        let alive: std::collections::HashSet<u32> = std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for (&tid, (start, last, first_name)) in &self.seen {
            let d = Counts {
                cpu_ns: last.cpu_ns.saturating_sub(start.cpu_ns),
                delay_ns: last.delay_ns.saturating_sub(start.delay_ns),
                voluntary: last.voluntary.saturating_sub(start.voluntary),
                involuntary: last.involuntary.saturating_sub(start.involuntary),
            };
            if d != Counts::default() || alive.contains(&tid) {
                let n = if alive.contains(&tid) {
                    name(tid)
                } else {
                    String::new()
                };
                out.push(ThreadDelta {
                    tid,
                    name: if n.is_empty() { first_name.clone() } else { n },
                    counts: d,
                });
            }
        }
        self.seen.retain(|tid, _| alive.contains(tid));
        for (start, last, _) in self.seen.values_mut() {
            *start = *last;
        }
        out.sort_by_key(|d| d.tid);
        out
    }
}

/// The `threads` profile of a window from `start` to `end`: one sample per
/// thread, values cpu, run delay (ns), voluntary and involuntary switches.
pub fn build(threads: &[ThreadDelta], start: SystemTime, end: SystemTime) -> Profile {
    let mut p = Profile::with_sample_types(&[
        ("cpu", "nanoseconds"),
        ("run_delay", "nanoseconds"),
        ("voluntary_switches", "count"),
        ("involuntary_switches", "count"),
    ]);
    p.period_type = Some(p.value_type("wall", "nanoseconds"));
    let ns = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    };
    p.time_nanos = ns(start);
    p.duration_nanos = (ns(end) - ns(start)).max(0);
    p.period = p.duration_nanos;
    p.default_sample_type = p.strings.intern("cpu");
    let keys = [
        p.strings.intern("thread_name"),
        p.strings.intern("thread_pool"),
        p.strings.intern("thread_id"),
    ];
    for t in threads {
        let name = if t.name.is_empty() {
            format!("tid-{}", t.tid)
        } else {
            t.name.clone()
        };
        let loc = p.add_named_location(&name);
        let fname = p.strings.intern(&name);
        let labels = [
            Label {
                key: keys[0],
                str: fname,
                ..Label::default()
            },
            Label {
                key: keys[1],
                str: p.strings.intern(&thread_pool(&name)),
                ..Label::default()
            },
            Label {
                key: keys[2],
                str: p.strings.intern(&t.tid.to_string()),
                ..Label::default()
            },
        ];
        let c = t.counts;
        p.push_sample(
            &[loc],
            &labels,
            &[
                c.cpu_ns as i64,
                c.delay_ns as i64,
                c.voluntary as i64,
                c.involuntary as i64,
            ],
        );
    }
    p
}
