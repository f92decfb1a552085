//! Wall-clock sampling against a workload's own clocks: a thread that
//! computes a known share of its time and sleeps the rest, a thread that
//! waits on a `kiln_agent::sync` lock most of the time, spinners that
//! outnumber the cores (runnable), and a crowd of idle threads. The wall
//! profile must give each its shares within ±7 points under the right
//! `thread_state`, weigh every thread by the real time it was watched,
//! and leave the idle ones unsignalled after their first sample.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

#[inline(never)]
fn compute_part(d: Duration) {
    let t0 = Instant::now();
    let mut x = 1u64;
    while t0.elapsed() < d {
        for i in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
}

#[inline(never)]
fn sleep_part(d: Duration) {
    std::thread::sleep(d);
}

/// Computes 30 ms, sleeps 70 ms; the time of each by its own clock.
#[inline(never)]
fn mixer(stop: &AtomicBool) -> (Duration, Duration) {
    let (mut busy, mut idle) = (Duration::ZERO, Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        compute_part(Duration::from_millis(30));
        let t1 = Instant::now();
        sleep_part(Duration::from_millis(70));
        busy += t1 - t0;
        idle += t1.elapsed();
    }
    (busy, idle)
}

#[inline(never)]
fn wait_on_lock(lock: &kiln_agent::sync::Mutex<u64>, stop: &AtomicBool) -> (Duration, Duration) {
    let t_all = Instant::now();
    let mut waiting = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut g = lock.lock().unwrap();
        waiting += t0.elapsed();
        *g += 1;
        drop(g);
        std::thread::sleep(Duration::from_millis(5));
    }
    (waiting, t_all.elapsed())
}

/// This thread's CPU time, from its schedstat.
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(s.split_whitespace().next().unwrap().parse().unwrap())
}

