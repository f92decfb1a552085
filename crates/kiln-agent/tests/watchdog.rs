//! The task watchdog against real hangs: a task past its deadline is
//! caught with its stack, two threads locking in opposite orders are one
//! deadlock, and a lock holder blocked outside any task is reported.

use std::time::{Duration, Instant};

mod common;

/// One agent per process: the tests take turns.
static ONE_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where the hung task waits.
#[inline(never)]
fn hang_here(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_watchdog_catches_a_task_past_its_deadline() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("watchdog-truth")
        .cpu_hz(0)
        .window(Duration::from_secs(1))
        .write_to_dir(dir.path())
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let base = format!("http://{}", agent.status().control[0]);
    let deadline = Duration::from_millis(200);
    // In time: never reported.
    for _ in 0..20 {
        let t = kiln_agent::task::start_with_deadline("quick", deadline);
        std::thread::sleep(Duration::from_millis(5));
        drop(t);
    }
    let hung = std::thread::Builder::new()
        .name("hung-worker".into())
        .spawn(move || {
            let t = kiln_agent::task::start_with_deadline("hang", deadline);
            hang_here(Duration::from_millis(1100));
            drop(t);
        })
        .unwrap();
    hung.join().unwrap();
    let v: serde_json::Value = reqwest::blocking::get(format!("{base}/debug/kiln/stuck"))
        .unwrap()
        .text()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    let metrics = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    agent.stop().unwrap();
    let events = v["events"].as_array().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap());
    assert!(
        events.iter().all(|e| e["task"] == "hang"),
        "only the hung task"
    );
    assert_eq!(
        events.len(),
        2,
        "caught past its deadline, and again past 4x"
    );
    let first = &events[0];
    let late = first["elapsed_ns"].as_u64().unwrap();
    assert!(
        (200_000_000..=240_000_000).contains(&late),
        "caught within 1.2x the deadline: {late} ns"
    );
    assert_eq!(first["thread_name"], "hung-worker");
    assert!(
        first["site"]
            .as_str()
            .unwrap()
            .starts_with("watchdog::hang_here:"),
        "{first}"
    );
    assert!(
        first["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("hang_here")),
        "the hanging function in its stack"
    );
    let second = &events[1];
    assert_eq!(second["capture"], 2);
    assert!(second["elapsed_ns"].as_u64().unwrap() >= 800_000_000);
    assert!(
        metrics.contains("kiln_task_stuck_total{task=\"hang\"} 1\n"),
        "counted once"
    );
    assert!(metrics.contains("kiln_task_stuck_total{task=\"quick\"} 0\n"));
    let shipped: i64 = common::profiles(dir.path(), "events")
        .iter()
        .map(|p| common::labelled(p, "events", "task", "hang"))
        .sum();
    assert_eq!(shipped, 2, "both captures shipped in the events profile");
}

/// Takes `first`, waits for the other thread to take its own, then takes
/// `second`: with the other thread doing the same the other way round,
/// neither ever gets its second lock.
#[inline(never)]
fn take_both(
    first: &kiln_agent::sync::Mutex<u64>,
    second: &kiln_agent::sync::Mutex<u64>,
    both_hold: &std::sync::Barrier,
) {
    let a = first.lock().unwrap();
    both_hold.wait();
    let b = second.lock().unwrap();
    std::hint::black_box((*a, *b));
}

