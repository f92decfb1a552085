//! `kiln server` and `kiln query`: the server on a tokio runtime, profiling
//! itself through the agent unless told not to; the query client.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Runs the server until SIGINT or SIGTERM.
pub fn run(
    listen: &str,
    data_dir: Option<&Path>,
    storage: Option<&str>,
    config: Option<&Path>,
    self_profile: bool,
) -> Result<()> {
    let cfg = config_for(data_dir, storage, config)?;
    serve(cfg, listen, self_profile, |_| Ok(None))
}

/// The server's configuration: defaults, then the file, then the flags.
pub fn config_for(
    data_dir: Option<&Path>,
    storage: Option<&str>,
    config: Option<&Path>,
) -> Result<kiln_server::Config> {
    let mut cfg = kiln_server::Config::new("./kiln-data");
    if let Some(c) = config {
        let text =
            std::fs::read_to_string(c).with_context(|| format!("cannot read {}", c.display()))?;
        cfg = cfg
            .apply_toml(&text)
            .with_context(|| format!("{}", c.display()))?;
    }
    if let Some(d) = data_dir {
        cfg.data_dir = d.to_path_buf();
    }
    if let Some(s) = storage {
        cfg.storage = Some(s.to_string());
    }
    Ok(cfg)
}

/// Caps glibc's malloc arenas at one per core, at least two (unless
/// `MALLOC_ARENA_MAX` says otherwise), before the runtime starts its
/// threads. glibc gives each thread that allocates under contention an
/// arena of its own, up to eight per core, and keeps in each what was freed there: the
/// blocking pool's threads decoding blocks for a query would leave RSS
/// far past `[storage] cache` (1.6 GB against a 512 MiB cache on a
/// 30-day query, 1.0 GB with this; docs/performance.md).
fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let cores = i32::try_from(cores).unwrap_or(i32::MAX);
        // SAFETY: mallopt takes two integers and only changes the
        // allocator's tuning; no pointer is involved.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, cores) };
    }
}

/// How often the trimmer looks at what malloc keeps freed ...
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// ... and how much of it it lets malloc keep.
const TRIM_ABOVE: usize = 64 << 20;

/// Starts a thread that hands back to the system what glibc's malloc
/// keeps freed past [`TRIM_ABOVE`], every [`TRIM_EVERY`]. A query or a
/// day's sum decodes blocks on the blocking pool, and the cache drops
/// others: glibc keeps the freed pages inside its arenas (a trim gives
/// back only the top of each), so without this RSS after a 4-day series
/// query stood ~250 MB above what was in use (docs/performance.md).
fn trim_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = std::thread::Builder::new()
        .name("kiln-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: mallinfo2 only reads the allocator's counters.
                let free = unsafe { libc::mallinfo2() }.fordblks;
                if free > TRIM_ABOVE {
                    // SAFETY: malloc_trim only gives free pages back to
                    // the system; no pointer of ours is involved.
                    unsafe { libc::malloc_trim(0) };
                }
            }
        });
}

/// What the server's crates log (`tracing`), on stderr, at `info` and
/// above unless `KILN_LOG` says otherwise (`KILN_LOG=kiln_store=debug`
/// times each block a query loads). Without it a WAL record skipped at
/// replay or a failed upload would be said to no one.
fn log_to_stderr() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // A second server in one process (tests) keeps the first's.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves `cfg` on `listen` until SIGINT or SIGTERM; `beside(url)` may start a
/// process that lives as long as the server (killed at the end).
pub fn serve(
    cfg: kiln_server::Config,
    listen: &str,
    self_profile: bool,
    beside: impl FnOnce(&str) -> Result<Option<std::process::Child>>,
) -> Result<()> {
    let data_dir = cfg.data_dir.clone();
    let first_token = cfg.tokens.first().cloned();
    log_to_stderr();
    limit_arenas();
    trim_freed_memory();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-server")
        .build()
        .context("starting the runtime")?;
    let app = rt
        .block_on(kiln_server::App::open(cfg))
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!(
        "kiln server: http://{addr} (data in {})",
        data_dir.display()
    );
    let mut child = beside(&format!("http://{addr}"))?;
    // The server profiles itself into itself: a fresh server already
    // shows a real flame graph. With tenant tokens, it pushes with the
    // first configured token, into that token's tenant.
    let agent = if self_profile {
        let mut b = kiln_agent::Agent::builder()
            .service("kiln-server")
            .push_to(format!("http://{addr}"));
        if let Some((token, tenant)) = first_token {
            eprintln!("kiln server: profiling itself into tenant {tenant:?}");
            b = b.push_token(token);
        }
        match b.start() {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("kiln server: not profiling itself: {e}");
                None
            }
        }
    } else {
        None
    };
    // On SIGINT or SIGTERM, what pushes to this server stops first, while
    // it still listens (the process beside it, then its own agent with
    // its last push); then it finishes its requests.
    let stop_pushers = async move {
        stop_signal().await;
        let stopped = tokio::task::spawn_blocking(move || {
            if let Some(c) = &mut child {
                let _ = c.kill();
                let _ = c.wait();
            }
            agent.map(kiln_agent::Agent::stop)
        });
        if let Ok(Some(Err(e))) = stopped.await {
            eprintln!("kiln server: stopping its own agent: {e}");
        }
    };
    rt.block_on(async {
        axum::serve(listener, app.router())
            .with_graceful_shutdown(stop_pushers)
            .await
    })
    .context("serving")?;
    // What the head holds goes to a block now rather than to the log's
    // replay at the next start.
    if let Err(e) = rt.block_on(app.flush()) {
        eprintln!("kiln server: the head stays in the log: {e}");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (what systemd, Kubernetes and `kill`
/// send): either stops the server gracefully.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                eprintln!("kiln server: cannot watch SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    eprintln!("kiln server: stopping: finishing requests, cutting the head into a block");
}

/// A query against a server.
pub struct QueryRequest<'a> {
    /// Base URL.
    pub server: &'a str,
    /// `TYPE{selector}`.
    pub query: &'a str,
    /// Range start.
    pub from: &'a str,
    /// Range end.
    pub until: &'a str,
    /// Tenant.
    pub tenant: Option<&'a str>,
}

impl QueryRequest<'_> {
    /// GETs `path` with the query and range; the body, or the server's
    /// error message.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()?;
            let mut req = client.get(&url).query(&[
                ("query", self.query),
                ("from", self.from),
                ("until", self.until),
            ]);
            if let Some(t) = self.tenant {
                req = req.header("x-scope-orgid", t);
            }
            let resp = req.send().await.with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                bail!("{url}: HTTP {status}: {msg}");
            }
            Ok(body.to_vec())
        })
    }
}
