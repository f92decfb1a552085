//! `kiln-agent` is the profiler a service embeds to profile itself. It
//! samples CPU with one of three engines — a perf `cpu-clock` event per
//! thread, a per-thread CPU-time timer (`timer_create` on the thread's CPU
//! clock, what works in containers whose seccomp profile blocks
//! `perf_event_open`), or `setitimer(ITIMER_PROF)` — picking the best that
//! works by itself and saying why, every interval random so no periodic
//! work aliases with it; walks stacks in an async-signal-safe handler,
//! through libc, syscalls and the vDSO by each object's CFI ([`unwind`])
//! and frame pointers elsewhere; folds samples per window; symbolizes each
//! address once with its own DWARF reader; and ships a pprof profile per window to
//! any number of sinks at once: a directory, a Kiln or Pyroscope server
//! (Connect push), S3-compatible object storage. Over HTTP (its own
//! listener, or [`Agent::router`] mounted in the host's server) it starts
//! and stops on-demand sessions, serves Go's `/debug/pprof/profile`, its
//! status, a thread dump and Prometheus metrics.
//!
//! Not for: storing or querying profiles (that is `kiln-server`); the
//! agent never depends on `kiln-store` or `kiln-server`.
//!
//! ```no_run
//! let agent = kiln_agent::Agent::builder()
//!     .service("checkout")
//!     .label("region", "eu-west-1")
//!     .cpu_hz(100)
//!     .window(std::time::Duration::from_secs(10))
//!     .write_to_dir("profiles/")
//!     .start()?;
//! println!("{:?}", agent.status());
//! agent.stop()?;
//! # Ok::<(), kiln_agent::Error>(())
//! ```
//!
//! All `unsafe` lives in the `sys` module. The rooms: `builder` (the
//! public settings and `from_env`), `choose` (which engine and why),
//! `status` (counters and the status snapshot), `sampler` (the thread
//! that arms threads and folds samples), `flush` and `window` (windows to
//! pprof), `symbolize`, `ship`/`sink`/`push` (the sinks), `control`
//! (HTTP), `sys` (signals, timers, memory reads), `unwind` (the walk).

#![deny(unsafe_code)]

pub mod alloc;
mod builder;
mod choose;
mod config;
mod control;
mod flush;
mod fold;
#[cfg(feature = "push")]
pub mod push;
mod sampler;
mod session;
mod ship;
mod sink;
mod status;
mod symbolize;
pub mod sync;
#[allow(unsafe_code)]
mod sys;
pub mod task;
mod threads;
#[cfg(feature = "tracing")]
#[path = "tracing_layer.rs"]
pub mod tracing;
mod unwind;
mod wall;
mod window;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use builder::{AgentBuilder, DEFAULT_TASK_STACK_EVERY};
pub use config::{DEFAULT_CPU_HZ, DEFAULT_MAX_DEPTH, DEFAULT_WINDOW, ENV_VARS};
pub use control::{DEFAULT_PROFILE_SECONDS, MAX_PROFILE_SECONDS};
pub use session::{MAX_SESSION, MAX_SESSIONS, SessionInfo, SessionReport};
pub use ship::{
    Delivery, FIRST_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF, QUEUE_CAPACITY, REQUEST_TIMEOUT, SinkStatus,
};
pub(crate) use status::Counters;
pub use status::{AllocStatus, LockStatus, Status, WallStatus};
pub use sys::UnwindStatus;

/// How CPU samples are triggered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Engine {
    /// Perf if it opens, else Ctimer, else Itimer. The default.
    #[default]
    Auto,
    /// One perf `cpu-clock` event per thread, signalling that thread.
    Perf,
    /// One timer on each thread's CPU clock (`SIGEV_THREAD_ID`).
    Ctimer,
    /// `setitimer(ITIMER_PROF)`, process-wide: the last resort.
    Itimer,
}

