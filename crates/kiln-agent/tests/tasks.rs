//! Tasks against a workload's own clocks. Threads run `open_board`
//! operations — CPU measured on the thread's own CPU clock, a `sql` call
//! that sleeps, and a slow tail of one operation in ten that waits
//! outside any I/O — and nested `render` / `encode` tasks; each
//! operation times itself. The `tasks` profiles the agent wrote must
//! give the exact count, p50 and p99 within ±10% of the workload's own,
//! CPU and I/O within ±25%, nested CPU to the innermost, the site of the
//! `sql` call naming the function that makes it, and CPU samples
//! labelled with their task; `/metrics` must count every operation.
//! Then the same through the `tracing` layer on a tokio runtime whose
//! spans hop threads; CPU of tasks microseconds apart; Prometheus
//! reading the latency tail. The watchdog's tests are in `watchdog.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln_profile::tasks::{TaskRow, read_tasks};

mod common;

/// One agent per process: the tests take turns.
static ONE_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Burns `d` of this thread's CPU time.
#[inline(never)]
fn burn(d: Duration) {
    let end = thread_cpu() + d;
    let mut x = 1u64;
    while thread_cpu() < end {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

/// The `sql` call: its site is this function.
#[inline(never)]
fn load_rows(ms: u64) -> Duration {
    let t0 = Instant::now();
    kiln_agent::task::io("sql", || std::thread::sleep(Duration::from_millis(ms)));
    t0.elapsed()
}

/// What one worker measured of its own operations.
#[derive(Default)]
struct Truth {
    latencies: Vec<Duration>,
    io: Duration,
    cpu: Duration,
    /// Wall time neither on the thread's CPU clock nor in the `sql`
    /// call: the tail's sleeps, and whatever time the thread waited to
    /// run (on a busy machine, a sizable share).
    other: Duration,
}

#[inline(never)]
fn open_board(i: usize, truth: &mut Truth) {
    let (t0, cpu0) = (Instant::now(), thread_cpu());
    let task = kiln_agent::task::start("open_board");
    burn(Duration::from_millis(2));
    truth.cpu += Duration::from_millis(2);
    let io = load_rows(3);
    truth.io += io;
    if i % 10 == 9 {
        // The slow tail: waiting that is neither CPU nor a tracked call.
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(task);
    let wall = t0.elapsed();
    truth.latencies.push(wall);
    truth.other += wall.saturating_sub(io + (thread_cpu() - cpu0));
}

#[inline(never)]
fn render() {
    let _outer = kiln_agent::task::start("render");
    burn(Duration::from_millis(1));
    let inner = kiln_agent::task::start("encode");
    burn(Duration::from_millis(3));
    drop(inner);
}

fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).max(1);
    v[rank - 1].as_nanos() as f64
}

fn near(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want,
        "{what}: {got:.0} vs the workload's {want:.0} (±{:.0}%)",
        tol * 100.0
    );
}

/// Every task the agent wrote under `dir`, merged over its windows.
fn tasks_in(dir: &std::path::Path) -> BTreeMap<String, TaskRow> {
    let mut out: BTreeMap<String, TaskRow> = BTreeMap::new();
    let files = common::profiles(dir, "tasks");
    assert!(!files.is_empty(), "no tasks profile written");
    for p in files {
        for r in read_tasks(&p) {
            out.entry(r.task.clone())
                .or_insert_with(|| TaskRow {
                    task: r.task.clone(),
                    ..TaskRow::default()
                })
                .merge(&r);
        }
    }
    out
}

