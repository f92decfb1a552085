//! Task cost: ns per `task::start` + drop, per `task::io` call inside a
//! task, and per `tracing` span (created, entered, exited, closed) under
//! the `tracing` layer, against the peers — a `tracing` span under a bare
//! `tracing_subscriber::registry()` (what a service with tracing already
//! pays per span) and two `Instant::now()` reads (the floor of timing
//! anything) — without an agent and with one running (CPU sampling off,
//! so only the task path is measured). Medians of ROUNDS alternating
//! rounds; one JSON line. Run by bench/tasks.py.

use std::hint::black_box;
use std::time::Instant;

use tracing_subscriber::layer::SubscriberExt;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per call of `f`, over `n` calls.
fn per_call(n: u64, mut f: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn task_op(n: u64) -> f64 {
    per_call(n, |i| {
        let t = kiln_agent::task::start("bench_task");
        black_box(i);
        drop(t);
    })
}

fn io_op(n: u64) -> f64 {
    let _t = kiln_agent::task::start("bench_io");
    per_call(n, |i| {
        kiln_agent::task::io("sql", || black_box(i));
    })
}

fn span_op(n: u64) -> f64 {
    per_call(n, |i| {
        let s = tracing::info_span!("bench_span");
        let g = s.enter();
        black_box(i);
        drop(g);
        drop(s);
    })
}

fn clocks(n: u64) -> f64 {
    per_call(n, |_| {
        let a = Instant::now();
        black_box(a.elapsed());
    })
}

/// Two reads of the thread's CPU clock: what a task whose CPU is read
/// pays on top (tasks started more than 50 µs apart read it every time).
fn cpu_clocks(n: u64) -> f64 {
    let read = || {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        t.tv_nsec
    };
    per_call(n, |_| {
        black_box(read());
        black_box(read());
    })
}

/// This process's resident set, KiB.
fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let rounds = env("ROUNDS", 7) as usize;
    let n = env("N", 1_000_000);
    let mut r = serde_json::Map::new();
    let mut put = |k: &str, v: f64| {
        r.insert(k.into(), serde_json::json!((v * 100.0).round() / 100.0));
    };
    let bare = tracing::Dispatch::new(tracing_subscriber::registry());
    let layered =
        tracing::Dispatch::new(tracing_subscriber::registry().with(kiln_agent::tracing::layer()));
    let (mut off, mut off_io, mut peer_span, mut floor, mut cpu_floor) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        off.push(task_op(n));
        off_io.push(io_op(n));
        peer_span.push(tracing::dispatcher::with_default(&bare, || span_op(n)));
        floor.push(clocks(n));
        cpu_floor.push(cpu_clocks(n / 4));
    }
    put("two_cpu_clock_reads_ns", median(cpu_floor));
    put("task_no_agent_ns", median(off));
    put("io_no_agent_ns", median(off_io));
    put("span_registry_ns", median(peer_span));
    put("two_clock_reads_ns", median(floor));
    let agent = kiln_agent::Agent::builder()
        .service("bench-tasks")
        .cpu_hz(0)
        .thread_stats(false)
        .start()
        .expect("agent");
    let (mut on, mut on_io, mut on_span) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        on.push(task_op(n));
        on_io.push(io_op(n));
        on_span.push(tracing::dispatcher::with_default(&layered, || {
            span_op(n / 4)
        }));
    }
    // Memory per task name: RSS growth over NAMES new names, one
    // operation each.
    let names = env("NAMES", 900);
    let before = rss_kib();
    for i in 0..names {
        let name: &'static str = Box::leak(format!("bench_name_{i}").into_boxed_str());
        drop(kiln_agent::task::start(name));
    }
    put(
        "kib_per_task_name",
        (rss_kib() - before) as f64 / names as f64,
    );
    put("task_agent_ns", median(on));
    put("io_agent_ns", median(on_io));
    put("span_layer_ns", median(on_span));
    agent.stop().expect("stop");
    println!("{}", serde_json::Value::Object(r));
}
