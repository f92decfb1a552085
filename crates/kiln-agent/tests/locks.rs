//! Lock profiling against a workload's own clocks: threads wait on a
//! named `Mutex`, on a `Mutex` known by its creation line, on an
//! `RwLock` held by a writer and on a `lock_api` mutex over
//! `kiln_agent::sync::RawMutex`, each waiter timing its own waits. The
//! lock profile must charge each waiting function its delay within ±25%
//! under the right `lock` label; `/debug/pprof/mutex` must answer as Go's
//! does (and `go tool pprof` read it), a lock session ship a profile of
//! its own, and `/metrics` give each lock's wait quantiles. Then std's
//! API: poisoning, `Condvar`, `get_mut`, `into_inner`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_agent::sync::{Mutex, RwLock};

mod common;

/// One agent per process: the tests take turns.
static ONE_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Time this thread spent inside `lock` calls, and the waits themselves.
#[derive(Default)]
struct Waits {
    total: Duration,
    each: Vec<Duration>,
}

impl Waits {
    fn add(&mut self, d: Duration) {
        self.total += d;
        self.each.push(d);
    }
}

/// Holds `hold` for `for_` with the lock taken by `take`, again and again,
/// so that waiters find it held.
fn holder<G>(stop: &AtomicBool, take: impl Fn() -> G, hold: Duration) {
    while !stop.load(Ordering::Relaxed) {
        let g = take();
        std::thread::sleep(hold);
        drop(g);
        std::thread::sleep(Duration::from_micros(300));
    }
}

#[inline(never)]
fn wait_for_ledger(lock: &Mutex<u64>, stop: &AtomicBool) -> Waits {
    let mut w = Waits::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut g = lock.lock().unwrap();
        w.add(t0.elapsed());
        *g += 1;
        drop(g);
        std::thread::sleep(Duration::from_micros(500));
    }
    w
}

#[inline(never)]
fn wait_for_site(lock: &Mutex<u64>, stop: &AtomicBool) -> Waits {
    let mut w = Waits::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut g = lock.lock().unwrap();
        w.add(t0.elapsed());
        *g += 1;
        drop(g);
        std::thread::sleep(Duration::from_micros(500));
    }
    w
}

#[inline(never)]
fn read_index(lock: &RwLock<Vec<u64>>, stop: &AtomicBool) -> Waits {
    let mut w = Waits::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let g = lock.read().unwrap();
        w.add(t0.elapsed());
        std::hint::black_box(g.len());
        drop(g);
        std::thread::sleep(Duration::from_micros(500));
    }
    w
}

/// A microsecond of work, on the CPU.
fn spin(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Many short waits: a hot counter whose holders compute a microsecond
/// inside it, so most waits are a few microseconds (sampled rarely,
/// weighted up) and some, when a holder is preempted, milliseconds.
#[inline(never)]
fn bump_counter(lock: &Mutex<u64>, stop: &AtomicBool) -> Waits {
    let mut w = Waits::default();
    while !stop.load(Ordering::Relaxed) {
        // Only a lock that is taken waits: one free at once is no wait
        // (timing it too adds its clock reads, and any preemption between
        // them, to the truth, ~25% of this workload's on a 2-core VM).
        let mut g = match lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                let t0 = Instant::now();
                let g = lock.lock().unwrap();
                w.add(t0.elapsed());
                g
            }
        };
        spin(Duration::from_micros(1));
        *g += 1;
        drop(g);
        spin(Duration::from_micros(1));
    }
    w
}

type RawLocked = lock_api::Mutex<kiln_agent::sync::RawMutex, u64>;

#[inline(never)]
fn wait_on_raw(lock: &RawLocked, stop: &AtomicBool) -> Waits {
    let mut w = Waits::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut g = lock.lock();
        w.add(t0.elapsed());
        *g += 1;
        drop(g);
        std::thread::sleep(Duration::from_micros(500));
    }
    w
}

const WAITERS: [&str; 5] = [
    "wait_for_ledger",
    "wait_for_site",
    "read_index",
    "wait_on_raw",
    "bump_counter",
];

/// Per (waiting function, lock label), the value of sample type `ty`.
fn by_waiter(p: &kiln_profile::Profile, ty: &str) -> BTreeMap<(&'static str, String), i64> {
    let i = p.sample_type_index(ty).expect(ty);
    let n = p.sample_types.len();
    let mut out = BTreeMap::new();
    for (k, s) in p.samples.iter().enumerate() {
        let names: Vec<&str> = p
            .stack(s.stack)
            .iter()
            .flat_map(|&l| p.locations[l.0 as usize].lines.iter())
            .map(|ln| p.str(p.functions[ln.function.0 as usize].name))
            .collect();
        let lock = p
            .labels(s.labels)
            .iter()
            .find(|l| p.str(l.key) == "lock")
            .map(|l| p.str(l.str).to_string())
            .unwrap_or_default();
        if let Some(f) = WAITERS
            .iter()
            .find(|f| names.iter().any(|n| n.ends_with(&format!("::{f}"))))
        {
            *out.entry((*f, lock)).or_default() += p.values[k * n + i];
        }
    }
    out
}

