//! `kiln server` as a real process: everything it acknowledged survives a
//! `kill -9` (the write-ahead log is synced before the answer), and `kiln
//! query` reads it back after the restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kiln_ok;

/// A server process, killed when dropped: a failing test must not leave
/// it running (it holds the test runner's output pipe open).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kiln server` on a free port over `dir`; the process and its URL.
fn start(dir: &std::path::Path) -> (Running, String) {
    start_with(dir, "127.0.0.1:0", &[], &[])
}

/// Starts `kiln server` listening on `listen` over `dir`, with more
/// arguments and environment; the process and its URL.
pub fn start_with(
    dir: &std::path::Path,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "server",
            "--listen",
            listen,
            "--no-self-profile",
            "--data-dir",
        ])
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (Running(child), url)
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start(dir.path());
    let one = kiln_profile::decode(b"main;work 7\nmain;idle 3\n", &Default::default()).unwrap();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let pushers: Vec<_> = (0..4)
        .map(|t| {
            let (acked, stop, url, one) = (acked.clone(), stop.clone(), url.clone(), one.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let seq = format!("{t}-{i}");
                    let req = kiln_profile::push::request_for(
                        &one,
                        &[
                            ("service_name".into(), "k9".into()),
                            ("seq".into(), seq.clone()),
                        ],
                    );
                    let r = c
                        .post(format!("{url}{}", kiln_profile::push::PUSH_PATH))
                        .header("content-type", "application/proto")
                        .body(req.to_bytes())
                        .send();
                    match r {
                        Ok(r) if r.status().is_success() => acked.lock().unwrap().push(seq),
                        // The server is gone: nothing more is acknowledged.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL, mid-stream: requests are in flight.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 200,
        "only {} pushes acknowledged",
        acked.len()
    );

    let (_server, url) = start(dir.path());
    let c = reqwest::blocking::Client::new();
    let stored: Vec<String> = c
        .get(format!("{url}/pyroscope/label-values"))
        .query(&[("label", "seq")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let missing: Vec<&String> = acked.iter().filter(|s| !stored.contains(s)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // `kiln query` agrees: every stored push counted once.
    let out = kiln_ok([
        "query",
        "--server",
        &url,
        r#"process_cpu{service_name="k9"}"#,
        "--from",
        "0",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 10 * stored.len() as i64, "{v}");
    assert_eq!(v["rows"][0]["name"], "work");
}

#[test]
fn server_refuses_storage_it_cannot_use() {
    let out = crate::kiln(["server", "--storage", "ftp://bucket/prefix"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--storage ftp://bucket/prefix: expected s3://bucket/prefix or file:///path"),
        "{err}"
    );
}

#[test]
fn demo_shows_live_data_of_its_shop() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _demo = Running(child);
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let open = lines.next().unwrap().unwrap();
    assert!(
        open.contains("/?query=") && open.contains("demo-shop"),
        "{open}"
    );
    let c = reqwest::blocking::Client::new();
    let get = |path: &str| -> serde_json::Value {
        c.get(format!("{url}{path}"))
            .query(&[
                ("query", r#"process_cpu{service_name="demo-shop"}"#),
                ("from", "now-10m"),
                ("until", "now"),
                ("n", "0"),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // The shop's own functions and threads, from its agent's pushes.
    let t = Instant::now();
    loop {
        let top = get("/api/v1/top");
        let names: Vec<&str> = top["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        let threads = get("/api/v1/threads");
        let pools: Vec<&str> = threads["pools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        if names.iter().any(|n| n.ends_with("demo::evict_cold"))
            && names.iter().any(|n| n.ends_with("demo::price_cart"))
            && pools.contains(&"shop-worker-*")
            && pools.contains(&"cache-evictor")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no demo data after 60 s: {names:?} {pools:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its heap: the session cache holds memory, rendering allocates.
    let top_of = |query: &str| -> Vec<String> {
        let v: serde_json::Value = c
            .get(format!("{url}/api/v1/top"))
            .query(&[
                ("query", query),
                ("from", "now-10m"),
                ("until", "now"),
                ("n", "0"),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let t = Instant::now();
    loop {
        let held = top_of(r#"memory:inuse_space:bytes:space:bytes{service_name="demo-shop"}"#);
        let allocated = top_of(r#"memory:alloc_space:bytes:space:bytes{service_name="demo-shop"}"#);
        if held.iter().any(|n| n.ends_with("demo::remember_session"))
            && allocated
                .iter()
                .any(|n| n.ends_with("demo::remember_session"))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no demo heap after 60 s: held {held:?}, allocated {allocated:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its lock: the workers wait on `sessions` while the evictor audits.
    let t = Instant::now();
    loop {
        let waiting = top_of(
            r#"mutex:delay:nanoseconds:contentions:count{service_name="demo-shop", lock="sessions"}"#,
        );
        let by_lock: serde_json::Value = c
            .get(format!("{url}/api/v1/group"))
            .query(&[
                (
                    "query",
                    r#"mutex:delay:nanoseconds:contentions:count{service_name="demo-shop"}"#,
                ),
                ("from", "now-10m"),
                ("until", "now"),
                ("by", "lock"),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        if waiting
            .iter()
            .any(|n| n.ends_with("demo::remember_session"))
            && by_lock["rows"][0]["name"] == "sessions"
        {
            // The lock's own frames are not the waiter's leaf.
            assert!(
                !waiting[0].starts_with("kiln_agent::"),
                "the waits' leaf: {waiting:?}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no waits on the sessions lock after 60 s: {waiting:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Wall clock: the workers sleep between requests, the evictor runs.
    let t = Instant::now();
    loop {
        let states: serde_json::Value = c
            .get(format!("{url}/api/v1/group"))
            .query(&[
                (
                    "query",
                    r#"wall:wall:nanoseconds:wall:nanoseconds{service_name="demo-shop", thread_pool="shop-worker-*"}"#,
                ),
                ("from", "now-10m"),
                ("until", "now"),
                ("by", "thread_state"),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let names: Vec<&str> = states["rows"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        if names.contains(&"sleeping") && names.contains(&"running") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no wall states of the workers after 60 s: {states}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The thread timeline: the evictor's lane is mostly on a CPU, a
    // worker's mostly asleep.
    let lanes: serde_json::Value = c
        .get(format!("{url}/api/v1/lanes"))
        .query(&[
            ("query", r#"{service_name="demo-shop"}"#),
            ("from", "now-10m"),
            ("until", "now"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(lanes["source"], "wall", "{lanes}");
    let lane = |name: &str| -> std::collections::HashMap<String, i64> {
        let l = lanes["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["thread"] == name)
            .unwrap_or_else(|| panic!("no lane {name} in {lanes}"));
        let mut sum = std::collections::HashMap::new();
        for step in l["steps"].as_array().unwrap() {
            for (k, v) in step["ns"].as_object().unwrap() {
                *sum.entry(k.clone()).or_default() += v.as_i64().unwrap();
            }
        }
        sum
    };
    let share = |m: &std::collections::HashMap<String, i64>, k: &str| {
        m.get(k).copied().unwrap_or(0) as f64 / m.values().sum::<i64>().max(1) as f64
    };
    let evictor = lane("cache-evictor");
    let on_cpu = share(&evictor, "running") + share(&evictor, "runnable");
    assert!(on_cpu > 0.6, "the evictor's lane: {evictor:?}");
    let worker = lane("shop-worker-1");
    assert!(
        share(&worker, "sleeping") > 0.3,
        "a worker's lane: {worker:?}"
    );
    // The UI is served.
    let page = c.get(&url).send().unwrap().text().unwrap();
    assert!(page.contains("/ui/app.js"));
}
