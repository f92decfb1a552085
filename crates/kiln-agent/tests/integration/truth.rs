//! Truth on workloads that hide time from a frame-pointer walk or a
//! periodic timer: most of the time inside libc's `memcpy`, inside the
//! vDSO, inside `write(2)`, in C code built without frame pointers (a
//! library compiled here with `cc -O2 -fomit-frame-pointer` and loaded
//! with `dlopen` after the agent started), and rounds that last exactly
//! one sampling period. Each workload measures
//! its own truth (every function's thread CPU time, read around each call)
//! and each function's share of the profile must be within 4 points of it,
//! under perf and under per-thread CPU timers (what seccomp forces).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{child_report, merged, run_child};

/// This thread's CPU time (user + system), in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Time spent in libc's `memcpy`: 256 KiB copies.
#[inline(never)]
fn copy_work(src: &[u8], dst: &mut [u8], n: usize) {
    for _ in 0..n {
        dst.copy_from_slice(black_box(src));
        black_box(&mut *dst);
    }
}

/// Time spent in `write(2)` (the kernel, and libc's wrapper).
#[inline(never)]
fn write_work(f: &mut std::fs::File, buf: &[u8], n: usize) {
    for _ in 0..n {
        f.write_all(black_box(buf)).unwrap();
    }
}

/// Time spent in the vDSO: `clock_gettime(CLOCK_MONOTONIC)`.
#[inline(never)]
fn vdso_work(n: usize) -> u64 {
    let mut sum = 0u64;
    for _ in 0..n {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a pointer to a local timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        sum = sum.wrapping_add(ts.tv_nsec as u64);
    }
    black_box(sum)
}

