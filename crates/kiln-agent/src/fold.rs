//! What the sampler thread folds samples into: the current window, every
//! on-demand session, the since-start tables behind `/debug/pprof/heap`
//! and `/debug/pprof/mutex`, and the set of sampled blocks still live.
//! Three buffers feed it: CPU samples from the signal handler, sampled
//! allocations and frees from the allocator, sampled lock waits from
//! [`crate::sync`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use crate::Counters;
use crate::sys::Shared;
use crate::sys::contention::{KIND_ANON, Site};
use crate::window::{TRUNCATED, Window};

/// What an on-demand session records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// CPU samples at the session's rate.
    Cpu,
    /// Allocation samples, and the blocks live at its end.
    Alloc,
    /// Sampled lock waits.
    Lock,
    /// Wall-clock samples of every thread at the session's rate.
    Wall,
}

impl Event {
    /// The name `start?event=` takes.
    pub fn name(self) -> &'static str {
        match self {
            Event::Cpu => "cpu",
            Event::Alloc => "alloc",
            Event::Lock => "lock",
            Event::Wall => "wall",
        }
    }

    /// The profile a session of this event ships as.
    pub fn profile(self) -> &'static str {
        match self {
            Event::Cpu => "process_cpu",
            Event::Alloc => "memory",
            Event::Lock => "mutex",
            Event::Wall => "wall",
        }
    }
}

/// A sampled block not freed yet.
pub struct Live {
    tid: u32,
    stack: Box<[u64]>,
    objects: f64,
    bytes: f64,
}

/// An on-demand session.
pub struct Session {
    /// Its id.
    pub id: String,
    /// What it records.
    pub event: Event,
    /// Its sampling period (CPU and wall sessions).
    pub period_ns: u64,
    /// When it ends by itself.
    pub until: Option<Instant>,
    /// Ship it to the sinks when it ends.
    pub ship: bool,
    /// Its samples.
    pub window: Window,
}

/// What the drain folds samples into, at the rate now in force.
pub struct Fold {
    /// The continuous profile's current window.
    pub window: Window,
    /// Sessions running.
    pub sessions: Vec<Session>,
    buf: Vec<u64>,
    /// The CPU period in force.
    pub period_ns: u64,
    /// Sampled blocks alive, by address.
    live: HashMap<u64, Live>,
    /// Every sampled allocation and lock wait since the start (for
    /// `/debug/pprof/heap` and `/debug/pprof/mutex`).
    pub total: Window,
    counters: Arc<Counters>,
    /// The wall-clock sampler.
    pub wall: crate::wall::WallSampler,
    /// Wall samples go to the continuous window (`wall_hz` > 0).
    pub wall_continuous: bool,
    /// CPU samples drained so far, per thread (to tell a thread whose
    /// engine went silent).
    pub cpu_samples: HashMap<u32, u64>,
}

/// Distinct rows each since-start table keeps; past it new rows are not
/// added (their samples still count in the windows).
const MAX_TOTAL_ROWS: usize = 100_000;

/// Go's `scaleHeapSample`: what a sample of an event of `size` (bytes
/// allocated, nanoseconds waited) stands for, in events and in `size`'s
/// unit, when events are sampled with probability `1 − e^(−size/rate)`.
fn scale(size: u64, rate: u64) -> (f64, f64) {
    if rate == 0 || size == 0 {
        return (1.0, size as f64);
    }
    let p = 1.0 - (-(size as f64) / rate as f64).exp();
    let k = if p > 0.0 { 1.0 / p } else { 1.0 };
    (k, k * size as f64)
}

impl Window {
    /// A window with this one's stacks, names and allocations or lock
    /// waits (not its CPU counts or live blocks).
    pub fn clone_of(&self, event: Event) -> Window {
        let mut w = Window::new(self.start);
        w.stacks = self.stacks.clone();
        w.names = self.names.clone();
        match event {
            Event::Alloc => w.allocs = self.allocs.clone(),
            Event::Lock => w.locks = self.locks.clone(),
            Event::Cpu | Event::Wall => {}
        }
        w
    }
}

