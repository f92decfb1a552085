//! The flush thread: turns finished windows and sessions into gzipped
//! pprof (symbolizing each address once, with a cache that lives as long
//! as the agent) and hands them to the sinks; also symbolizes thread
//! dumps, so that one cache serves everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::Counters;
use crate::fold::Event;
use crate::session::{SessionOutcome, SessionReport, Sessions};
use crate::ship::Ship;
use crate::symbolize::{Frames, Symbols};
use crate::sys::CodeMapping;
use crate::window::{self, Window};

/// How long a session's stop waits for its sinks before answering with
/// what it knows (the rest keep trying in the background).
pub const SESSION_SHIP_WAIT: Duration = Duration::from_secs(15);

/// Work for the flush thread.
pub enum Job {
    /// A finished window of the continuous profile.
    Window(Window),
    /// A finished on-demand session.
    Session(SessionJob),
    /// A task the watchdog caught past its deadline: symbolize and keep it.
    Stuck(crate::task::watchdog::Capture),
    /// A lock holder stalled outside any task: symbolize and keep it.
    Stalled(crate::task::deadlock::StallCapture),
    /// A deadlock the sampler found: symbolize and keep its events.
    Deadlock(crate::task::deadlock::DeadlockCapture),
    /// Symbolize these lookup addresses.
    Resolve {
        /// Lookup addresses (callers already minus one).
        addrs: Vec<u64>,
        /// The frames of each, in order.
        reply: oneshot::Sender<Vec<Frames>>,
    },
    /// What `event` recorded since the start, for `/debug/pprof/heap`
    /// (allocations, and blocks live now) or `/debug/pprof/mutex` (lock
    /// waits): answered as gzipped pprof.
    Total {
        /// `Alloc` or `Lock`.
        event: Event,
        /// What it recorded.
        window: Window,
        /// Told the profile.
        reply: oneshot::Sender<Vec<u8>>,
    },
}

/// A finished session.
pub struct SessionJob {
    /// Its id.
    pub id: String,
    /// What it recorded.
    pub event: Event,
    /// Its sampling period.
    pub period_ns: u64,
    /// Ship it to the sinks.
    pub ship: bool,
    /// Its samples.
    pub window: Window,
    /// Told the outcome.
    pub reply: Option<oneshot::Sender<SessionOutcome>>,
}

/// What the flush thread needs.
pub struct FlushCtx {
    /// `service_name`.
    pub service: String,
    /// `instance`.
    pub instance: String,
    /// The user's labels.
    pub labels: Vec<(String, String)>,
    /// The continuous profile's period.
    pub period_ns: u64,
    /// The sinks.
    pub ship: Arc<Ship>,
    /// Shared counters.
    pub counters: Arc<Counters>,
    /// The session registry.
    pub sessions: Arc<Sessions>,
    /// The shipping runtime, where session outcomes are awaited.
    pub rt: tokio::runtime::Handle,
    /// Continuous windows queued to this thread.
    pub pending: Arc<AtomicUsize>,
    /// Mean bytes between allocation samples (the memory profile's period).
    pub alloc_rate: u64,
    /// The wall profile's rate.
    pub wall_hz: u32,
}

/// The frames of a raw stack a thread gave (leaf first: the leaf exact,
/// callers looked up one byte into their call).
fn frames_of(
    symbols: &mut Symbols,
    code: &[CodeMapping],
    ips: &[u64],
) -> Vec<crate::symbolize::Frames> {
    let addrs: Vec<u64> = ips
        .iter()
        .enumerate()
        .map(|(i, &a)| crate::unwind::FrameAddress::at(i, a).lookup())
        .collect();
    symbols.resolve(&addrs, code);
    addrs.iter().map(|&a| symbols.get(a)).collect()
}

