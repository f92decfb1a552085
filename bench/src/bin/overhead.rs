//! A fixed amount of work under a profiler, for `bench/overhead.py`.
//!
//! `overhead MODE HZ` with MODE one of `none`, `kiln`, `pprof-rs`: two
//! threads run the same number of iterations of a call tree 24 frames
//! deep (so unwinding has real work), under Kiln's agent, pprof-rs
//! (0.15, its default unwinder) or nothing. Profilers run at HZ and build
//! their profile at the end, as a user pays for it (Kiln also every
//! `KILN_WINDOW`, default 10 s). The runner measures the process's CPU
//! time from outside; the process prints its own peak RSS (`VmHWM`).

use std::hint::black_box;

use anyhow::{Context, Result, bail};

#[inline(never)]
fn leaf(x: u64) -> u64 {
    let mut v = x;
    for i in 0..2_000 {
        v = black_box(v.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    v
}

#[inline(never)]
fn descend(depth: u32, x: u64) -> u64 {
    if depth == 0 {
        leaf(x)
    } else {
        black_box(descend(depth - 1, x ^ u64::from(depth)))
    }
}

fn work(rounds: u64) -> u64 {
    let mut acc = 0u64;
    for r in 0..rounds {
        acc = acc.wrapping_add(descend(24, r));
    }
    acc
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, hz): (&str, u32) = match args.as_slice() {
        [_, m, hz] => (m, hz.parse().context("HZ")?),
        _ => bail!("usage: overhead none|kiln|pprof-rs HZ [ROUNDS]"),
    };
    let rounds: u64 = std::env::var("ROUNDS")
        .map_or(Ok(600_000), |s| s.parse())
        .context("ROUNDS")?;
    let run = || {
        let t = std::thread::spawn(move || work(rounds));
        black_box(work(rounds));
        black_box(t.join().expect("worker"));
    };
    match mode {
        "none" => run(),
        "kiln" => {
            let dir = std::env::temp_dir().join(format!("kiln-overhead-{}", std::process::id()));
            // KILN_WINDOW and the other KILN_* variables apply.
            let agent = kiln_agent::Agent::from_env()?
                .cpu_hz(hz)
                .write_to_dir(&dir)
                .start()?;
            run();
            agent.stop()?;
            let _ = std::fs::remove_dir_all(&dir);
        }
        "pprof-rs" => {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(hz as i32)
                .build()?;
            run();
            let report = guard.report().build()?;
            black_box(report.data.len());
        }
        m => bail!("unknown mode {m}"),
    }
    // The peak RSS of this process alone, for the runner.
    let status = std::fs::read_to_string("/proc/self/status").context("status")?;
    if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!("{hwm}");
    }
    Ok(())
}