/// The `q` quantile of `waits`.
fn quantile(waits: &[Duration], q: f64) -> Duration {
    let mut v = waits.to_vec();
    v.sort_unstable();
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

#[test]
fn waits_are_charged_to_the_waiting_function_and_the_right_lock() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("lock-truth")
        .cpu_hz(0)
        .window(Duration::from_secs(600))
        .write_to_dir(dir.path())
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let st = agent.status();
    assert!(st.lock.on, "{:?}", st.lock);
    let base = format!("http://{}", st.control[0]);
    let c = reqwest::blocking::Client::new();
    let r = c
        .post(format!("{base}/debug/kiln/start?event=lock&duration=60s"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let started: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(started["event"], "lock");
    let session = started["id"].as_str().unwrap().to_string();

    let ledger = Arc::new(Mutex::named("ledger", 0u64));
    let site_line = line!() + 1;
    let by_site = Arc::new(Mutex::new(0u64));
    let index = Arc::new(RwLock::named("index", vec![1u64, 2, 3]));
    let raw = Arc::new(RawLocked::new(0));
    let counter = Arc::new(Mutex::named("counter", 0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let mut holders = Vec::new();
    {
        let (l, s) = (ledger.clone(), stop.clone());
        holders.push(std::thread::spawn(move || {
            holder(&s, || l.lock().unwrap(), Duration::from_millis(2))
        }));
        let (l, s) = (by_site.clone(), stop.clone());
        holders.push(std::thread::spawn(move || {
            holder(&s, || l.lock().unwrap(), Duration::from_millis(1))
        }));
        let (l, s) = (index.clone(), stop.clone());
        holders.push(std::thread::spawn(move || {
            holder(&s, || l.write().unwrap(), Duration::from_millis(3))
        }));
        let (l, s) = (raw.clone(), stop.clone());
        holders.push(std::thread::spawn(move || {
            holder(&s, || l.lock(), Duration::from_millis(2))
        }));
    }
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let (l, s) = (ledger.clone(), stop.clone());
        waiters.push((
            "wait_for_ledger",
            std::thread::spawn(move || wait_for_ledger(&l, &s)),
        ));
        let (l, s) = (by_site.clone(), stop.clone());
        waiters.push((
            "wait_for_site",
            std::thread::spawn(move || wait_for_site(&l, &s)),
        ));
        let (l, s) = (index.clone(), stop.clone());
        waiters.push(("read_index", std::thread::spawn(move || read_index(&l, &s))));
        let (l, s) = (raw.clone(), stop.clone());
        waiters.push((
            "wait_on_raw",
            std::thread::spawn(move || wait_on_raw(&l, &s)),
        ));
        let (l, s) = (counter.clone(), stop.clone());
        waiters.push((
            "bump_counter",
            std::thread::spawn(move || bump_counter(&l, &s)),
        ));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let mut truth: BTreeMap<&str, Waits> = BTreeMap::new();
    for (f, h) in waiters {
        let w = h.join().unwrap();
        let t = truth.entry(f).or_default();
        t.total += w.total;
        t.each.extend(w.each);
    }
    for h in holders {
        h.join().unwrap();
    }
    let st = agent.status();
    assert_eq!(st.lock.dropped, 0, "{:?}", st.lock);
    assert!(st.lock.sampled > 100, "{:?}", st.lock);

    // Go's mutex profile from the endpoint; `go tool pprof` reads it.
    let r = c.get(format!("{base}/debug/pprof/mutex")).send().unwrap();
    assert_eq!(r.status(), 200);
    let raw_pprof = r.bytes().unwrap();
    let since_start = kiln_profile::decode(&raw_pprof, &Default::default()).unwrap();
    let file = dir.path().join("mutex.pb.gz");
    std::fs::write(&file, &raw_pprof).unwrap();
    let text = common::go_top(&file, &["-sample_index=delay"]);
    assert!(text.contains("Type: delay"), "{text}");
    assert!(text.contains("wait_for_ledger"), "{text}");
    std::fs::remove_file(&file).unwrap();

    // Each lock's wait quantiles in /metrics.
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let metric = |lock: &str, q: &str| -> f64 {
        let key = format!("kiln_lock_wait_seconds{{lock=\"{lock}\",quantile=\"{q}\"}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("no {key} in\n{metrics}"));
        line[key.len()..].parse().unwrap()
    };
    let long: Vec<Duration> = truth["wait_for_ledger"]
        .each
        .iter()
        .copied()
        .filter(|d| *d > Duration::from_micros(50))
        .collect();
    let p99 = quantile(&long, 0.99).as_secs_f64();
    let got = metric("ledger", "0.99");
    eprintln!("TRUTH ledger p99 wait {p99:.6} s, /metrics says {got:.6} s");
    assert!(
        got > p99 * 0.7 && got < p99 * 1.3,
        "ledger p99: {got} by /metrics, {p99} by the waiters' clocks"
    );

    let r = c
        .post(format!("{base}/debug/kiln/stop?id={session}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    agent.stop().unwrap();

    let site = format!("crates/kiln-agent/tests/locks.rs:{site_line}");
    let want_lock = |f: &str| -> String {
        match f {
            "wait_for_ledger" => "ledger".into(),
            "wait_for_site" => site.clone(),
            "read_index" => "index".into(),
            "bump_counter" => "counter".into(),
            _ => String::new(),
        }
    };
    let written = common::profiles(dir.path(), "mutex");
    assert_eq!(written.len(), 2, "the session's profile and the window's");
    for p in written.iter().chain(std::iter::once(&since_start)) {
        assert_eq!(p.str(p.default_sample_type), "delay");
        let delay = by_waiter(p, "delay");
        let mut report = Vec::new();
        for f in WAITERS {
            let want = truth[f].total.as_nanos() as f64;
            let got: i64 = delay
                .iter()
                .filter(|((g, _), _)| *g == f)
                .map(|(_, v)| *v)
                .sum();
            let labels: Vec<&String> = delay
                .keys()
                .filter(|(g, _)| *g == f)
                .map(|(_, l)| l)
                .collect();
            report.push(format!(
                "{f}: {:.3} s (truth {:.3} s) under {labels:?}",
                got as f64 / 1e9,
                want / 1e9
            ));
            // A contended acquisition's bookkeeping (counts, histogram,
            // the draw) runs after its wait is timed, with the lock held,
            // and the waiter's clock counts it: for the counter's
            // microsecond waits the agent's total came out 0.71-0.81 of
            // the waiters' clocks on the 2-core VM (2026-12-06, written
            // down in issue 12). Longer waits are held to ±25%.
            let low = if f == "bump_counter" { 0.6 } else { 0.75 };
            assert!(
                got as f64 >= low * want && got as f64 <= 1.25 * want,
                "{}",
                report.join("; ")
            );
            // Every wait of the function is charged to its lock.
            let lock = want_lock(f);
            if lock.is_empty() {
                assert!(
                    labels.iter().all(|l| l.contains("wait_on_raw")),
                    "{f}: {labels:?}"
                );
            } else {
                assert_eq!(labels, [&lock], "{f}");
            }
        }
        eprintln!("TRUTH lock delay: {}", report.join("; "));
        let short = truth["bump_counter"]
            .each
            .iter()
            .filter(|d| **d < Duration::from_micros(100))
            .count();
        eprintln!(
            "TRUTH bump_counter: {} waits, {short} under 100 µs",
            truth["bump_counter"].each.len()
        );
        let contentions = by_waiter(p, "contentions");
        let n: i64 = contentions
            .iter()
            .filter(|((g, _), _)| *g == "wait_for_ledger")
            .map(|(_, v)| *v)
            .sum();
        let all = truth["wait_for_ledger"].each.len() as i64;
        assert!(
            n as f64 >= long.len() as f64 * 0.75 && n <= all + all / 4,
            "wait_for_ledger: {n} contentions by the profile, {} long waits of {all}",
            long.len()
        );
    }
}

#[test]
fn std_semantics_hold_poisoning_condvar_and_moves() {
    let m = Arc::new(Mutex::new(5));
    let m2 = m.clone();
    let r = std::thread::spawn(move || {
        let _g = m2.lock().unwrap();
        panic!("poison it");
    })
    .join();
    assert!(r.is_err());
    assert!(m.is_poisoned());
    assert_eq!(*m.lock().unwrap_err().into_inner(), 5);
    m.clear_poison();
    assert!(!m.is_poisoned());
    assert!(m.try_lock().is_ok());

    // A std Condvar waits on a kiln Mutex's guard.
    let pair = Arc::new((Mutex::named("ready", false), std::sync::Condvar::new()));
    let p2 = pair.clone();
    let t = std::thread::spawn(move || {
        *p2.0.lock().unwrap() = true;
        p2.1.notify_one();
    });
    let mut ready = pair.0.lock().unwrap();
    while !*ready {
        ready = pair.1.wait(ready).unwrap();
    }
    drop(ready);
    t.join().unwrap();

    let mut rw = RwLock::new(vec![1]);
    rw.get_mut().unwrap().push(2);
    {
        let a = rw.read().unwrap();
        let b = rw.read().unwrap();
        assert_eq!(a.len() + b.len(), 4);
        assert!(rw.try_write().is_err());
    }
    rw.write().unwrap().push(3);
    assert_eq!(rw.into_inner().unwrap(), [1, 2, 3]);
    let site = Mutex::new(()).site();
    assert_eq!(
        site.label().unwrap(),
        format!("crates/kiln-agent/tests/locks.rs:{}", line!() - 3)
    );
    assert_eq!(Mutex::named("x", ()).site().label().as_deref(), Some("x"));
    static GLOBAL: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    GLOBAL.lock().unwrap().push(1);
    assert_eq!(GLOBAL.lock().unwrap().len(), 1);
}
