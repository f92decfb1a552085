//! Per-function truth on a libc-heavy job, for `bench/truth.py`.
//!
//! `truth MODE HZ SECONDS` with MODE `kiln` or `pprof-rs` (0.15, its
//! default DWARF unwinder, no blocklist): two threads spend their time in
//! `copy_job` (256 KiB `copy_from_slice`, i.e. libc's `memcpy`),
//! `write_job` (4 KiB `write(2)` to /dev/null), `clock_job` (the vDSO's
//! `clock_gettime`) and `compute_job` (plain arithmetic). Each thread
//! reads its CPU time around every call, so the job knows each function's
//! true share; the profiler's share of each is the samples whose stack
//! holds it. Prints one JSON line: `{"truth": [...], "profile": [...],
//! "samples": N}` in the order above.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const FUNCTIONS: [&str; 4] = ["copy_job", "write_job", "clock_job", "compute_job"];

fn clock(id: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a local timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts
}

fn thread_cpu_ns() -> u64 {
    let ts = clock(libc::CLOCK_THREAD_CPUTIME_ID);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[inline(never)]
fn copy_job(src: &[u8], dst: &mut [u8]) {
    for _ in 0..120 {
        dst.copy_from_slice(black_box(src));
        black_box(&mut *dst);
    }
}

#[inline(never)]
fn write_job(f: &mut std::fs::File, buf: &[u8]) {
    for _ in 0..3000 {
        f.write_all(black_box(buf)).expect("write /dev/null");
    }
}

#[inline(never)]
fn clock_job() -> i64 {
    let mut sum = 0i64;
    for _ in 0..4000 {
        // CLOCK_MONOTONIC is served by the vDSO.
        sum = sum.wrapping_add(clock(libc::CLOCK_MONOTONIC).tv_nsec);
    }
    black_box(sum)
}

#[inline(never)]
fn compute_job() -> u64 {
    let mut x = 1u64;
    for i in 0..100_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

fn timed(acc: &mut u64, f: impl FnOnce()) {
    let t0 = thread_cpu_ns();
    f();
    *acc += thread_cpu_ns() - t0;
}

fn job(until: Instant) -> [u64; 4] {
    let src = vec![7u8; 256 * 1024];
    let mut dst = vec![0u8; 256 * 1024];
    let mut null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let buf = [1u8; 4096];
    let mut acc = [0u64; 4];
    while Instant::now() < until {
        timed(&mut acc[0], || copy_job(&src, &mut dst));
        timed(&mut acc[1], || write_job(&mut null, &buf));
        timed(&mut acc[2], || {
            clock_job();
        });
        timed(&mut acc[3], || {
            compute_job();
        });
    }
    acc
}

fn run(seconds: u64) -> [u64; 4] {
    let until = Instant::now() + Duration::from_secs(seconds);
    let t = std::thread::spawn(move || job(until));
    let a = job(until);
    let b = t.join().expect("worker");
    std::array::from_fn(|i| a[i] + b[i])
}

/// Whether a symbol name is function `f` of this binary (pprof-rs names
/// frames from `line-tables-only` DWARF bare, or keeps the legacy
/// mangling's `::h<hash>` suffix; Kiln gives the full path).
fn is(name: &str, f: &str) -> bool {
    let name = match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    };
    name.strip_suffix(f)
        .is_some_and(|h| h.is_empty() || h.ends_with("::"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, hz, seconds] = args.as_slice() else {
        bail!("usage: truth kiln|pprof-rs HZ SECONDS");
    };
    let hz: u32 = hz.parse().context("HZ")?;
    let seconds: u64 = seconds.parse().context("SECONDS")?;
    let (truth, profile, samples) = match mode.as_str() {
        "kiln" => {
            let dir = std::env::temp_dir().join(format!("kiln-truth-{}", std::process::id()));
            let agent = kiln_agent::Agent::from_env()?
                .cpu_hz(hz)
                .write_to_dir(&dir)
                .start()?;
            let truth = run(seconds);
            agent.stop()?;
            let mut m = kiln_profile::Merger::new();
            for f in walk(&dir)? {
                let p = kiln_profile::decode(&std::fs::read(&f)?, &Default::default())?;
                m.add(&p)?;
            }
            let p = m.finish();
            // TRUTH_KEEP=1 keeps the windows, to look at them with `kiln`.
            if std::env::var_os("TRUTH_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            } else {
                eprintln!("windows kept in {}", dir.display());
            }
            let ty = p.sample_type_index("cpu").context("no cpu type")?;
            let top = kiln_profile::top(&p, ty)?;
            let profile = FUNCTIONS.map(|f| {
                top.rows
                    .iter()
                    .filter(|r| is(&r.name, f))
                    .map(|r| r.total)
                    .max()
                    .unwrap_or(0) as f64
            });
            (truth, profile, top.total as f64)
        }
        "pprof-rs" => {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(hz as i32)
                .build()?;
            let truth = run(seconds);
            let report = guard.report().build()?;
            let mut profile = [0f64; 4];
            let mut samples = 0f64;
            for (frames, &count) in &report.data {
                samples += count as f64;

                for (i, f) in FUNCTIONS.iter().enumerate() {
                    let holds = frames.frames.iter().flatten().any(|s| is(&s.name(), f));
                    if holds {
                        profile[i] += count as f64;
                    }
                }
            }
            (truth, profile, samples)
        }
        m => bail!("unknown mode {m}"),
    };
    println!(
        "{}",
        serde_json::json!({"truth": truth, "profile": profile, "samples": samples})
    );
    Ok(())
}

fn walk(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else if p.extension().is_some_and(|x| x == "gz") {
            out.push(p);
        }
    }
    Ok(out)
}
