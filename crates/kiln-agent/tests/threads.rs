//! Per-thread figures against each thread's own counts: a thread that
//! spins knows its CPU time from its own clock; one that sleeps N times
//! switches out voluntarily at least that often, and one that exited
//! before the window ended keeps what it did. The window's `threads`
//! profile must say so, one sample per thread with its name, pool and id.

use std::time::{Duration, Instant};

mod common;

/// One agent per process: the tests take turns.
static ONE_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the calling thread's CPU clock into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Per thread name, its four values summed over the profiles.
fn by_thread(ps: &[kiln_profile::Profile]) -> std::collections::BTreeMap<String, [i64; 4]> {
    let mut out = std::collections::BTreeMap::new();
    for p in ps {
        let n = p.sample_types.len();
        assert_eq!(n, 4);
        for (k, s) in p.samples.iter().enumerate() {
            let name = p
                .labels(s.labels)
                .iter()
                .find(|l| p.str(l.key) == "thread_name")
                .map(|l| p.str(l.str).to_string())
                .unwrap_or_default();
            let e: &mut [i64; 4] = out.entry(name).or_default();
            for (i, v) in e.iter_mut().enumerate() {
                *v += p.values[k * n + i];
            }
        }
    }
    out
}

#[test]
fn each_thread_s_cpu_and_switches_match_its_own_counts() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("threads-truth")
        .cpu_hz(0)
        .alloc_sample_bytes(0)
        .window(Duration::from_secs(600))
        .write_to_dir(dir.path())
        .start()
        .unwrap();
    // Sleeps 1,000 times over ~2 s, then exits before the window ends:
    // what it did until the agent's last read of it (every second) stays.
    let sleeper = std::thread::Builder::new()
        .name("sleeper-1".into())
        .spawn(|| {
            for _ in 0..1000 {
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("worker-7".into())
        .spawn(move || {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < Duration::from_millis(300) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let cpu = thread_cpu_ns();
            for _ in 0..500 {
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = rx.recv();
            cpu
        })
        .unwrap();
    sleeper.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    agent.stop().unwrap();
    tx.send(()).unwrap();
    let worker_cpu = worker.join().unwrap() as i64;
    let ps = common::profiles(dir.path(), "threads");
    assert_eq!(ps.len(), 1, "one window");
    let p = &ps[0];
    assert_eq!(p.sample_type_names(0), ("cpu", "nanoseconds"));
    assert_eq!(p.sample_type_names(2), ("voluntary_switches", "count"));
    let t = by_thread(&ps);
    let w = t
        .get("worker-7")
        .unwrap_or_else(|| panic!("no worker-7 in {t:?}"));
    assert!(
        (w[0] - worker_cpu).abs() <= worker_cpu / 10 + 5_000_000,
        "worker-7: {} ns by the profile, {worker_cpu} by its clock",
        w[0]
    );
    assert!(
        w[2] >= 500,
        "worker-7 slept 500 times: {} voluntary switches",
        w[2]
    );
    let s = t
        .get("sleeper-1")
        .unwrap_or_else(|| panic!("no sleeper-1 in {t:?}"));
    assert!(
        s[2] >= 400,
        "sleeper-1, gone by the window's end: {} switches",
        s[2]
    );
    // Pool and id labels.
    let labels: Vec<(String, String)> = p
        .samples
        .iter()
        .flat_map(|s| p.labels(s.labels).iter())
        .map(|l| (p.str(l.key).to_string(), p.str(l.str).to_string()))
        .collect();
    assert!(
        labels.contains(&("thread_pool".into(), "worker-*".into())),
        "{labels:?}"
    );
    assert!(
        labels
            .iter()
            .any(|(k, v)| k == "thread_id" && v.parse::<u32>().is_ok())
    );
}

#[test]
fn a_thread_that_yields_switches_orders_of_magnitude_more_than_one_that_spins() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("threads-switches")
        .cpu_hz(0)
        .alloc_sample_bytes(0)
        .window(Duration::from_secs(600))
        .write_to_dir(dir.path())
        .start()
        .unwrap();
    // Both stay alive until the agent has read them after their work
    // (every second: a thread's last second before it exits is not seen).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let (d, g) = (done_tx.clone(), go_rx.clone());
    let spinner = std::thread::Builder::new()
        .name("spinner".into())
        .spawn(move || {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < Duration::from_secs(1) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            d.send(()).unwrap();
            let _ = g.lock().unwrap().recv();
        })
        .unwrap();
    // Hands its work off and waits for it, as a pool offloading short
    // tasks does: a switch per task.
    let yielder = std::thread::Builder::new()
        .name("yielder".into())
        .spawn(move || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_micros(20));
            }
            done_tx.send(()).unwrap();
            let _ = go_rx.lock().unwrap().recv();
        })
        .unwrap();
    done_rx.recv().unwrap();
    done_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    agent.stop().unwrap();
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap();
    spinner.join().unwrap();
    yielder.join().unwrap();
    let ps = common::profiles(dir.path(), "threads");
    let t = by_thread(&ps);
    let (s, y) = (t["spinner"], t["yielder"]);
    eprintln!("TRUTH switches: spinner {s:?}, yielder {y:?}");
    assert!(
        y[2] >= 100 * s[2].max(1) && y[2] >= 1000,
        "voluntary switches: yielder {}, spinner {}",
        y[2],
        s[2]
    );
    // The spinner computes; the yielder mostly waits (its 50,000 wakes
    // cost it a fifth of the spinner's CPU on an idle machine).
    assert!(s[0] > 2 * y[0], "cpu: spinner {}, yielder {}", s[0], y[0]);

    // `go tool pprof` reads the threads profile.
    let files = common::files(dir.path(), "threads");
    let text = common::go_top(&files[0], &["-sample_index=voluntary_switches"]);
    assert!(text.contains("Type: voluntary_switches"), "{text}");
    assert!(text.contains("yielder"), "{text}");
}