/// What can go wrong configuring or running the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `KILN_*` variable has a value the agent cannot use.
    #[error("{var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A builder setting the agent cannot use.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Another agent is running in this process.
    #[error("a Kiln agent is already running in this process")]
    AlreadyRunning,
    /// No engine could be started; says why each was refused.
    #[error("no CPU sampling engine works here: {0}")]
    NoEngine(String),
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The last window could not be flushed before the deadline.
    #[error("stop: the last window was not written within {0:?}")]
    FlushTimeout(Duration),
}

static RUNNING: AtomicBool = AtomicBool::new(false);

/// What the agent's threads and the control endpoints share.
pub(crate) struct Inner {
    engine: Option<Engine>,
    engine_reason: String,
    cpu_hz: u32,
    alloc_rate: u64,
    lock_rate: u64,
    wall_hz: u32,
    pid: u32,
    counters: Arc<Counters>,
    sessions: Arc<session::Sessions>,
    ship: Arc<ship::Ship>,
    cmds: Mutex<Option<Sender<sampler::Cmd>>>,
    jobs: Mutex<Option<Sender<flush::Job>>>,
    token: Option<String>,
    control_addrs: Vec<SocketAddr>,
    /// Tells the control listeners to close.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    /// Allocation sampling's state: on only with [`alloc::Profiled`] as
    /// the global allocator, a non-zero rate and a running agent.
    pub(crate) fn alloc_status(&self, running: bool) -> AllocStatus {
        let shared = sys::shared().ok();
        let reason = if self.alloc_rate == 0 {
            "alloc_sample_bytes is 0".to_string()
        } else if !alloc::installed() {
            "the global allocator is not kiln_agent::alloc::Profiled".to_string()
        } else if !running {
            "the agent is not running".to_string()
        } else {
            String::new()
        };
        AllocStatus {
            on: reason.is_empty(),
            reason,
            sample_bytes: self.alloc_rate,
            sampled: sys::heap::SAMPLED.load(Ordering::Relaxed),
            frees: sys::heap::FREES.load(Ordering::Relaxed),
            dropped: shared.map_or(0, |s| s.heap.dropped.load(Ordering::Relaxed)),
            live_full: self.counters.live_full.load(Ordering::Relaxed),
        }
    }

    /// Lock profiling's state: on with a non-zero rate and a running
    /// agent (every [`sync`] lock reports; nothing to install).
    pub(crate) fn lock_status(&self, running: bool) -> LockStatus {
        let shared = sys::shared().ok();
        let reason = if self.lock_rate == 0 {
            "lock_sample_ns is 0".to_string()
        } else if !running {
            "the agent is not running".to_string()
        } else {
            String::new()
        };
        LockStatus {
            on: reason.is_empty(),
            reason,
            sample_ns: self.lock_rate,
            contended: sys::contention::CONTENDED.load(Ordering::Relaxed),
            sampled: sys::contention::SAMPLED.load(Ordering::Relaxed),
            dropped: shared.map_or(0, |s| s.locks.dropped.load(Ordering::Relaxed)),
        }
    }

