//! The wall-clock sampler, run by the sampler thread: at `wall_hz` (each
//! interval drawn uniformly from half to one and a half periods, so no
//! periodic work keeps a phase with it) every thread of the process is
//! sampled, on or off a CPU, weighted by the real time since its last
//! sample and labelled `thread_state`: `running`, `runnable` (it waited
//! for a CPU more than it ran), `sleeping`, `blocked` (uninterruptible,
//! `D`) or `lock` (waiting on a [`crate::sync`] lock). Its state comes
//! from `/proc/self/task/TID/schedstat` (CPU time, run delay, times run;
//! one `pread` of a file kept open) and, only when the thread ran since,
//! `stat`; its stack from its own signal handler, asked without waiting
//! ([`crate::sys::wall`]) — and only when it ran since its last sample:
//! a thread that did not run is where it was, so its last stack is
//! reused and a process of hundreds of idle threads costs a read each.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// What a thread was doing when sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// On a CPU.
    Running,
    /// Ready, waiting for a CPU.
    Runnable,
    /// Asleep (in a system call, a sleep, a condition variable).
    Sleeping,
    /// In uninterruptible sleep (disk I/O, page faults).
    Blocked,
    /// Waiting on a `kiln_agent::sync` lock.
    Lock,
}

impl State {
    /// The `thread_state` label.
    pub fn label(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Runnable => "runnable",
            State::Sleeping => "sleeping",
            State::Blocked => "blocked",
            State::Lock => "lock",
        }
    }
}

/// Files kept open between samples at most (a thread's `schedstat`,
/// then its `stat`): 512, or an eighth of the process's descriptor limit
/// if that is less (128 under the common 1,024) — the host's descriptors
/// are its own. Past it, files are opened at each read.
fn max_open() -> usize {
    crate::sys::wall::fd_limit().map_or(64, |n| ((n / 8) as usize).min(512))
}

/// One thread as the wall sampler last saw it.
struct Seen {
    schedstat: Option<File>,
    stat: Option<File>,
    cpu_ns: u64,
    delay_ns: u64,
    runs: u64,
    /// Its state letter from `stat`, as last read.
    letter: u8,
    at: Instant,
    /// Its last stack, leaf first (`None`: never answered).
    stack: Option<Box<[u64]>>,
    /// A stack was asked for: its state and weight, and when.
    pending: Option<(State, u64, Instant)>,
    /// Ticks in a row it did not run.
    idle: u32,
    /// The state of its last sample.
    state: State,
    /// It was signalled at the last tick: its handler's own run (one
    /// wake, microseconds of CPU) is not the thread running.
    signalled: bool,
}

/// CPU time a wall request's handler may take on the thread it
/// interrupts without the thread counting as having run.
const HANDLER_NS: u64 = 200_000;
/// A thread that did not run for this long (and at least 4 ticks) is
/// looked at one tick in [`BACKOFF`] only; when it is seen to have run,
/// all but one period of the time since goes to the state it was in. Long
/// enough that periodic work (a thread waking every 100 ms) is never
/// backed off, so its short runs are not lost between looks.
const IDLE_AFTER: Duration = Duration::from_millis(500);
/// See [`IDLE_AFTER`].
const BACKOFF: u64 = 4;

/// A sample ready to fold: thread, stack, state, nanoseconds it stands
/// for.
pub struct WallSample<'a> {
    /// Thread id.
    pub tid: u32,
    /// Leaf first.
    pub stack: &'a [u64],
    /// What it was doing.
    pub state: State,
    /// Real time it stands for.
    pub ns: u64,
}

/// The sampler's state across ticks.
pub struct WallSampler {
    seen: HashMap<u32, Seen>,
    next: Instant,
    rng: u64,
    open: usize,
    max_open: usize,
    ticks: u64,
    /// Stacks asked for and not answered by the next tick (the thread
    /// blocks the signal, or exited): their samples keep the thread's
    /// last stack, or are dropped when it has none.
    pub missed: u64,
}

