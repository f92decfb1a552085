//! The public way in: [`AgentBuilder`] with its defaults, and
//! `Agent::builder()` / `Agent::from_env()` (the `KILN_*` table in
//! `config`), each setting checked so that `start()` fails early and says
//! which one is wrong.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Agent, DEFAULT_CPU_HZ, DEFAULT_MAX_DEPTH, DEFAULT_WINDOW, Engine, Error, config, sys};

/// [`AgentBuilder::task_stack_every`]'s default.
pub const DEFAULT_TASK_STACK_EVERY: u32 = 100;

/// Builds an [`Agent`]; see the crate example.
#[derive(Clone, Debug)]
#[must_use]
pub struct AgentBuilder {
    pub(crate) service: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) cpu_hz: u32,
    pub(crate) engine: Engine,
    pub(crate) window: Duration,
    pub(crate) max_depth: usize,
    pub(crate) instance: Option<String>,
    pub(crate) push: Vec<String>,
    pub(crate) dirs: Vec<PathBuf>,
    pub(crate) s3: Vec<String>,
    pub(crate) control: Vec<String>,
    pub(crate) control_token: Option<String>,
    pub(crate) push_token: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) alloc_sample_bytes: u64,
    pub(crate) thread_stats: bool,
    pub(crate) lock_sample_ns: u64,
    pub(crate) wall_hz: u32,
    pub(crate) task_stack_every: u32,
    pub(crate) watchdog: Option<Duration>,
}

impl Default for AgentBuilder {
    fn default() -> Self {
        AgentBuilder {
            service: String::new(),
            labels: Vec::new(),
            cpu_hz: DEFAULT_CPU_HZ,
            engine: Engine::Auto,
            window: DEFAULT_WINDOW,
            max_depth: DEFAULT_MAX_DEPTH,
            instance: None,
            push: Vec::new(),
            dirs: Vec::new(),
            s3: Vec::new(),
            control: Vec::new(),
            control_token: None,
            push_token: None,
            tenant: None,
            alloc_sample_bytes: crate::alloc::DEFAULT_SAMPLE_BYTES,
            thread_stats: true,
            lock_sample_ns: crate::sync::DEFAULT_SAMPLE_NS,
            wall_hz: 0,
            task_stack_every: DEFAULT_TASK_STACK_EVERY,
            watchdog: None,
        }
    }
}

impl AgentBuilder {
    /// The `service_name` label. Default: the executable's name.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }

    /// Adds a label to every profile.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// CPU sampling rate. Default 100 Hz; 0 turns CPU sampling off.
    pub fn cpu_hz(mut self, hz: u32) -> Self {
        self.cpu_hz = hz;
        self
    }

    /// The engine. Default [`Engine::Auto`].
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Mean bytes allocated between allocation samples (each thread
    /// counts down an exponential draw of this mean). Default 512 KiB; 0
    /// turns allocation sampling off. Takes effect only with
    /// [`crate::alloc::Profiled`] as the global allocator.
    pub fn alloc_sample_bytes(mut self, bytes: u64) -> Self {
        self.alloc_sample_bytes = bytes;
        self
    }

    /// Mean nanoseconds of waiting between samples of waits on
    /// [`crate::sync`] locks (default 100 µs; a wait of `w` is sampled with
    /// probability `1 − e^(−w/n)` and weighted to match); 0 turns lock
    /// profiling off.
    pub fn lock_sample_ns(mut self, ns: u64) -> Self {
        self.lock_sample_ns = ns;
        self
    }

    /// Wall-clock samples per second: every thread, on or off a CPU,
    /// with its `thread_state`, into a `wall` profile each window.
    /// Default 0 (off); 20 is a good rate (a thread that did not run
    /// since its last sample costs one small read, not a signal).
    pub fn wall_hz(mut self, hz: u32) -> Self {
        self.wall_hz = hz;
        self
    }

    /// Per-thread CPU time, run-queue delay and voluntary / involuntary
    /// context switches each window (the `threads:*` profile types).
    /// Default on.
    pub fn thread_stats(mut self, on: bool) -> Self {
        self.thread_stats = on;
        self
    }

    /// Every `n`-th operation of each task, and of each task's I/O
    /// calls, records its stack as a site key (`module::function:line`
    /// of the innermost frame in the service's own code). Default 100; 0
    /// records none.
    pub fn task_stack_every(mut self, n: u32) -> Self {
        self.task_stack_every = n;
        self
    }

    /// The deadline of tasks started without one: an operation running
    /// longer counts as stuck. Default none.
    pub fn watchdog(mut self, deadline: Duration) -> Self {
        self.watchdog = Some(deadline);
        self
    }

    /// The profile window. Default 10 s.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Deepest stack walked, 1 to 128. Default 128.
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// The `instance` label. Default: `KILN_INSTANCE`, else the host name.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Push every window to a Kiln or Pyroscope server (Connect push API,
    /// `POST URL/push.v1.PusherService/Push`).
    pub fn push_to(mut self, url: impl Into<String>) -> Self {
        self.push.push(url.into());
        self
    }

    /// Write every window under this directory.
    pub fn write_to_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dirs.push(dir.into());
        self
    }

    /// Upload every window to S3-compatible storage, `s3://bucket/prefix`;
    /// region, credentials and endpoint from the `AWS_*` variables
    /// (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` for a local server).
    pub fn s3(mut self, url: impl Into<String>) -> Self {
        self.s3.push(url.into());
        self
    }