    /// Sends an order to the sampler; false once the agent stopped.
    fn send(&self, cmd: sampler::Cmd) -> bool {
        match &*self.cmds.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(cmd).is_ok(),
            None => false,
        }
    }

    /// Sends work to the flush thread; false once the agent stopped.
    fn jobs(&self, job: flush::Job) -> bool {
        match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    fn status(&self) -> Status {
        let shared = sys::shared().ok();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let forked_child = std::process::id() != self.pid;
        // A forked child must not take the parent's locks: a thread that
        // held one at fork time does not exist here to release it.
        fn locked<T: Clone>(m: &Mutex<Option<T>>, forked_child: bool) -> Option<T> {
            if forked_child {
                None
            } else {
                m.lock().unwrap_or_else(|e| e.into_inner()).clone()
            }
        }
        let running = self.cmds.lock().map(|c| c.is_some()).unwrap_or(false);
        Status {
            engine: self.engine,
            engine_reason: self.engine_reason.clone(),
            cpu_hz: self.cpu_hz,
            active: running && self.engine.is_some() && !forked_child,
            forked_child,
            threads: load(&self.counters.threads),
            samples: shared.map_or(0, |s| load(&s.ring.written)),
            dropped: shared.map_or(0, |s| load(&s.ring.dropped)),
            leaf_only: shared.map_or(0, |s| load(&s.leaf_only)),
            ignored_signals: shared.map_or(0, |s| load(&s.ignored)),
            arm_failures: load(&self.counters.arm_failures),
            rearmed: load(&self.counters.rearmed),
            windows_written: load(&self.counters.windows_written),
            windows_dropped: load(&self.counters.windows_dropped),
            unknown_frames: load(&self.counters.unknown_frames),
            symbol_bytes: load(&self.counters.symbol_bytes),
            alloc: self.alloc_status(running && !forked_child),
            lock: self.lock_status(running && !forked_child),
            wall: WallStatus {
                hz: self.wall_hz,
                missed: load(&self.counters.wall_missed),
            },
            last_error: locked(&self.counters.last_error, forked_child),
            last_file: locked(&self.counters.last_file, forked_child),
            sinks: if forked_child {
                Vec::new()
            } else {
                self.ship.status()
            },
            sessions: if forked_child {
                Vec::new()
            } else {
                self.sessions.list()
            },
            control: self.control_addrs.iter().map(|a| a.to_string()).collect(),
            // try_lock: in a forked child the lock may be held forever.
            unwind: self
                .counters
                .unwind
                .try_lock()
                .map(|u| u.clone())
                .unwrap_or_default(),
        }
    }
}

/// A running agent. Dropping it stops sampling without waiting for the
/// last window; [`Agent::stop`] flushes it.
pub struct Agent {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

/// How long [`Agent::stop`] waits for the last window to be written and
/// shipped.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| Error::Io {
            what: format!("spawning {name}"),
            source,
        })
}

/// Binds a control address; anything but loopback needs a token.
fn bind_control(addr: &str, token: bool) -> Result<std::net::TcpListener, Error> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|e| Error::Config(format!("control address {addr:?}: {e}")))?;
    if !parsed.ip().is_loopback() && !token {
        return Err(Error::Config(format!(
            "control address {addr} is not loopback: set a token (KILN_CONTROL_TOKEN) to serve it"
        )));
    }
    let l = std::net::TcpListener::bind(parsed).map_err(|source| Error::Io {
        what: format!("binding the control address {addr}"),
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| Error::Io {
        what: format!("binding the control address {addr}"),
        source,
    })?;
    Ok(l)
}

