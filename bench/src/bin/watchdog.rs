//! Watchdog cost and detection latency: the sampler thread's CPU (the
//! thread that scans the watchdog's slots every 10 ms and checks for
//! deadlocks every second) over PHASE seconds with no tasks, with 10,000
//! tasks a second that have a deadline (4 threads), and with 1,000
//! threads each inside a long task with a deadline; then STUCK tasks that
//! overrun a 50 ms deadline one after another, each event's lateness
//! (caught at − deadline). One JSON line. Run by bench/watchdog.py.

use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU ns of this process's thread named `name`.
fn thread_cpu(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for e in dir.flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let s = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
            return s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// The sampler's share of a core over `secs` while `during` runs.
fn sampler_share(secs: u64, during: impl FnOnce(Duration)) -> f64 {
    let c0 = thread_cpu("kiln-sampler");
    let t0 = Instant::now();
    during(Duration::from_secs(secs));
    let cpu = thread_cpu("kiln-sampler") - c0;
    cpu as f64 / t0.elapsed().as_nanos() as f64
}

fn main() {
    let phase = env("PHASE", 10);
    let stuck = env("STUCK", 40);
    let agent = kiln_agent::Agent::builder()
        .service("bench-watchdog")
        .cpu_hz(0)
        .thread_stats(false)
        .control("127.0.0.1:0")
        .start()
        .expect("agent");
    let base = format!("http://{}", agent.status().control[0]);
    let idle = sampler_share(phase, std::thread::sleep);
    // 10,000 tasks a second with a 1 s deadline, over 4 threads.
    let busy = sampler_share(phase, |d| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut n = 0u64;
                    while t0.elapsed() < d {
                        let t = kiln_agent::task::start_with_deadline("op", Duration::from_secs(1));
                        std::thread::sleep(Duration::from_micros(300));
                        drop(t);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let n: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        eprintln!("tasks a second: {:.0}", n as f64 / d.as_secs_f64());
    });
    // 1,000 threads inside a task with a long deadline (watched, never due).
    let threads = sampler_share(phase, |d| {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ts: Vec<_> = (0..1000)
            .map(|_| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || {
                        let _t = kiln_agent::task::start_with_deadline(
                            "long",
                            Duration::from_secs(3600),
                        );
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    })
                    .unwrap()
            })
            .collect();
        std::thread::sleep(d);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in ts {
            t.join().unwrap();
        }
    });
    // Detection: STUCK tasks past a 50 ms deadline, one at a time.
    for _ in 0..stuck {
        let t = kiln_agent::task::start_with_deadline("late", Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(150));
        drop(t);
    }
    std::thread::sleep(Duration::from_millis(500));
    let v: serde_json::Value = reqwest::blocking::get(format!("{base}/debug/kiln/stuck"))
        .and_then(|r| r.json())
        .expect("stuck");
    let mut late: Vec<f64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["task"] == "late" && e["capture"] == 1)
        .map(|e| (e["elapsed_ns"].as_f64().unwrap() - e["deadline_ns"].as_f64().unwrap()) / 1e6)
        .collect();
    late.sort_by(f64::total_cmp);
    let q = |p: f64| late[((p * late.len() as f64).ceil() as usize).clamp(1, late.len()) - 1];
    agent.stop().expect("stop");
    println!(
        "{}",
        serde_json::json!({
            "sampler_core_idle": idle,
            "sampler_core_10k_tasks_per_s": busy,
            "sampler_core_1000_threads_in_tasks": threads,
            "stuck_caught": late.len(),
            "late_ms_p50": q(0.5),
            "late_ms_p99": q(0.99),
            "late_ms_max": late.last().copied().unwrap_or(0.0),
        })
    );
}