    /// Serve the HTTP control endpoints on this address (`host:port`; port
    /// 0 picks one, shown in `status().control`). An address other than
    /// loopback requires [`AgentBuilder::control_token`].
    pub fn control(mut self, addr: impl Into<String>) -> Self {
        self.control.push(addr.into());
        self
    }

    /// The bearer token the control endpoints require (every request,
    /// loopback included, once set). Default: `KILN_CONTROL_TOKEN`, else none.
    pub fn control_token(mut self, token: impl Into<String>) -> Self {
        self.control_token = Some(token.into());
        self
    }

    /// The bearer token sent with every push (`Authorization: Bearer`),
    /// for a server whose tenants need tokens. Default:
    /// `KILN_SERVER_TOKEN`, else none.
    pub fn push_token(mut self, token: impl Into<String>) -> Self {
        self.push_token = Some(token.into());
        self
    }

    /// The tenant pushes are stored under (`X-Scope-OrgID`). Default:
    /// `KILN_TENANT`, else the server's default tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Starts sampling and the background threads.
    pub fn start(self) -> Result<Agent, Error> {
        if self
            .control_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::Config("control token is empty".into()));
        }
        if !(1..=sys::ring::MAX_DEPTH).contains(&self.max_depth) {
            return Err(Error::Config(format!(
                "max_depth {} is not within 1..=128",
                self.max_depth
            )));
        }
        if self.cpu_hz > 10_000 {
            return Err(Error::Config(format!(
                "cpu_hz {} is above 10000",
                self.cpu_hz
            )));
        }
        Agent::start(self)
    }
}

impl Agent {
    /// A builder with the defaults.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// A builder filled from the `KILN_*` variables ([`crate::ENV_VARS`]); a
    /// malformed value is an error naming the variable.
    pub fn from_env() -> Result<AgentBuilder, Error> {
        let mut b = AgentBuilder::default();
        if let Some(s) = config::env("KILN_SERVICE", |s| Ok(s.to_string()))? {
            b.service = s;
        }
        if let Some(l) = config::env("KILN_LABELS", |s| {
            config::parse_labels(s).ok_or_else(|| "expected k=v,k=v".into())
        })? {
            b.labels = l;
        }
        if let Some(hz) = config::env("KILN_CPU_HZ", |s| {
            s.trim().parse::<u32>().map_err(|e| e.to_string())
        })? {
            b.cpu_hz = hz;
        }
        if let Some(n) = config::env("KILN_ALLOC_SAMPLE_BYTES", |s| {
            s.trim().parse::<u64>().map_err(|e| e.to_string())
        })? {
            b.alloc_sample_bytes = n;
        }
        if let Some(n) = config::env("KILN_WALL_HZ", |s| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= 1000)
                .ok_or_else(|| "expected a whole number from 0 (off) to 1000".into())
        })? {
            b.wall_hz = n;
        }
        if let Some(n) = config::env("KILN_TASK_STACK_EVERY", |s| {
            s.trim().parse::<u32>().map_err(|e| e.to_string())
        })? {
            b.task_stack_every = n;
        }
        if let Some(d) = config::env("KILN_WATCHDOG", |s| {
            config::parse_duration(s)
                .ok_or_else(|| "expected a duration such as 5s or 500ms".into())
        })? {
            b.watchdog = Some(d);
        }
        if let Some(n) = config::env("KILN_LOCK_SAMPLE_NS", |s| {
            s.trim().parse::<u64>().map_err(|e| e.to_string())
        })? {
            b.lock_sample_ns = n;
        }
        if let Some(on) = config::env("KILN_THREAD_STATS", |s| match s.trim() {
            "1" | "true" | "on" | "yes" => Ok(true),
            "0" | "false" | "off" | "no" => Ok(false),
            _ => Err("expected true or false".into()),
        })? {
            b.thread_stats = on;
        }
        if let Some(e) = config::env("KILN_ENGINE", |s| {
            config::parse_engine(s).ok_or_else(|| "expected auto, perf, ctimer or itimer".into())
        })? {
            b.engine = e;
        }
        if let Some(w) = config::env("KILN_WINDOW", |s| {
            config::parse_duration(s)
                .ok_or_else(|| "expected a duration such as 10s or 500ms".into())
        })? {
            b.window = w;
        }
        let url = |s: &str| {
            if s.trim().is_empty() {
                Err("empty".to_string())
            } else {
                Ok(s.trim().to_string())
            }
        };
        if let Some(u) = config::env("KILN_SERVER", url)? {
            b.push.push(u);
        }
        if let Some(d) = config::env("KILN_DIR", |s| url(s).map(PathBuf::from))? {
            b.dirs.push(d);
        }
        if let Some(u) = config::env("KILN_S3", |s| {
            if s.starts_with("s3://") {
                Ok(s.to_string())
            } else {
                Err("expected s3://bucket/prefix".into())
            }
        })? {
            b.s3.push(u);
        }
        if let Some(a) = config::env("KILN_CONTROL", |s| {
            s.parse::<std::net::SocketAddr>()
                .map(|_| s.to_string())
                .map_err(|e| format!("expected host:port ({e})"))
        })? {
            b.control.push(a);
        }
        b.control_token = config::env("KILN_CONTROL_TOKEN", url)?;
        b.instance = config::env("KILN_INSTANCE", url)?;
        b.push_token = config::env("KILN_SERVER_TOKEN", url)?;
        b.tenant = config::env("KILN_TENANT", url)?;
        Ok(b)
    }
}