#[test]
fn tasks_match_the_workloads_clocks() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("task-truth")
        .cpu_hz(250)
        .window(Duration::from_secs(1))
        .task_stack_every(10)
        .write_to_dir(dir.path())
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let base = format!("http://{}", agent.status().control[0]);
    const OPS: usize = 150;
    let workers: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let mut t = Truth::default();
                for i in 0..OPS {
                    open_board(i, &mut t);
                }
                for _ in 0..100 {
                    render();
                }
                t
            })
        })
        .collect();
    let mut truth = Truth::default();
    for w in workers {
        let t = w.join().unwrap();
        truth.latencies.extend(t.latencies);
        truth.io += t.io;
        truth.cpu += t.cpu;
        truth.other += t.other;
    }
    // Outside any task: not counted.
    burn(Duration::from_millis(5));
    let metrics = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    agent.stop().unwrap();

    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(
        line("kiln_task_duration_seconds_count{task=\"open_board\"}"),
        (2 * OPS) as f64
    );
    assert!(line("kiln_task_io_seconds_total{task=\"open_board\",kind=\"sql\"}") > 0.0);
    assert!(metrics.contains("kiln_task_site_total{task=\"open_board\",site=\"tasks::load_rows:"));

    let tasks = tasks_in(dir.path());
    let ob = &tasks["open_board"];
    eprintln!(
        "open_board: {} ops, p50 {} p99 {} ns, cpu {} (truth {}), sql {} (truth {}), other {}, sites {:?}",
        ob.count,
        ob.latency.quantile(0.5),
        ob.latency.quantile(0.99),
        ob.cpu_ns,
        truth.cpu.as_nanos(),
        ob.io_ns["sql"],
        truth.io.as_nanos(),
        ob.other_ns,
        ob.sites
    );
    assert_eq!(ob.count, (2 * OPS) as u64, "every operation, once");
    let mut lat = truth.latencies.clone();
    near(
        ob.latency.quantile(0.5) as f64,
        quantile(&mut lat, 0.5),
        0.10,
        "p50",
    );
    near(
        ob.latency.quantile(0.99) as f64,
        quantile(&mut lat, 0.99),
        0.10,
        "p99",
    );
    let sum: Duration = truth.latencies.iter().sum();
    near(
        ob.latency_sum_ns as f64,
        sum.as_nanos() as f64,
        0.02,
        "latency sum",
    );
    near(
        ob.cpu_ns as f64,
        truth.cpu.as_nanos() as f64,
        0.25,
        "open_board CPU",
    );
    near(
        ob.io_ns["sql"] as f64,
        truth.io.as_nanos() as f64,
        0.25,
        "sql I/O",
    );
    // Other waiting: the tail's sleeps (30 × 25 ms), and the time the
    // workers waited to run, by their own clocks.
    assert!(truth.other >= Duration::from_millis(30 * 25));
    near(
        ob.other_ns as f64,
        truth.other.as_nanos() as f64,
        0.25,
        "other waiting",
    );
    let site = ob
        .sites
        .keys()
        .find(|k| k.starts_with("tasks::load_rows:"))
        .unwrap_or_else(|| panic!("no load_rows site in {:?}", ob.sites));
    assert!(ob.sites[site] >= 20, "{:?}", ob.sites);
    // Nested: each task keeps its own CPU.
    near(
        tasks["render"].cpu_ns as f64,
        200.0 * 1e6,
        0.25,
        "render's own CPU",
    );
    near(
        tasks["encode"].cpu_ns as f64,
        200.0 * 3e6,
        0.25,
        "encode's CPU",
    );
    assert_eq!(tasks["encode"].count, 200);

    // CPU samples taken inside a task carry its label.
    let cpu = common::profiles(dir.path(), "process_cpu");
    let labelled: i64 = cpu
        .iter()
        .map(|p| common::labelled(p, "cpu", "task", "open_board"))
        .sum();
    near(
        labelled as f64,
        truth.cpu.as_nanos() as f64,
        0.35,
        "CPU samples labelled open_board",
    );
    let encode: i64 = cpu
        .iter()
        .map(|p| common::labelled(p, "cpu", "task", "encode"))
        .sum();
    near(encode as f64, 600e6, 0.35, "CPU samples labelled encode");
}

/// A handler whose two CPU bursts may run on different worker threads.
#[tracing::instrument]
async fn handle(i: u32) {
    burn(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(4)).await;
    burn(Duration::from_millis(1));
    tokio::task::yield_now().await;
}

#[test]
fn tracing_spans_are_tasks_across_threads() {
    use tracing_subscriber::layer::SubscriberExt;
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("span-truth")
        .cpu_hz(500)
        .window(Duration::from_secs(1))
        .write_to_dir(dir.path())
        .start()
        .unwrap();
    // Global: the runtime's worker threads create and poll the spans.
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(kiln_agent::tracing::layer()),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    {
        rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..120u32 {
                set.spawn(async move {
                    let t0 = Instant::now();
                    handle(i).await;
                    t0.elapsed()
                });
                if set.len() >= 4 {
                    latencies.push(set.join_next().await.unwrap().unwrap());
                }
            }
            while let Some(l) = set.join_next().await {
                latencies.push(l.unwrap());
            }
        })
    }
    drop(rt);
    agent.stop().unwrap();
    let tasks = tasks_in(dir.path());
    let h = &tasks["handle"];
    eprintln!(
        "handle: {} ops, cpu {} ns, p50 {} ns (truth {:.0})",
        h.count,
        h.cpu_ns,
        h.latency.quantile(0.5),
        quantile(&mut latencies, 0.5)
    );
    assert_eq!(h.count, 120);
    near(
        h.cpu_ns as f64,
        120.0 * 2e6,
        0.25,
        "handle's CPU, every poll",
    );
    near(
        h.latency.quantile(0.5) as f64,
        quantile(&mut latencies, 0.5),
        0.10,
        "p50",
    );
    // Each request (a root span) names its samples: `span_id`, one value
    // per request, on every CPU sample the request's polls took.
    let mut spans = std::collections::BTreeSet::new();
    let (mut in_handle, mut with_span) = (0, 0);
    for p in common::profiles(dir.path(), "process_cpu") {
        for s in &p.samples {
            let labels = p.labels(s.labels);
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|l| p.str(l.key) == k)
                    .map(|l| p.str(l.str).to_string())
            };
            if get("task").as_deref() == Some("handle") {
                in_handle += 1;
                if let Some(id) = get("span_id") {
                    assert_eq!(id.len(), 16, "16 hex digits: {id}");
                    with_span += 1;
                    spans.insert(id);
                }
            }
        }
    }
    eprintln!(
        "{in_handle} samples in handle, {with_span} with a span_id, {} ids",
        spans.len()
    );
    assert!(in_handle >= 20, "CPU samples in handle: {in_handle}");
    assert_eq!(with_span, in_handle, "every sample in a request names it");
    assert!(
        spans.len() >= 10,
        "the requests are told apart: {} ids",
        spans.len()
    );
}

