//! Thread churn at 1000 Hz with a fork in the middle, and a thread whose
//! frame pointer holds garbage (random words, pointers below the stack
//! pointer, a frame that points to itself): no crash, no hang, no growth
//! of file descriptors or memory, and the forked child knows it is not
//! profiled.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{child_report, merged, run_child, spin};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Child: churn threads for `STRESS_SECONDS` (default 8) and fork midway.
pub fn child_churn() {
    let seconds: u64 = std::env::var("STRESS_SECONDS").map_or(8, |s| s.parse().unwrap());
    let hz = std::env::var("STRESS_HZ").map_or(1000, |s| s.parse().unwrap());
    let agent = kiln_agent::Agent::from_env()
        .unwrap()
        .cpu_hz(hz)
        .start()
        .unwrap();
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut spawned = 0u64;
    let mut forked = false;
    let mut fork_ok = false;
    let mut baseline: Option<(usize, u64)> = None;
    let mut timeline: Vec<u64> = Vec::new();
    let hostile = std::thread::Builder::new()
        .name("hostile".into())
        .spawn(move || garbage_frames(until))
        .unwrap();
    while Instant::now() < until {
        let batch: Vec<_> = (0..8)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("churn-{i}"))
                    .spawn(|| std::hint::black_box(spin(1) / 4))
                    .unwrap()
            })
            .collect();
        for t in batch {
            t.join().unwrap();
        }
        spawned += 8;
        if start.elapsed() >= Duration::from_secs(5 * timeline.len() as u64) {
            timeline.push(rss_kb());
        }
        // Steady state: the first window has been symbolized (the symbol
        // cache and unit index are the agent's largest allocations) and glibc's
        // arenas and thread-stack cache have grown to their working size.
        if baseline.is_none()
            && start.elapsed() > Duration::from_secs(seconds / 4)
            && (hz == 0 || agent.status().windows_written >= 1)
        {
            baseline = Some((open_fds(), rss_kb()));
        }
        if !forked && start.elapsed() > Duration::from_secs(seconds / 2) {
            forked = true;
            fork_ok = fork_and_check(&agent);
        }
    }
    let hostile_rounds = hostile.join().unwrap();
    // Let the sampler notice the last exits.
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, rss0) = baseline.unwrap();
    let (fds1, rss1) = (open_fds(), rss_kb());
    let status = agent.status();
    agent.stop().unwrap();
    println!(
        "KILN_REPORT {}",
        json!({"spawned": spawned, "hostile_rounds": hostile_rounds, "fork_ok": fork_ok, "fds": [fds0, fds1], "rss_kb": [rss0, rss1], "rss_every_5s": timeline, "status": status})
    );
}

/// Spins with `rbp` set to garbage, round after round: what a walk meets
/// in code that uses the frame pointer as a general register, or in a
/// corrupted stack. Returns the rounds run.
#[inline(never)]
fn garbage_frames(until: Instant) -> u64 {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rounds = 0;
    // A frame record that points to itself: a cycle.
    let mut cell = [0u64; 2];
    cell[0] = cell.as_ptr() as u64;
    cell[1] = 0x1234;
    while Instant::now() < until {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let here = &seed as *const u64 as u64;
        let fp = match seed % 4 {
            0 => seed,
            1 => here.wrapping_sub(256),
            2 => cell.as_ptr() as u64,
            _ => here + (seed % 64) * 8,
        };
        run_with_fp(fp);
        rounds += 1;
        // A tenth of a core, so the churn keeps its pace on two cores.
        if rounds % 8 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    std::hint::black_box(&cell);
    rounds
}

/// ~100 µs of work with the frame pointer holding `fp`.
#[cfg(target_arch = "x86_64")]
fn run_with_fp(fp: u64) {
    // SAFETY: rbp is saved on the stack and restored before the block
    // ends; the loop touches only the two named registers.
    unsafe {
        std::arch::asm!(
            "push rbp",
            "mov rbp, {fp}",
            "2:",
            "dec {n}",
            "jnz 2b",
            "pop rbp",
            fp = in(reg) fp,
            n = inout(reg) 100_000u64 => _,
        )
    };
}

/// Elsewhere the hostile thread only computes.
#[cfg(not(target_arch = "x86_64"))]
fn run_with_fp(_fp: u64) {
    std::hint::black_box(spin(1) / 100);
}

/// Forks; the child checks the agent reports itself inactive, works a
/// little under whatever signals might still come, and exits 0.
fn fork_and_check(agent: &kiln_agent::Agent) -> bool {
    // SAFETY: the child only reads atomics through `status()` (which takes
    // no lock in a forked child), computes, and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let s = agent.status();
        let ok = s.forked_child && !s.active;
        std::hint::black_box(spin(20));
        // SAFETY: `_exit` ends the child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we just created.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
fn thread_churn_and_fork_at_1000_hz() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_child(
        "churn",
        &[
            ("KILN_WINDOW", "2s".into()),
            ("KILN_DIR", dir.path().display().to_string()),
        ],
    );
    let r = child_report(&out);
    assert!(r["spawned"].as_u64().unwrap() > 500, "{r}");
    assert!(r["hostile_rounds"].as_u64().unwrap() > 1000, "{r}");
    assert_eq!(
        r["fork_ok"], true,
        "the forked child did not see itself as not profiled: {r}"
    );
    let (fds0, fds1) = (r["fds"][0].as_u64().unwrap(), r["fds"][1].as_u64().unwrap());
    assert!(
        fds1 <= fds0 + 4,
        "file descriptors grew from {fds0} to {fds1}: {r}"
    );
    let (rss0, rss1) = (
        r["rss_kb"][0].as_u64().unwrap(),
        r["rss_kb"][1].as_u64().unwrap(),
    );
    assert!(
        rss1 < rss0 + 24 * 1024,
        "RSS grew from {rss0} kB to {rss1} kB: {r}"
    );
    assert_eq!(r["status"]["arm_failures"], 0, "{r}");
    let p = merged(dir.path());
    let pools = kiln_profile::group_by_label(&p, 1, "thread_pool").unwrap();
    assert!(pools.iter().any(|(t, _)| t == "churn-*"), "{pools:?}");
}