fn schedstat(file: &mut Option<File>, tid: u32, keep: bool) -> Option<(u64, u64, u64)> {
    let mut buf = [0u8; 96];
    let n = match file {
        Some(f) => f.read_at(&mut buf, 0).ok()?,
        None => {
            let f = File::open(format!("/proc/self/task/{tid}/schedstat")).ok()?;
            let n = f.read_at(&mut buf, 0).ok()?;
            if keep {
                *file = Some(f);
            }
            n
        }
    };
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// The state letter of `stat` (after the command's closing parenthesis),
/// from `file` if open (else opened, and kept if `keep`).
fn state_letter(file: &mut Option<File>, tid: u32, keep: bool) -> Option<u8> {
    // The name is at most 16 bytes: the letter is within the first 64.
    let mut buf = [0u8; 64];
    let n = match file {
        Some(f) => f.read_at(&mut buf, 0).ok()?,
        None => {
            let f = File::open(format!("/proc/self/task/{tid}/stat")).ok()?;
            let n = f.read_at(&mut buf, 0).ok()?;
            if keep {
                *file = Some(f);
            }
            n
        }
    };
    let stat = &buf[..n];
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

impl WallSampler {
    /// A sampler whose first tick is due now.
    pub fn new() -> WallSampler {
        WallSampler {
            seen: HashMap::new(),
            next: Instant::now(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()),
            open: 0,
            max_open: max_open(),
            ticks: 0,
            missed: 0,
        }
    }

    /// Whether a tick is due at `hz`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// How long until the next tick is due.
    pub fn until_due(&self, now: Instant) -> Duration {
        self.next.saturating_duration_since(now)
    }

    fn schedule(&mut self, now: Instant, hz: u32) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let period = 1e9 / f64::from(hz.max(1));
        let u = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        self.next = now + Duration::from_nanos((period * (0.5 + u)) as u64);
    }

    /// One tick over `threads` (the process's threads but the sampler's
    /// own): samples of threads that did not run go to `emit` now; those
    /// that ran are signalled for their stack, answered into the wall
    /// ring and folded by [`WallSampler::answered`]. `waiting`: threads
    /// waiting on a lock now.
    pub fn tick(
        &mut self,
        hz: u32,
        threads: &[u32],
        waiting: &[u32],
        mut emit: impl FnMut(WallSample<'_>),
    ) {
        let now = Instant::now();
        self.schedule(now, hz);
        self.ticks += 1;
        let period_ns = 1_000_000_000 / u64::from(hz.max(1));
        self.seen.retain(|tid, s| {
            let alive = threads.binary_search(tid).is_ok();
            if !alive {
                self.open -= usize::from(s.schedstat.is_some()) + usize::from(s.stat.is_some());
            }
            alive
        });
        for &tid in threads {
            let keep = self.open < self.max_open;
            let s = match self.seen.get_mut(&tid) {
                Some(s) => s,
                None => {
                    let mut f = None;
                    let Some((cpu_ns, delay_ns, runs)) = schedstat(&mut f, tid, keep) else {
                        continue;
                    };
                    if f.is_some() {
                        self.open += 1;
                    }
                    let mut stat = None;
                    let letter = state_letter(&mut stat, tid, self.open < self.max_open);
                    self.open += usize::from(stat.is_some());
                    // First seen: a baseline, sampled from the next tick.
                    self.seen.insert(
                        tid,
                        Seen {
                            schedstat: f,
                            stat,
                            cpu_ns,
                            delay_ns,
                            runs,
                            letter: letter.unwrap_or(b'S'),
                            at: now,
                            stack: None,
                            pending: None,
                            idle: 0,
                            state: State::Sleeping,
                            signalled: false,
                        },
                    );
                    continue;
                }
            };
            if let Some((state, ns, _)) = s.pending.take() {
                // Asked at the last tick and not answered.
                self.missed += 1;
                if let Some(stack) = &s.stack {
                    emit(WallSample {
                        tid,
                        stack,
                        state,
                        ns,
                    });
                }
            }
            let idle_ticks = ((IDLE_AFTER.as_nanos() as u64 / period_ns) as u32).max(4);
            if s.idle >= idle_ticks && !(self.ticks + u64::from(tid)).is_multiple_of(BACKOFF) {
                continue;
            }
            let Some((cpu_ns, delay_ns, runs)) = schedstat(&mut s.schedstat, tid, false) else {
                // Gone (or its id reused): seen afresh at the next tick.
                self.open -= usize::from(s.schedstat.is_some()) + usize::from(s.stat.is_some());
                self.seen.remove(&tid);
                continue;
            };
            let mut ns = now.duration_since(s.at).as_nanos() as u64;
            // Anything that ran may have changed state: its letter is read
            // again. It moved (a new stack is asked for) if it ran more
            // than the handler of the last request would, or its state
            // changed.
            let touched = runs != s.runs || cpu_ns != s.cpu_ns;
            // A sleeper woken once by the last request, for no more than
            // its handler takes, went back to the sleep it was in.
            let our_wake = s.signalled
                && matches!(s.letter, b'S' | b'D')
                && runs <= s.runs + 1
                && cpu_ns <= s.cpu_ns + HANDLER_NS;
            let letter = if touched && !our_wake {
                state_letter(&mut s.stat, tid, false).unwrap_or(s.letter)
            } else {
                s.letter
            };
            let ran = if s.signalled {
                runs > s.runs + 1 || cpu_ns > s.cpu_ns + HANDLER_NS || letter != s.letter
            } else {
                touched
            };
            s.signalled = false;
            s.letter = letter;
            let d_cpu = cpu_ns.saturating_sub(s.cpu_ns);
            let d_delay = delay_ns.saturating_sub(s.delay_ns);
            let state = if waiting.contains(&tid) {
                State::Lock
            } else {
                match s.letter {
                    // Ready all along and never on a CPU.
                    b'R' if !ran => State::Runnable,
                    b'R' if d_delay > d_cpu => State::Runnable,
                    b'R' => State::Running,
                    b'D' => State::Blocked,
                    _ => State::Sleeping,
                }
            };
            s.cpu_ns = cpu_ns;
            s.delay_ns = delay_ns;
            s.runs = runs;
            s.at = now;
            if ran {
                if s.idle >= idle_ticks
                    && ns > period_ns + period_ns / 2
                    && let Some(stack) = &s.stack
                {
                    // Backed off: it was where it had been until lately.
                    emit(WallSample {
                        tid,
                        stack,
                        state: s.state,
                        ns: ns - period_ns,
                    });
                    ns = period_ns;
                }
                s.idle = 0;
            } else {
                s.idle = s.idle.saturating_add(1);
            }
            s.state = state;
            match (&s.stack, ran) {
                (Some(stack), false) => emit(WallSample {
                    tid,
                    stack,
                    state,
                    ns,
                }),
                _ => match crate::sys::wall::request(tid) {
                    Ok(()) => {
                        s.pending = Some((state, ns, now));
                        s.signalled = true;
                    }
                    Err(_) => self.missed += 1,
                },
            }
        }
    }

    /// Thread `tid` answered with `stack`: its pending sample goes to
    /// `emit`.
    pub fn answered(&mut self, tid: u32, stack: &[u64], mut emit: impl FnMut(WallSample<'_>)) {
        let Some(s) = self.seen.get_mut(&tid) else {
            return;
        };
        let Some((state, ns, _)) = s.pending.take() else {
            return;
        };
        s.stack = Some(stack.into());
        emit(WallSample {
            tid,
            stack,
            state,
            ns,
        });
    }
}