/// Spins `n` rounds of arithmetic: CPU without a clock read.
#[inline(never)]
fn spin(n: u32) {
    let mut x = 1u64;
    for _ in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

#[test]
fn cpu_of_tasks_microseconds_apart_is_estimated_without_bias() {
    // Tasks started microseconds apart read the CPU clock on a random
    // share of them (docs/agent.md); the estimate must hold per task,
    // even when two tasks alternate — a sampler that read every other one
    // would give one all the CPU and the other none.
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("task-pace")
        .cpu_hz(0)
        .window(Duration::from_secs(1))
        .write_to_dir(dir.path())
        .start()
        .unwrap();
    // What the truth's own clock reads add: half of each read's system
    // call falls between them.
    let reads = {
        let n = 20_000u32;
        let mut d = Duration::ZERO;
        for _ in 0..n {
            let a = thread_cpu();
            d += thread_cpu() - a;
        }
        d / n
    };
    const OPS: usize = 40_000;
    let (mut short, mut long) = (Duration::ZERO, Duration::ZERO);
    for i in 0..2 * OPS {
        let (name, rounds, truth) = if i % 2 == 0 {
            ("pace_short", 3_000, &mut short)
        } else {
            ("pace_long", 12_000, &mut long)
        };
        let c0 = thread_cpu();
        {
            let _t = kiln_agent::task::start(name);
            spin(rounds);
        }
        *truth += (thread_cpu() - c0).saturating_sub(reads);
    }
    agent.stop().unwrap();
    let tasks = tasks_in(dir.path());
    for (name, truth) in [("pace_short", short), ("pace_long", long)] {
        let t = &tasks[name];
        eprintln!(
            "{name}: {} ops, cpu {} ns (truth {:?})",
            t.count, t.cpu_ns, truth
        );
        assert_eq!(t.count, OPS as u64, "{name}: every operation counted");
        near(t.cpu_ns as f64, truth.as_nanos() as f64, 0.10, name);
    }
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's `prometheus` scraping this process's agent every second.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus(target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Debian's prometheus must be installed (scripts/test installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let p = Prometheus {
        child,
        url,
        _dir: dir,
    };
    let until = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("{}/-/ready", p.url))
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < until, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a PromQL instant query, once it has one.
fn promql(p: &Prometheus, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = reqwest::blocking::Client::new()
            .post(format!("{}/api/v1/query", p.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("query={}", urlencode(q)))
            .send()
            .unwrap()
            .text()
            .map(|t| serde_json::from_str(&t).unwrap_or_default())
            .unwrap();
        let got = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok());
        if let Some(x) = got.filter(|&x| ok(x)) {
            return x;
        }
        assert!(Instant::now() < until, "{q}: no answer in 30 s: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn prometheus_reads_the_tail_from_the_histogram() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let agent = kiln_agent::Agent::builder()
        .service("prom-truth")
        .cpu_hz(0)
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let target = agent.status().control[0].to_string();
    let prom = prometheus(&target);
    // 95% of operations take ~1 ms, 5% ~40 ms: the p99 lies in the tail.
    let mut lat = Vec::new();
    for i in 0..600 {
        let t0 = Instant::now();
        let t = kiln_agent::task::start("prom_op");
        std::thread::sleep(Duration::from_millis(if i % 20 == 19 { 40 } else { 1 }));
        drop(t);
        lat.push(t0.elapsed());
    }
    let truth = quantile(&mut lat, 0.99) / 1e9;
    promql(
        &prom,
        "kiln_task_duration_seconds_count{task=\"prom_op\"}",
        |n| n == 600.0,
    );
    let p99 = promql(
        &prom,
        "histogram_quantile(0.99, sum by (le) (kiln_task_duration_seconds_bucket{task=\"prom_op\"}))",
        f64::is_finite,
    );
    eprintln!("prometheus p99 {p99:.4} s, the workload's {truth:.4} s");
    // Within the bucket that holds the truth: (25 ms, 50 ms].
    assert!(truth > 0.025 && truth <= 0.05, "the workload's p99 {truth}");
    assert!(
        p99 > 0.025 && p99 <= 0.05,
        "histogram_quantile gave {p99}, truth {truth}"
    );
    agent.stop().unwrap();
}
