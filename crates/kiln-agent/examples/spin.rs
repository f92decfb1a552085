//! A service that burns CPU 60/30/10 in `hot_a`, `hot_b` and `hot_c` on
//! two threads while the agent profiles it. `KILN_*` variables configure
//! the agent; `SPIN_SECONDS` the run time (default 5).
//!
//! `KILN_DIR=/tmp/kiln-profiles cargo run --release -p kiln-agent --example spin`

use std::hint::black_box;
use std::time::{Duration, Instant};

#[inline(never)]
fn spin(units: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..units * 200_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

#[inline(never)]
fn hot_a() -> u64 {
    // black_box keeps the call out of tail position, so this frame stays.
    black_box(spin(6))
}

#[inline(never)]
fn hot_b() -> u64 {
    // black_box keeps the call out of tail position, so this frame stays.
    black_box(spin(3))
}

#[inline(never)]
fn hot_c() -> u64 {
    // black_box keeps the call out of tail position, so this frame stays.
    black_box(spin(1))
}

fn work(until: Instant) -> u64 {
    let mut sink = 0u64;
    while Instant::now() < until {
        sink = sink
            .wrapping_add(hot_a())
            .wrapping_add(hot_b())
            .wrapping_add(hot_c());
    }
    sink
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::var("SPIN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let agent = kiln_agent::Agent::from_env()?.service("spin").start()?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let worker = std::thread::Builder::new()
        .name("worker-1".into())
        .spawn(move || work(until))?;
    black_box(work(until));
    black_box(worker.join().map_err(|_| "worker panicked")?);
    let status = agent.status();
    agent.stop()?;
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}