#[test]
fn two_threads_locking_in_opposite_orders_are_one_deadlock() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let agent = kiln_agent::Agent::builder()
        .service("deadlock-truth")
        .cpu_hz(0)
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let base = format!("http://{}", agent.status().control[0]);
    static A: kiln_agent::sync::Mutex<u64> = kiln_agent::sync::Mutex::named("ledger_a", 1);
    static B: kiln_agent::sync::Mutex<u64> = kiln_agent::sync::Mutex::named("ledger_b", 2);
    static BOTH: std::sync::LazyLock<std::sync::Barrier> =
        std::sync::LazyLock::new(|| std::sync::Barrier::new(2));
    // Contended but not deadlocked: never reported.
    static C: kiln_agent::sync::Mutex<u64> = kiln_agent::sync::Mutex::named("busy", 0);
    let busy: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(3) {
                    let mut g = C.lock().unwrap();
                    *g += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    std::thread::Builder::new()
        .name("dl-a".into())
        .spawn(|| take_both(&A, &B, &BOTH))
        .unwrap();
    std::thread::Builder::new()
        .name("dl-b".into())
        .spawn(|| take_both(&B, &A, &BOTH))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let v: serde_json::Value = reqwest::blocking::get(format!("{base}/debug/kiln/stuck"))
            .unwrap()
            .text()
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        let d: Vec<serde_json::Value> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "deadlock")
            .cloned()
            .collect();
        if d.len() >= 2 || Instant::now() > until {
            break d;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for b in busy {
        b.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after: serde_json::Value = reqwest::blocking::get(format!("{base}/debug/kiln/stuck"))
        .unwrap()
        .text()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    agent.stop().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&events).unwrap());
    assert_eq!(
        events.len(),
        2,
        "one deadlock, one event per thread: {events:?}"
    );
    let by = |name: &str| {
        events
            .iter()
            .find(|e| e["thread_name"] == name)
            .unwrap()
            .clone()
    };
    let (a, b) = (by("dl-a"), by("dl-b"));
    assert_eq!(
        (a["waits_for"].as_str(), a["holds"].as_str()),
        (Some("ledger_b"), Some("ledger_a"))
    );
    assert_eq!(
        (b["waits_for"].as_str(), b["holds"].as_str()),
        (Some("ledger_a"), Some("ledger_b"))
    );
    for e in [&a, &b] {
        assert!(
            e["stack"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str().unwrap().contains("take_both")),
            "{e}"
        );
        assert!(
            e["site"]
                .as_str()
                .unwrap()
                .starts_with("watchdog::take_both:"),
            "{e}"
        );
        let cycle = e["cycle"].as_array().unwrap();
        assert!(
            cycle.len() == 2 && cycle.contains(&"dl-a".into()) && cycle.contains(&"dl-b".into())
        );
    }
    let all = after["events"].as_array().unwrap();
    assert_eq!(
        all.iter().filter(|e| e["kind"] == "deadlock").count(),
        2,
        "reported once, and the busy lock never"
    );
}

/// Holds `lock` while blocked in a read that gets no data until `pipe`
/// is written: no CPU progress, no context switch.
#[inline(never)]
fn block_in_read(lock: &kiln_agent::sync::Mutex<u64>, mut pipe: std::io::PipeReader) {
    use std::io::Read;
    let g = lock.lock().unwrap();
    let mut b = [0u8; 1];
    let _ = pipe.read(&mut b);
    drop(g);
}

#[test]
fn a_lock_holder_blocked_outside_any_task_is_reported() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let agent = kiln_agent::Agent::builder()
        .service("stall-truth")
        .cpu_hz(0)
        .watchdog(Duration::from_millis(800))
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let base = format!("http://{}", agent.status().control[0]);
    static POOL: kiln_agent::sync::Mutex<u64> = kiln_agent::sync::Mutex::named("pool", 0);
    let (reader, mut writer) = std::io::pipe().unwrap();
    let holder = std::thread::Builder::new()
        .name("pool-holder".into())
        .spawn(move || block_in_read(&POOL, reader))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let waiter = std::thread::Builder::new()
        .name("pool-waiter".into())
        .spawn(|| *POOL.lock().unwrap() += 1)
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let stalled = loop {
        let v: serde_json::Value = reqwest::blocking::get(format!("{base}/debug/kiln/stuck"))
            .unwrap()
            .text()
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        let s: Vec<serde_json::Value> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "stuck" && e["thread_name"] == "pool-holder")
            .cloned()
            .collect();
        if !s.is_empty() || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Three more checks: reported once.
    std::thread::sleep(Duration::from_millis(3000));
    let again: serde_json::Value = reqwest::blocking::get(format!("{base}/debug/kiln/stuck"))
        .unwrap()
        .text()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    use std::io::Write;
    writer.write_all(b"x").unwrap();
    holder.join().unwrap();
    waiter.join().unwrap();
    agent.stop().unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&stalled).unwrap());
    assert_eq!(
        stalled.len(),
        1,
        "the blocked holder is reported: {stalled:?}"
    );
    let e = &stalled[0];
    assert_eq!(e["holds"], "pool");
    assert_eq!(e["task"], "");
    assert!(e["elapsed_ns"].as_u64().unwrap() >= 800_000_000, "{e}");
    assert!(
        e["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("block_in_read")),
        "{e}"
    );
    let n = again["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["thread_name"] == "pool-holder")
        .count();
    assert_eq!(n, 1, "reported once");
}
