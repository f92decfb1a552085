//! Integration tests of `kiln-agent`. Each scenario runs in a child
//! process (this test binary again, selected by `KILN_TEST_CHILD`), because
//! an agent is process-wide and some scenarios install a seccomp filter or
//! fork. The parent reads what the child wrote, as a user would.

mod alloc;
mod control;
mod engines;
mod runtimes;
mod ship;
mod stress;
mod truth;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiln_profile::{DecodeOptions, Merger, Profile};
use serde_json::Value;

/// The unit of work: `units` × 10M multiply-adds. One round of
/// hot_a + hot_b + hot_c (~100 ms on a 1 ns multiply-add) is many sampling
/// periods long even at 100 Hz, so a periodic sampler cannot alias with
/// the loop. (At 1M per unit a round was ~10 ms here: one 100 Hz period,
/// and the split drifted to 56/30/14.)
#[inline(never)]
pub fn spin(units: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..units * 10_000_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// 60% of the work.
#[inline(never)]
pub fn hot_a() -> u64 {
    black_box(spin(6))
}

/// 30% of the work.
#[inline(never)]
pub fn hot_b() -> u64 {
    black_box(spin(3))
}

/// 10% of the work.
#[inline(never)]
pub fn hot_c() -> u64 {
    black_box(spin(1))
}

/// Two threads splitting their CPU 60/30/10 between hot_a, hot_b, hot_c.
/// Returns the CPU time the two threads took, in ns (each reads its own
/// thread CPU clock as it ends).
pub fn workload(seconds: f64) -> u64 {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let work = move || {
        let mut sink = 0u64;
        while Instant::now() < until {
            sink = sink
                .wrapping_add(hot_a())
                .wrapping_add(hot_b())
                .wrapping_add(hot_c());
        }
        black_box(sink);
        thread_cpu_ns()
    };
    let t = std::thread::Builder::new()
        .name("worker-1".into())
        .spawn(work)
        .unwrap();
    let mine = work();
    mine + t.join().unwrap()
}

/// This thread's CPU time (user + system), in ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// This process's CPU time (user + system), from /proc/self/stat.
pub fn process_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks * 1_000_000_000 / 100
}

/// The child side: runs the scenario named by `KILN_TEST_CHILD`, or, run
/// as a normal test, starts an agent in this process and checks it writes.
#[test]
fn child() {
    match std::env::var("KILN_TEST_CHILD").as_deref() {
        Ok("spin") => engines::child_spin(),
        Ok("seccomp") => {
            kiln_agent::testing::deny_perf_event_open().unwrap();
            engines::child_spin();
        }
        Ok("churn") => stress::child_churn(),
        Ok("noalloc") => alloc::child_noalloc(),
        Ok("runtimes") => runtimes::child_runtimes(),
        Ok("control") => control::child_control(),
        Ok("token") => control::child_token(),
        Ok("ship") => ship::child_ship(),
        Ok("deadpush") => ship::child_dead_server(),
        Ok("truth") => truth::child_truth(),
        Ok(other) => panic!("unknown KILN_TEST_CHILD {other}"),
        Err(_) => in_process_smoke(),
    }
}

fn in_process_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("smoke")
        .instance("test")
        .cpu_hz(200)
        .write_to_dir(dir.path())
        .start()
        .unwrap();
    workload(0.5);
    assert!(agent.status().samples > 0);
    agent.stop().unwrap();
    let files = profiles(dir.path());
    assert!(!files.is_empty());
    assert!(
        files[0].starts_with(dir.path().join("smoke/test/process_cpu")),
        "{files:?}"
    );
}

/// Held while a child runs: the children compute flat out on two cores,
/// and accuracy tests need the CPU they measure, so they take turns.
pub static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes a turn on the CPU (a failed test's poison does not matter).
pub fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the child scenario with `env`; returns its output.
pub fn run_child(mode: &str, env: &[(&str, String)]) -> Output {
    let _turn = cpu_turn();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("KILN_TEST_CHILD", mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The JSON line the child printed last (`{"status":..., ...}`).
pub fn child_report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest prints `test child ... ` before the child's own output.
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.split_once("KILN_REPORT "))
        .expect("child report")
        .1;
    serde_json::from_str(line).unwrap()
}

/// Every CPU profile file under `dir` (those of `process_cpu`; the agent
/// writes `threads` and `memory` profiles beside them), sorted.
pub fn profiles(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "gz")
                && p.to_string_lossy().contains("/process_cpu/")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// All profiles under `dir`, merged.
pub fn merged(dir: &Path) -> Profile {
    let mut m = Merger::new();
    for f in profiles(dir) {
        let p =
            kiln_profile::decode(&std::fs::read(&f).unwrap(), &DecodeOptions::default()).unwrap();
        p.validate().unwrap();
        m.add(&p).unwrap();
    }
    assert!(m.inputs() > 0, "no profiles under {}", dir.display());
    m.finish()
}