/// Pure compute.
#[inline(never)]
fn compute_work(n: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// Spins until this thread has used `ns` more CPU, reading its CPU clock
/// (a system call: no vDSO for thread clocks) as it goes.
#[inline(always)]
fn spin_cpu(ns: u64) -> u64 {
    let until = thread_cpu_ns() + ns;
    let mut x = 1u64;
    while thread_cpu_ns() < until {
        for i in 0..200u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

/// 6 ms of a 10 ms round.
#[inline(never)]
fn tick_a() -> u64 {
    spin_cpu(6_000_000)
}

/// 3 ms of a 10 ms round.
#[inline(never)]
fn tick_b() -> u64 {
    spin_cpu(3_000_000)
}

/// 1 ms of a 10 ms round.
#[inline(never)]
fn tick_c() -> u64 {
    spin_cpu(1_000_000)
}

/// C without frame pointers: `c_outer` calls `c_inner`, which spins.
const C_SOURCE: &str = r#"
__attribute__((noinline)) unsigned long c_inner(unsigned long n) {
    volatile unsigned long x = 1;
    for (unsigned long i = 0; i < n; i++) x = x * 6364136223846793005UL + i;
    return x;
}
unsigned long c_outer(unsigned long n) {
    unsigned long s = 0;
    for (int k = 0; k < 4; k++) s += c_inner(n / 4);
    return s;
}
"#;

/// Builds [`C_SOURCE`] into a shared library under `dir`.
fn build_c_library(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("cspin.c");
    let lib = dir.join("libcspin.so");
    std::fs::write(&src, C_SOURCE).unwrap();
    let out = std::process::Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .expect("`cc` must be installed to build the C workload");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

type CFn = unsafe extern "C" fn(u64) -> u64;

/// `c_outer` of the library at `path`, loaded now.
fn load_c_outer(path: &str) -> CFn {
    let c_path = std::ffi::CString::new(path).unwrap();
    // SAFETY: dlopen with a valid C string; the handle is never closed.
    let h = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW) };
    assert!(!h.is_null(), "dlopen {path} failed");
    // SAFETY: a live handle and a NUL-terminated name.
    let f = unsafe { libc::dlsym(h, c"c_outer".as_ptr()) };
    assert!(!f.is_null(), "no c_outer in {path}");
    // SAFETY: c_outer has this signature in C_SOURCE.
    unsafe { std::mem::transmute::<*mut libc::c_void, CFn>(f) }
}

/// Time spent in the C library.
#[inline(never)]
fn c_work(f: CFn, n: u64) -> u64 {
    // SAFETY: c_outer only computes.
    black_box(unsafe { f(black_box(n)) })
}

/// Runs `f`, adding the thread CPU time it took to `acc`.
fn timed<T>(acc: &mut u64, f: impl FnOnce() -> T) -> T {
    let t0 = thread_cpu_ns();
    let r = f();
    *acc += thread_cpu_ns() - t0;
    r
}

/// Names of the functions each job measures.
fn job_functions(job: &str) -> &'static [&'static str] {
    match job {
        "libc" => &["copy_work", "write_work", "vdso_work", "compute_work"],
        "periodic" => &["tick_a", "tick_b", "tick_c"],
        "cfunc" => &["c_work", "compute_work"],
        other => panic!("unknown job {other}"),
    }
}

/// One thread's share of a job: CPU ns per function, in
/// [`job_functions`] order.
fn run_job(job: &str, until: Instant) -> Vec<u64> {
    let mut acc = vec![0u64; job_functions(job).len()];
    match job {
        "libc" => {
            let src = vec![7u8; 256 * 1024];
            let mut dst = vec![0u8; 256 * 1024];
            let mut null = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .unwrap();
            let buf = [1u8; 4096];
            while Instant::now() < until {
                timed(&mut acc[0], || copy_work(&src, &mut dst, 120));
                timed(&mut acc[1], || write_work(&mut null, &buf, 3000));
                timed(&mut acc[2], || vdso_work(4_000));
                timed(&mut acc[3], || compute_work(100_000));
            }
        }
        "periodic" => {
            while Instant::now() < until {
                timed(&mut acc[0], tick_a);
                timed(&mut acc[1], tick_b);
                timed(&mut acc[2], tick_c);
            }
        }
        "cfunc" => {
            let f = load_c_outer(&std::env::var("TRUTH_CLIB").unwrap());
            while Instant::now() < until {
                timed(&mut acc[0], || c_work(f, 2_000_000));
                timed(&mut acc[1], || compute_work(1_000_000));
            }
        }
        other => panic!("unknown job {other}"),
    }
    acc
}

/// Child: agent from the environment, the job named by `TRUTH_JOB` on two
/// threads, report each function's CPU time.
pub fn child_truth() {
    let job = std::env::var("TRUTH_JOB").unwrap();
    let agent = kiln_agent::Agent::from_env()
        .unwrap()
        .service("truth")
        .instance("test")
        .start()
        .unwrap();
    let seconds: u64 = std::env::var("TRUTH_SECONDS").unwrap().parse().unwrap();
    let until = Instant::now() + Duration::from_secs(seconds);
    let j = job.clone();
    let t = std::thread::Builder::new()
        .name("worker-1".into())
        .spawn(move || run_job(&j, until))
        .unwrap();
    let mine = run_job(&job, until);
    let theirs = t.join().unwrap();
    let status = agent.status();
    agent.stop().unwrap();
    let truth: Vec<u64> = mine.iter().zip(&theirs).map(|(a, b)| a + b).collect();
    println!(
        "KILN_REPORT {}",
        json!({"status": status, "truth_ns": truth})
    );
}

/// Each measured function's share of the profile (by total) next to its
/// share of the measured CPU time; asserts they agree within 4 points.
/// Sampling is random, so the run is long enough that 4 points are more
/// than 3.5 standard deviations of the sampling error: at least 1,500
/// samples (2 threads × `hz` × `seconds`) under perf. CPU timers fire on
/// scheduler ticks, whose fixed grid leaves neighbouring samples less
/// independent (a run of 1,600 missed by 5 points once in five), so
/// they get twice the samples.
fn check(job: &str, engine: &str, hz: u32) {
    let samples = if engine == "perf" { 1500 } else { 3000 };
    let seconds = (samples as u32).div_ceil(2 * hz).max(3);
    let dir = tempfile::tempdir().unwrap();
    let clib = tempfile::tempdir().unwrap();
    let clib = build_c_library(clib.path());
    let out = run_child(
        "truth",
        &[
            ("TRUTH_JOB", job.to_string()),
            ("TRUTH_SECONDS", seconds.to_string()),
            ("TRUTH_CLIB", clib.display().to_string()),
            ("KILN_ENGINE", engine.to_string()),
            ("KILN_CPU_HZ", hz.to_string()),
            ("KILN_WINDOW", "1s".into()),
            ("KILN_DIR", dir.path().display().to_string()),
        ],
    );
    let report = child_report(&out);
    assert_eq!(report["status"]["engine"], engine, "{report}");
    let truth: Vec<f64> = report["truth_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let p = merged(dir.path());
    let ty = p.sample_type_index("cpu").unwrap();
    let top = kiln_profile::top(&p, ty).unwrap();
    let names = job_functions(job);
    let got: Vec<f64> = names
        .iter()
        .map(|n| {
            let suffix = format!("::{n}");
            top.rows
                .iter()
                .filter(|r| r.name.ends_with(&suffix))
                .map(|r| r.total)
                .max()
                .unwrap_or(0) as f64
        })
        .collect();
    let (tsum, gsum): (f64, f64) = (truth.iter().sum(), got.iter().sum());
    assert!(gsum > 0.0, "{job}/{engine}: none of {names:?} sampled");
    let rows: Vec<String> = top.rows[..top.rows.len().min(12)]
        .iter()
        .map(|r| format!("{} self={} total={}", r.name, r.self_value, r.total))
        .collect();
    let pct = |v: &[f64], sum: f64| -> Vec<String> {
        v.iter()
            .map(|x| format!("{:.1}", x * 100.0 / sum))
            .collect()
    };
    eprintln!(
        "TRUTH {job}/{engine} at {hz} Hz, {names:?}: CPU {:?}, profile {:?}",
        pct(&truth, tsum),
        pct(&got, gsum)
    );
    for (i, n) in names.iter().enumerate() {
        let (want, have) = (truth[i] / tsum, got[i] / gsum);
        assert!(
            (want - have).abs() <= 0.04,
            "{job}/{engine} at {hz} Hz: {n} has {:.1}% of the profile, {:.1}% of the CPU \
             (truth {truth:?}, profile {got:?}); of all samples the job functions hold {:.1}%\n{}",
            have * 100.0,
            want * 100.0,
            gsum * 100.0 / top.total as f64,
            rows.join("\n")
        );
    }
    // The measured functions are nearly all the CPU: what is left is the
    // loop between them and the clock reads around them.
    assert!(
        gsum >= 0.85 * top.total as f64,
        "{job}/{engine}: the job's functions hold only {:.1}% of the samples\n{}",
        gsum * 100.0 / top.total as f64,
        rows.join("\n")
    );
}

#[test]
fn time_in_libc_vdso_and_syscalls_keeps_its_caller_under_perf() {
    check("libc", "perf", 250);
}

#[test]
fn time_in_libc_vdso_and_syscalls_keeps_its_caller_under_ctimer() {
    check("libc", "ctimer", 100);
}

#[test]
fn rounds_of_one_period_do_not_alias_under_ctimer() {
    check("periodic", "ctimer", 100);
}

#[test]
fn rounds_of_one_period_do_not_alias_under_perf() {
    check("periodic", "perf", 100);
}

// Not under itimer: over four runs it gave `write_work` (time in
// write(2)) 20.6–27.4% of the profile for 27.4–28.4% of the CPU, beyond
// 4 points in two; the process-wide timer under-counts syscall-heavy
// code and the cause is not found yet (issue 11's note). perf and ctimer,
// the engines a service runs on, are held to 4 points above.

#[test]
fn rounds_of_one_period_do_not_alias_under_itimer() {
    check("periodic", "itimer", 100);
}

#[test]
fn c_without_frame_pointers_loaded_later_keeps_its_caller_under_perf() {
    check("cfunc", "perf", 250);
}

#[test]
fn c_without_frame_pointers_loaded_later_keeps_its_caller_under_ctimer() {
    check("cfunc", "ctimer", 250);
}