#[inline(never)]
fn spin(stop: &AtomicBool) {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Per thread name, per (state, whether `func` is on the stack), the
/// wall nanoseconds.
type ByThread = BTreeMap<String, BTreeMap<(String, bool), i64>>;

fn by_thread(p: &kiln_profile::Profile, funcs: &[&str]) -> ByThread {
    let i = p.sample_type_index("wall").unwrap();
    let n = p.sample_types.len();
    let mut out = ByThread::new();
    for (k, s) in p.samples.iter().enumerate() {
        let label = |key: &str| {
            p.labels(s.labels)
                .iter()
                .find(|l| p.str(l.key) == key)
                .map(|l| p.str(l.str).to_string())
                .unwrap_or_default()
        };
        let names: Vec<&str> = p
            .stack(s.stack)
            .iter()
            .flat_map(|&l| p.locations[l.0 as usize].lines.iter())
            .map(|ln| p.str(p.functions[ln.function.0 as usize].name))
            .collect();
        let on = funcs
            .iter()
            .any(|f| names.iter().any(|n| n.ends_with(&format!("::{f}"))));
        *out.entry(label("thread_name"))
            .or_default()
            .entry((label("thread_state"), on))
            .or_default() += p.values[k * n + i];
    }
    out
}

fn share(m: &BTreeMap<(String, bool), i64>, f: impl Fn(&str, bool) -> bool) -> f64 {
    let all: i64 = m.values().sum();
    let part: i64 = m
        .iter()
        .filter(|((s, on), _)| f(s, *on))
        .map(|(_, v)| v)
        .sum();
    100.0 * part as f64 / all.max(1) as f64
}

#[test]
fn every_thread_is_sampled_with_its_state_and_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("wall-truth")
        .cpu_hz(97)
        .wall_hz(100)
        .thread_stats(false)
        .window(Duration::from_secs(600))
        .write_to_dir(dir.path())
        .start()
        .unwrap();
    assert_eq!(agent.status().wall.hz, 100);
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |name: &str, f: Box<dyn FnOnce() -> (Duration, Duration) + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .unwrap()
    };
    let s = stop.clone();
    let mix = spawn("mixer", Box::new(move || mixer(&s)));
    let lock = Arc::new(kiln_agent::sync::Mutex::named("gate", 0u64));
    let (l, s) = (lock.clone(), stop.clone());
    let holder = spawn(
        "gatekeeper",
        Box::new(move || {
            while !s.load(Ordering::Relaxed) {
                let g = l.lock().unwrap();
                std::thread::sleep(Duration::from_millis(100));
                drop(g);
                std::thread::sleep(Duration::from_millis(1));
            }
            (Duration::ZERO, Duration::ZERO)
        }),
    );
    let (l, s) = (lock.clone(), stop.clone());
    let waiter = spawn("gate-waiter", Box::new(move || wait_on_lock(&l, &s)));
    let spinners: Vec<_> = (0..3)
        .map(|i| {
            let s = stop.clone();
            spawn(
                &format!("spinner-{i}"),
                Box::new(move || {
                    let cpu0 = thread_cpu();
                    spin(&s);
                    (thread_cpu() - cpu0, Duration::ZERO)
                }),
            )
        })
        .collect();
    let idle: Vec<_> = (0..50)
        .map(|i| {
            let s = stop.clone();
            spawn(
                &format!("idler-{i}"),
                Box::new(move || {
                    while !s.load(Ordering::Relaxed) {
                        std::thread::park_timeout(Duration::from_millis(200));
                    }
                    (Duration::ZERO, Duration::ZERO)
                }),
            )
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let watched = started.elapsed();
    let (busy, asleep) = mix.join().unwrap();
    let (waited, waiter_all) = waiter.join().unwrap();
    holder.join().unwrap();
    let spun: Vec<Duration> = spinners.into_iter().map(|h| h.join().unwrap().0).collect();
    for h in idle {
        h.join().unwrap();
    }
    let st = agent.status();
    agent.stop().unwrap();
    eprintln!("TRUTH wall status: {:?}", st.wall);

    let files = common::files(dir.path(), "wall");
    let cpu_files = common::files(dir.path(), "process_cpu");
    assert_eq!(files.len(), 1, "{files:?}");
    let raw = std::fs::read(&files[0]).unwrap();
    let p = kiln_profile::decode(&raw, &Default::default()).unwrap();
    assert_eq!(p.str(p.default_sample_type), "wall");
    let t = by_thread(&p, &["compute_part", "wait_on_lock"]);

    // The mixer: computing when it computes, asleep when it sleeps.
    let m = &t["mixer"];
    let want_busy = 100.0 * busy.as_secs_f64() / (busy + asleep).as_secs_f64();
    let got_busy = share(m, |s, on| on && (s == "running" || s == "runnable"));
    let got_sleep = share(m, |s, on| !on && s == "sleeping");
    eprintln!(
        "TRUTH mixer: computing {got_busy:.1}% (truth {want_busy:.1}%), sleeping {got_sleep:.1}% (truth {:.1}%): {m:?}",
        100.0 - want_busy
    );
    assert!((got_busy - want_busy).abs() <= 7.0, "{m:?}");
    assert!((got_sleep - (100.0 - want_busy)).abs() <= 7.0, "{m:?}");

    // The waiter: in state `lock` as long as it waits.
    let w = &t["gate-waiter"];
    let want_lock = 100.0 * waited.as_secs_f64() / waiter_all.as_secs_f64();
    let got_lock = share(w, |s, on| on && s == "lock");
    eprintln!("TRUTH gate-waiter: lock {got_lock:.1}% (truth {want_lock:.1}%): {w:?}");
    assert!((got_lock - want_lock).abs() <= 7.0, "{w:?}");

    // Three spinners on two cores: on a CPU or waiting for one.
    for i in 0..3 {
        let sp = &t[&format!("spinner-{i}")];
        let cpu_bound = share(sp, |s, _| s == "running" || s == "runnable");
        assert!(cpu_bound >= 90.0, "spinner-{i}: {sp:?}");
    }
    let runnable: f64 = (0..3)
        .map(|i| share(&t[&format!("spinner-{i}")], |s, _| s == "runnable"))
        .sum::<f64>();
    eprintln!("TRUTH spinners runnable: {runnable:.1}% summed over three");
    assert!(runnable > 5.0, "three spinners on two cores wait for a CPU");

    // The CPU profile beside it still sees all of the spinners' CPU: the
    // wall sampler's signals must not swallow the CPU engine's.
    let cpu =
        kiln_profile::decode(&std::fs::read(&cpu_files[0]).unwrap(), &Default::default()).unwrap();
    for (i, own) in spun.iter().enumerate() {
        let name = format!("spinner-{i}");
        let sampled = common::labelled(&cpu, "cpu", "thread_name", &name);
        let own = own.as_nanos() as f64;
        eprintln!("TRUTH {name}: {sampled} ns sampled, {own} ns by its clock");
        assert!(
            (sampled as f64 - own).abs() <= 0.2 * own,
            "{name}: {sampled} ns of CPU sampled, {own} on its own clock"
        );
    }

    // Every thread is weighed by the time it was watched.
    for (name, m) in &t {
        if name.starts_with("idler-") || name == "mixer" || name == "gate-waiter" {
            let ns: i64 = m.values().sum();
            let ratio = ns as f64 / watched.as_nanos() as f64;
            assert!(
                (0.85..1.1).contains(&ratio),
                "{name}: {ns} ns of wall for {watched:?} watched"
            );
        }
    }
    let idlers = t.keys().filter(|k| k.starts_with("idler-")).count();
    assert_eq!(idlers, 50, "every idle thread is sampled");
    for i in 0..50 {
        let m = &t[&format!("idler-{i}")];
        assert!(share(m, |s, _| s == "sleeping") >= 95.0, "idler-{i}: {m:?}");
    }
    // A thread that gets no CPU before the next tick misses its sample
    // (a loaded machine): rare.
    let samples = p.total(p.sample_type_index("samples").unwrap());
    assert!(
        st.wall.missed as i64 * 50 <= samples,
        "{:?} of {samples} samples",
        st.wall
    );

    // `go tool pprof` reads it.
    let text = common::go_top(&files[0], &["-tagfocus=thread_state=lock"]);
    assert!(text.contains("Type: wall"), "{text}");
    assert!(text.contains("wait_on_lock"), "{text}");
}