impl Agent {
    fn start(cfg: AgentBuilder) -> Result<Agent, Error> {
        if RUNNING.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyRunning);
        }
        match Self::start_inner(cfg) {
            Ok(a) => Ok(a),
            Err(e) => {
                task::disable();
                RUNNING.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    fn start_inner(cfg: AgentBuilder) -> Result<Agent, Error> {
        let counters = Arc::new(Counters::default());
        let pid = std::process::id();
        let service = if cfg.service.is_empty() {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "unknown".into())
        } else {
            cfg.service.clone()
        };
        let instance = cfg.instance.clone().unwrap_or_else(config::hostname);
        let ship = Arc::new(ship::Ship::new(
            &ship::Targets {
                dirs: cfg.dirs.clone(),
                push: cfg.push.clone(),
                s3: cfg.s3.clone(),
                push_token: cfg.push_token.clone(),
                tenant: cfg.tenant.clone(),
            },
            service.clone(),
            instance.clone(),
            cfg.labels.clone(),
            counters.clone(),
        )?);
        let listeners = cfg
            .control
            .iter()
            .map(|a| bind_control(a, cfg.control_token.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        let control_addrs = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();

        let shared = sys::shared().map_err(|source| Error::Io {
            what: "installing the SIGPROF handler".into(),
            source,
        })?;
        shared.max_depth.store(cfg.max_depth, Ordering::Relaxed);
        // The stack walk's tables, before the first sample (an allocation
        // sampled right after the start walks stacks too).
        sys::refresh_tables(shared);
        // Allocations are sampled from the moment `start` returns, not
        // from when the sampler thread first runs: the heap ring holds
        // what they record until it drains.
        sys::heap::RATE.store(cfg.alloc_sample_bytes, Ordering::Relaxed);
        sys::contention::RATE.store(cfg.lock_sample_ns, Ordering::Relaxed);
        let period_ns = if cfg.cpu_hz == 0 {
            0
        } else {
            1_000_000_000 / u64::from(cfg.cpu_hz)
        };
        // With continuous sampling off the engine is still chosen, for the
        // sessions the control endpoints may start.
        let choice = choose::choose_engine(cfg.engine)?;
        let engine_reason = if cfg.cpu_hz == 0 {
            format!(
                "continuous CPU sampling is off (cpu_hz = 0); sessions use {:?}: {}",
                choice.engine, choice.reason
            )
        } else {
            choice.reason.clone()
        };
        ::tracing::info!(target: "kiln_agent", engine = ?choice.engine, reason = %engine_reason, "CPU sampling engine");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("kiln-ship-io")
            .build()
            .map_err(|source| Error::Io {
                what: "starting the shipping runtime".into(),
                source,
            })?;
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let (job_tx, job_rx) = std::sync::mpsc::channel();
        let (closing, _) = tokio::sync::watch::channel(false);
        let sessions = Arc::new(session::Sessions::default());
        let inner = Arc::new(Inner {
            engine: Some(choice.engine),
            engine_reason,
            cpu_hz: cfg.cpu_hz,
            alloc_rate: cfg.alloc_sample_bytes,
            lock_rate: cfg.lock_sample_ns,
            wall_hz: cfg.wall_hz,
            pid,
            counters: counters.clone(),
            sessions: sessions.clone(),
            ship: ship.clone(),
            cmds: Mutex::new(Some(cmd_tx)),
            jobs: Mutex::new(Some(job_tx.clone())),
            token: cfg.control_token.clone(),
            control_addrs,
            closing,
        });

        let pending = Arc::new(AtomicUsize::new(0));
        let sampler_cfg = sampler::SamplerConfig {
            engine: choice.engine,
            perf_user_only: choice.perf_user_only,
            period_ns,
            window: cfg.window,
            alloc_rate: cfg.alloc_sample_bytes,
            lock_rate: cfg.lock_sample_ns,
            wall_hz: cfg.wall_hz,
            thread_stats: cfg.thread_stats,
        };
        let mut threads = Vec::new();
        let (c, p) = (counters.clone(), pending.clone());
        task::enable(cfg.task_stack_every, cfg.watchdog);
        threads.push(spawn("kiln-sampler", move || {
            sampler::run(shared, sampler_cfg, c, cmd_rx, job_tx, p)
        })?);
        let flush_ctx = flush::FlushCtx {
            service,
            instance,
            labels: cfg.labels.clone(),
            period_ns: if period_ns == 0 {
                10_000_000
            } else {
                period_ns
            },
            ship: ship.clone(),
            counters: counters.clone(),
            sessions,
            rt: rt.handle().clone(),
            pending,
            alloc_rate: cfg.alloc_sample_bytes,
            wall_hz: cfg.wall_hz,
        };
        threads.push(spawn("kiln-flush", move || flush::run(flush_ctx, job_rx))?);
        let io_inner = inner.clone();
        threads.push(spawn("kiln-ship", move || {
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..io_inner.ship.sinks.len() {
                    tasks.spawn(io_inner.ship.clone().run(i));
                }
                for l in listeners {
                    let router = control::router(io_inner.clone());
                    let mut closing = io_inner.closing.subscribe();
                    let counters = io_inner.counters.clone();
                    tasks.spawn(async move {
                        let l = match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => l,
                            Err(e) => {
                                counters.set_error(format!("control listener: {e}"));
                                return;
                            }
                        };
                        let serve = axum::serve(l, router).with_graceful_shutdown(async move {
                            let _ = closing.wait_for(|c| *c).await;
                        });
                        if let Err(e) = serve.await {
                            counters.set_error(format!("control listener: {e}"));
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
        })?);
        Ok(Agent { inner, threads })
    }

    /// What the agent is doing now.
    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// The control endpoints as an `axum` router, for a host that serves
    /// HTTP itself: `app.merge(agent.router())`. The token check applies
    /// when a token is configured.
    pub fn router(&self) -> axum::Router {
        control::router(self.inner.clone())
    }

    /// Stops sampling, flushes the partial window and open sessions to the
    /// sinks (waiting up to [`STOP_DEADLINE`] in all) and releases every
    /// timer.
    pub fn stop(mut self) -> Result<(), Error> {
        self.shutdown(STOP_DEADLINE)
    }

    fn shutdown(&mut self, deadline: Duration) -> Result<(), Error> {
        if std::process::id() != self.inner.pid {
            // A forked child has none of the parent's threads to stop.
            return Ok(());
        }
        if self.threads.is_empty() {
            return Ok(());
        }
        task::disable();
        let until = Instant::now() + deadline;
        let inner = self.inner.clone();
        // The sampler sends its last window and open sessions, then drops
        // its job sender; ours goes now, so the flush thread ends once it
        // has handed everything to the sinks.
        inner.send(sampler::Cmd::Shutdown);
        drop(inner.cmds.lock().unwrap_or_else(|e| e.into_inner()).take());
        drop(inner.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        let mut threads = std::mem::take(&mut self.threads).into_iter();
        let (sampler, flusher, io) = (threads.next(), threads.next(), threads.next());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let stopper = spawn("kiln-stop", move || {
            for t in [sampler, flusher].into_iter().flatten() {
                let _ = t.join();
            }
            inner.ship.close(until);
            let _ = inner.closing.send(true);
            if let Some(t) = io {
                let _ = t.join();
            }
            let _ = done_tx.send(());
        });
        let result = match stopper {
            Ok(_) => done_rx
                .recv_timeout(
                    until.saturating_duration_since(Instant::now()) + Duration::from_millis(200),
                )
                .map_err(|_| Error::FlushTimeout(deadline)),
            Err(e) => Err(e),
        };
        RUNNING.store(false, Ordering::Release);
        result
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Stop sampling at once; do not wait for the writer.
        let _ = self.shutdown(Duration::ZERO);
    }
}

pub(crate) fn add_labels(
    p: &mut kiln_profile::Profile,
    service: &str,
    instance: &str,
    labels: &[(String, String)],
) {
    let mut comment = format!("service_name={service} instance={instance}");
    for (k, v) in labels {
        comment.push_str(&format!(" {k}={v}"));
    }
    let c = p.strings.intern(&comment);
    p.comments.push(c);
}

/// Hooks for the crate's own integration tests (the signal path driven
/// by hand, a seccomp filter); not part of the API.
#[doc(hidden)]
pub mod testing {
    use std::sync::atomic::Ordering;

    /// Samples the signal path has written since the process started.
    pub fn samples_written() -> u64 {
        crate::sys::shared().map_or(0, |s| s.ring.written.load(Ordering::Relaxed))
    }

    /// Re-reads the loaded objects' unwind tables and stack mappings.
    pub fn refresh_tables() -> std::io::Result<crate::UnwindStatus> {
        Ok(crate::sys::refresh_tables(crate::sys::shared()?))
    }

    /// Runs the signal path's recording (stack walk included) from here,
    /// as if this thread had been interrupted at `ip`.
    #[inline(never)]
    pub fn record_here(ip: u64) -> std::io::Result<()> {
        let shared = crate::sys::shared()?;
        let (fp, sp) = crate::sys::current_frame();
        crate::sys::record(shared, crate::sys::gettid(), ip, fp, sp, 1);
        Ok(())
    }

    /// Makes `perf_event_open` fail with `EACCES` in this process, as a
    /// container's seccomp profile does.
    pub fn deny_perf_event_open() -> std::io::Result<()> {
        crate::sys::deny_perf_event_open()
    }
}
