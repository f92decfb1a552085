//! Wall-clock sampling cost with many idle threads: THREADS threads (all
//! but BUSY parked, waking every PARK_MS; BUSY computing a tenth of the
//! time) for SECONDS, with
//! an agent sampling wall clock at WALL_HZ (0: the agent without wall
//! sampling). Prints the CPU the agent's own threads used (`kiln-*`,
//! from their schedstat) and the samples the wall profile holds, as JSON
//! (bench/wall.py compares runs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU ns of this process's threads whose name starts with `kiln-`.
fn agent_cpu_ns() -> u64 {
    let mut sum = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if name.starts_with("kiln-") {
            let s = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
            sum += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    sum
}

fn main() {
    let threads = env("THREADS", 200) as usize;
    let busy = env("BUSY", 10) as usize;
    let seconds = env("SECONDS", 20);
    let hz = env("WALL_HZ", 20) as u32;
    let park = Duration::from_millis(env("PARK_MS", 1000));
    let dir = std::env::temp_dir().join(format!("kiln-bench-wall-{}", std::process::id()));
    let agent = kiln_agent::Agent::builder()
        .service("bench-wall")
        .cpu_hz(env("CPU_HZ", 0) as u32)
        .alloc_sample_bytes(0)
        .thread_stats(false)
        .wall_hz(hz)
        .window(Duration::from_secs(3600))
        .write_to_dir(&dir)
        .start()
        .expect("agent");
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("pool-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if i < busy {
                            let t = Instant::now();
                            while t.elapsed() < Duration::from_millis(5) {
                                std::hint::spin_loop();
                            }
                            std::thread::sleep(Duration::from_millis(45));
                        } else {
                            std::thread::park_timeout(park);
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    // Let the agent see every thread, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = agent_cpu_ns();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = agent_cpu_ns() - cpu0;
    let wall = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in &hs {
        h.thread().unpark();
    }
    for h in hs {
        h.join().unwrap();
    }
    let missed = agent.status().wall.missed;
    agent.stop().expect("stop");
    let mut samples = 0i64;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.path().to_string_lossy().contains("/wall/") {
                let p =
                    kiln_profile::decode(&std::fs::read(e.path()).unwrap(), &Default::default())
                        .unwrap();
                samples += p.total(p.sample_type_index("samples").unwrap());
            }
        }
    }
    if std::env::var_os("KEEP").is_some() {
        eprintln!("profiles kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "{}",
        serde_json::json!({
            "wall_hz": hz,
            "threads": threads,
            "busy": busy,
            "seconds": wall.as_secs_f64(),
            "agent_cpu_share_of_core": cpu as f64 / wall.as_nanos() as f64,
            "wall_samples": samples,
            "missed": missed,
        })
    );
}