fn nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs until every sender of `jobs` is gone.
pub fn run(ctx: FlushCtx, jobs: Receiver<Job>) {
    let mut symbols = Symbols::new();
    let mut code = Code::default();
    for job in jobs {
        match job {
            Job::Window(w) => {
                if !w.counts.is_empty() {
                    let bytes = encode(&ctx, &w, ctx.period_ns, &mut symbols, code.now());
                    ctx.ship
                        .enqueue("process_cpu", w.start, w.end, bytes, false);
                }
                if !w.threads.is_empty() {
                    let mut p = crate::threads::build(&w.threads, w.start, w.end);
                    crate::add_labels(&mut p, &ctx.service, &ctx.instance, &ctx.labels);
                    let bytes = Bytes::from(kiln_profile::pprof::encode_gzip(&p));
                    ctx.ship.enqueue("threads", w.start, w.end, bytes, false);
                }
                if w.has_memory() {
                    let bytes = encode_event(&ctx, &w, Event::Alloc, &mut symbols, code.now());
                    ctx.ship.enqueue("memory", w.start, w.end, bytes, false);
                }
                if !w.wall.is_empty() {
                    let period = 1_000_000_000 / u64::from(ctx.wall_hz.max(1));
                    let mut p = window::build_wall(&w, period, &mut symbols, code.now());
                    crate::add_labels(&mut p, &ctx.service, &ctx.instance, &ctx.labels);
                    let bytes = Bytes::from(kiln_profile::pprof::encode_gzip(&p));
                    ctx.ship.enqueue("wall", w.start, w.end, bytes, false);
                }
                if !w.locks.is_empty() {
                    let bytes = encode_event(&ctx, &w, Event::Lock, &mut symbols, code.now());
                    ctx.ship.enqueue("mutex", w.start, w.end, bytes, false);
                }
                let events = crate::task::watchdog::take_pending();
                if !events.is_empty() {
                    let mut p = crate::task::watchdog::events_profile(
                        &events,
                        nanos(w.start),
                        nanos(w.end) - nanos(w.start),
                    );
                    crate::add_labels(&mut p, &ctx.service, &ctx.instance, &ctx.labels);
                    let bytes = Bytes::from(kiln_profile::pprof::encode_gzip(&p));
                    ctx.ship.enqueue("events", w.start, w.end, bytes, false);
                }
                if !w.tasks.is_empty() {
                    let bytes = encode_tasks(&ctx, &w, &mut symbols, code.now());
                    ctx.ship
                        .enqueue(kiln_profile::tasks::PROFILE, w.start, w.end, bytes, false);
                }
                ctx.pending.fetch_sub(1, Ordering::AcqRel);
            }
            Job::Total {
                event,
                window,
                reply,
            } => {
                let bytes = encode_event(&ctx, &window, event, &mut symbols, code.now());
                let _ = reply.send(bytes.to_vec());
            }
            Job::Session(s) => {
                let name = s.event.profile();
                let bytes = match s.event {
                    Event::Cpu => encode(&ctx, &s.window, s.period_ns, &mut symbols, code.now()),
                    Event::Wall => {
                        let mut p =
                            window::build_wall(&s.window, s.period_ns, &mut symbols, code.now());
                        crate::add_labels(&mut p, &ctx.service, &ctx.instance, &ctx.labels);
                        Bytes::from(kiln_profile::pprof::encode_gzip(&p))
                    }
                    e => encode_event(&ctx, &s.window, e, &mut symbols, code.now()),
                };
                let outcomes = if s.ship {
                    ctx.ship
                        .enqueue(name, s.window.start, s.window.end, bytes.clone(), true)
                } else {
                    Vec::new()
                };
                let mut report = SessionReport {
                    id: s.id,
                    samples: match s.event {
                        Event::Cpu => s.window.samples(),
                        Event::Alloc => s.window.allocs.len() as u64,
                        Event::Lock => s.window.locks.len() as u64,
                        Event::Wall => s.window.wall.values().map(|v| v.0).sum(),
                    },
                    bytes: bytes.len(),
                    start_ms: ms(s.window.start),
                    end_ms: ms(s.window.end),
                    shipped: Vec::new(),
                    pprof: bytes,
                };
                let sessions = ctx.sessions.clone();
                let reply = s.reply;
                ctx.rt.spawn(async move {
                    let wait = tokio::time::sleep(SESSION_SHIP_WAIT);
                    tokio::pin!(wait);
                    for rx in outcomes {
                        tokio::select! {
                            d = rx => if let Ok(d) = d { report.shipped.push(d) },
                            () = &mut wait => break,
                        }
                    }
                    sessions.done(&report);
                    if let Some(r) = reply {
                        let _ = r.send(SessionOutcome::Done(Box::new(report)));
                    }
                });
            }
            Job::Stuck(c) => {
                let frames = frames_of(&mut symbols, code.now(), &c.ips);
                crate::task::watchdog::record(crate::task::watchdog::event_of(&c, &frames));
            }
            Job::Stalled(c) => {
                let frames = frames_of(&mut symbols, code.now(), &c.ips);
                crate::task::watchdog::record(crate::task::watchdog::stall_event(&c, &frames));
            }
            Job::Deadlock(c) => {
                let events = crate::task::watchdog::deadlock_events(&c, |ips| {
                    frames_of(&mut symbols, code.now(), ips)
                });
                for e in events {
                    crate::task::watchdog::record(e);
                }
            }
            Job::Resolve { addrs, reply } => {
                symbols.resolve(&addrs, code.now());
                let _ = reply.send(addrs.iter().map(|&a| symbols.get(a)).collect());
            }
        }
        ctx.counters
            .unknown_frames
            .store(symbols.unknown, Ordering::Relaxed);
        ctx.counters
            .symbol_bytes
            .store(symbols.resident_bytes() as u64, Ordering::Relaxed);
        if let Some(e) = symbols.last_error.take() {
            ctx.counters.set_error(format!("symbolization: {e}"));
        }
    }
}