/// The thread's name now, from `/proc`.
pub fn thread_name(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The names the sampler knows threads by (`None`: not known to it).
pub type Names<'a> = &'a dyn Fn(u32) -> Option<String>;

/// `tid`'s name: as the sampler knew it, else as `/proc` says now.
fn name_of(names: Names<'_>, tid: u32) -> String {
    names(tid)
        .or_else(|| thread_name(tid))
        .unwrap_or_else(|| format!("tid-{tid}"))
}

/// The walk in `s` as a stack key in `buf`.
fn stack_of(buf: &mut Vec<u64>, s: &crate::sys::ring::RawSample) {
    buf.clear();
    buf.extend_from_slice(&s.ips[..(s.depth as usize).max(1)]);
    if s.truncated {
        buf.push(TRUNCATED);
    }
    if s.span != 0 {
        buf.push(crate::window::span_mark(s.span));
    }
    if s.task != 0 {
        buf.push(crate::window::task_mark(s.task));
    }
}

impl Fold {
    /// Nothing folded yet; samples count from now.
    pub fn new(counters: Arc<Counters>) -> Fold {
        Fold {
            window: Window::new(SystemTime::now()),
            sessions: Vec::new(),
            buf: Vec::with_capacity(crate::sys::ring::MAX_DEPTH + 1),
            period_ns: 0,
            live: HashMap::new(),
            total: Window::new(SystemTime::now()),
            counters,
            wall: crate::wall::WallSampler::new(),
            wall_continuous: false,
            cpu_samples: HashMap::new(),
        }
    }

    /// Takes session `i` out, an allocation session with the blocks live
    /// now.
    pub fn close(&mut self, i: usize) -> Session {
        let mut s = self.sessions.swap_remove(i);
        if s.event == Event::Alloc {
            self.live_into(&mut s.window);
        }
        s
    }

    /// Adds every live block to `w`'s in-use table.
    pub fn live_into(&self, w: &mut Window) {
        for l in self.live.values() {
            let stack = w.stacks.intern(&l.stack);
            let e = w.inuse.entry((l.tid, stack)).or_default();
            e.0 += l.objects;
            e.1 += l.bytes;
            if let Some(n) = self
                .window
                .names
                .get(&l.tid)
                .or_else(|| self.total.names.get(&l.tid))
            {
                w.names.entry(l.tid).or_insert_with(|| n.clone());
            }
        }
    }

    /// Moves every allocation sample and free in the heap buffer into the
    /// window, the since-start table and the live set.
    fn drain_heap(&mut self, shared: &Shared, names: Names<'_>) {
        let Fold {
            window,
            sessions,
            buf,
            live,
            total,
            counters,
            ..
        } = self;
        shared.heap.drain(|s| {
            if s.kind == crate::sys::heap::KIND_FREE {
                live.remove(&s.addr);
                return;
            }
            stack_of(buf, s);
            let (objects, bytes) = scale(s.size, s.rate);
            for w in std::iter::once(&mut *window).chain(
                sessions
                    .iter_mut()
                    .filter(|x| x.event == Event::Alloc)
                    .map(|x| &mut x.window),
            ) {
                let stack = w.stacks.intern(buf);
                let e = w.allocs.entry((s.tid, stack)).or_default();
                e.0 += objects;
                e.1 += bytes;
                w.names
                    .entry(s.tid)
                    .or_insert_with(|| name_of(names, s.tid));
            }
            let stack = total.stacks.intern(buf);
            let key = (s.tid, stack);
            if total.allocs.len() < MAX_TOTAL_ROWS || total.allocs.contains_key(&key) {
                let e = total.allocs.entry(key).or_default();
                e.0 += objects;
                e.1 += bytes;
                total
                    .names
                    .entry(s.tid)
                    .or_insert_with(|| name_of(names, s.tid));
            }
            if live.len() < crate::alloc::MAX_LIVE {
                // A block at an address already live was freed unseen
                // (its free event was lost): the new one replaces it.
                live.insert(
                    s.addr,
                    Live {
                        tid: s.tid,
                        stack: buf.as_slice().into(),
                        objects,
                        bytes,
                    },
                );
            } else {
                // Not tracked: its free need not be reported.
                crate::sys::heap::take(s.addr);
                counters.live_full.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Moves every sampled lock wait into the window, the lock sessions
    /// and the since-start table.
    fn drain_locks(&mut self, shared: &Shared, names: Names<'_>) {
        let Fold {
            window,
            sessions,
            buf,
            total,
            ..
        } = self;
        shared.locks.drain(|s| {
            stack_of(buf, s);
            let (count, ns) = scale(s.size, s.rate);
            let label: Option<Arc<str>> = match s.kind {
                KIND_ANON => None,
                k => Site::from_raw(k, s.addr, s.weight).label().map(Arc::from),
            };
            let add = |w: &mut Window, bounded: bool| {
                let stack = w.stacks.intern(buf);
                let key = (s.tid, stack, label.clone());
                if bounded && w.locks.len() >= MAX_TOTAL_ROWS && !w.locks.contains_key(&key) {
                    return;
                }
                let e = w.locks.entry(key).or_default();
                e.0 += count;
                e.1 += ns;
                w.names
                    .entry(s.tid)
                    .or_insert_with(|| name_of(names, s.tid));
            };
            add(window, false);
            for sess in sessions.iter_mut().filter(|x| x.event == Event::Lock) {
                add(&mut sess.window, false);
            }
            add(total, true);
        });
    }

    /// The wall sampler's rate now: the continuous profile's, or the
    /// fastest wall session's (0: none).
    pub fn wall_hz(&self, continuous_hz: u32) -> u32 {
        self.sessions
            .iter()
            .filter(|s| s.event == Event::Wall && s.period_ns > 0)
            .map(|s| (1_000_000_000 / s.period_ns) as u32)
            .chain(self.wall_continuous.then_some(continuous_hz))
            .max()
            .unwrap_or(0)
    }

    /// One wall-clock tick over `threads`, if one is due.
    pub fn wall_tick(&mut self, hz: u32, threads: &[u32], names: Names<'_>) {
        if hz == 0 || !self.wall.due(std::time::Instant::now()) {
            return;
        }
        let waiting = crate::sys::contention::waiting();
        let Fold {
            window,
            sessions,
            wall,
            wall_continuous,
            ..
        } = self;
        wall.tick(hz, threads, &waiting, |ws| {
            fold_wall(window, sessions, *wall_continuous, &ws, names)
        });
    }

    /// Moves the sampled stacks of task starts and I/O calls into the
    /// window, keyed by (task, I/O kind or 0, stack); the flush thread
    /// reduces each stack to its site.
    fn drain_sites(&mut self, shared: &Shared) {
        let Fold { window, buf, .. } = self;
        shared.sites.drain(|s| {
            stack_of(buf, s);
            // The task is the key's; the stack keeps only frames.
            while buf.last().is_some_and(|&a| crate::window::is_mark(a)) {
                buf.pop();
            }
            if window.sites.len() >= MAX_TOTAL_ROWS {
                return;
            }
            let stack = window.stacks.intern(buf);
            *window
                .sites
                .entry((s.addr as u32, s.size as u32, stack))
                .or_default() += 1;
        });
    }

    /// Folds the stacks threads answered the wall sampler with.
    fn drain_wall(&mut self, shared: &Shared, names: Names<'_>) {
        let Fold {
            window,
            sessions,
            buf,
            wall,
            wall_continuous,
            ..
        } = self;
        shared.wall.drain(|s| {
            stack_of(buf, s);
            wall.answered(s.tid, buf, |ws| {
                fold_wall(window, sessions, *wall_continuous, &ws, names)
            });
        });
    }

    /// Moves every sample in the buffers into the window (CPU samples
    /// when the continuous profile is on) and into every session.
    pub fn drain(&mut self, shared: &Shared, continuous: bool, names: Names<'_>) {
        self.drain_heap(shared, names);
        self.drain_sites(shared);
        self.drain_locks(shared, names);
        self.drain_wall(shared, names);
        let Fold {
            window,
            sessions,
            buf,
            period_ns,
            cpu_samples,
            ..
        } = self;
        shared.ring.drain(|s| {
            *cpu_samples.entry(s.tid).or_default() += 1;
            stack_of(buf, s);
            let weight = u64::from(s.weight.max(1));
            let ns = weight * *period_ns;
            let add = |w: &mut Window| {
                let stack = w.stacks.intern(buf);
                let c = w.counts.entry((s.tid, stack)).or_default();
                c.0 += weight;
                c.1 += ns;
                w.names
                    .entry(s.tid)
                    .or_insert_with(|| name_of(names, s.tid));
            };
            if continuous {
                add(window);
            }
            for sess in sessions.iter_mut().filter(|x| x.event == Event::Cpu) {
                add(&mut sess.window);
            }
        });
    }
}

/// One wall sample into the window (when the continuous wall profile is
/// on) and every wall session.
fn fold_wall(
    window: &mut Window,
    sessions: &mut [Session],
    continuous: bool,
    ws: &crate::wall::WallSample<'_>,
    names: Names<'_>,
) {
    let add = |w: &mut Window| {
        let stack = w.stacks.intern(ws.stack);
        let e = w.wall.entry((ws.tid, stack, ws.state)).or_default();
        e.0 += 1;
        e.1 += ws.ns;
        w.names
            .entry(ws.tid)
            .or_insert_with(|| name_of(names, ws.tid));
    };
    if continuous {
        add(window);
    }
    for s in sessions.iter_mut().filter(|s| s.event == Event::Wall) {
        add(&mut s.window);
    }
}