/// The process's executable mappings, re-read only when the loader's
/// list of objects changed.
#[derive(Default)]
struct Code {
    generation: Option<(u64, u64)>,
    mappings: Vec<CodeMapping>,
}

impl Code {
    fn now(&mut self) -> &[CodeMapping] {
        let g = crate::sys::modules_generation();
        if self.generation != Some(g) {
            self.generation = Some(g);
            self.mappings = crate::sys::code_mappings();
        }
        &self.mappings
    }
}

fn encode(
    ctx: &FlushCtx,
    w: &Window,
    period_ns: u64,
    symbols: &mut Symbols,
    code: &[CodeMapping],
) -> Bytes {
    let mut p = window::build(w, period_ns, symbols, code);
    crate::add_labels(&mut p, &ctx.service, &ctx.instance, &ctx.labels);
    Bytes::from(kiln_profile::pprof::encode_gzip(&p))
}

/// The window's `tasks` profile: each task's figures with its sites
/// (which also count toward `/metrics`), labelled and gzipped.
fn encode_tasks(ctx: &FlushCtx, w: &Window, symbols: &mut Symbols, code: &[CodeMapping]) -> Bytes {
    let mut sites = crate::task::sites::sites(w, symbols, code);
    let mut rows = w.tasks.clone();
    let ids: std::collections::HashMap<&str, u32> = sites
        .keys()
        .filter_map(|&id| Some((crate::task::stats::task_name(id)?, id)))
        .collect();
    for r in &mut rows {
        if let Some(s) = ids.get(r.task.as_str()).and_then(|id| sites.remove(id)) {
            crate::task::stats::add_sites(ids[r.task.as_str()], &s);
            r.sites = s;
        }
    }
    let ns = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    };
    let mut p =
        kiln_profile::tasks::tasks_profile(&rows, ns(w.start), (ns(w.end) - ns(w.start)).max(0));
    crate::add_labels(&mut p, &ctx.service, &ctx.instance, &ctx.labels);
    Bytes::from(kiln_profile::pprof::encode_gzip(&p))
}

/// The window's memory profile (`Alloc`) or lock profile (`Lock`),
/// labelled and gzipped.
fn encode_event(
    ctx: &FlushCtx,
    w: &Window,
    event: Event,
    symbols: &mut Symbols,
    code: &[CodeMapping],
) -> Bytes {
    let mut p = match event {
        Event::Lock => window::build_mutex(w, symbols, code),
        _ => window::build_memory(w, ctx.alloc_rate, symbols, code),
    };
    crate::add_labels(&mut p, &ctx.service, &ctx.instance, &ctx.labels);
    Bytes::from(kiln_profile::pprof::encode_gzip(&p))
}
