//! The live heap on the server: a gauge, not a counter. A real agent in
//! this process (whose global allocator is `Profiled<System>`) holds a
//! cache of known size while it pushes a window a second: the server's
//! flame graph of `inuse_space` over the range gives the cache its bytes,
//! not the bytes times the number of windows. Then a service whose heap
//! grew between two hours, pushed as Go's heap profiles are: each range
//! gives what it held, the timeline is the heap over time, and the diff of
//! the two hours says what grew by how much.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kiln_profile::Profile;

use crate::server::start_with;

fn get(url: &str, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
    let r = reqwest::blocking::Client::new()
        .get(format!("{url}{path}"))
        .query(query)
        .send()
        .unwrap();
    let status = r.status();
    let body = r.text().unwrap();
    assert!(status.is_success(), "{path}: {status}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The `total` of function `f` (by name suffix) in a top table.
fn total_of(top: &serde_json::Value, f: &str) -> i64 {
    top["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(f) || n.contains(&format!("{f}::")))
        })
        .map(|r| r["total"].as_i64().unwrap())
        .max()
        .unwrap_or(0)
}

/// Holds `n` blocks of 4 KiB until the returned vector is dropped.
#[inline(never)]
fn hold_session_cache(n: usize) -> Vec<Box<[u8]>> {
    (0..n)
        .map(|i| vec![i as u8; 4096].into_boxed_slice())
        .collect()
}

/// Allocates and frees `mib` MiB: allocated, never held.
#[inline(never)]
fn churn_buffers(mib: usize) {
    for _ in 0..mib {
        black_box(vec![1u8; 1 << 20]);
    }
}

#[test]
fn live_heap_over_a_range_is_what_was_held_not_the_sum_of_windows() {
    let _one = crate::ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_with(dir.path(), "127.0.0.1:0", &[], &[]);
    let agent = kiln_agent::Agent::builder()
        .service("it-heap")
        .instance("it-1")
        .cpu_hz(0)
        .alloc_sample_bytes(64 << 10)
        .window(Duration::from_secs(1))
        .push_to(&url)
        .start()
        .unwrap();
    assert!(agent.status().alloc.on, "{:?}", agent.status().alloc);
    let held_bytes = 48usize << 20;
    let cache = hold_session_cache(held_bytes / 4096);
    // Eight windows and more with the cache held and buffers churning.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        churn_buffers(4);
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop().unwrap();
    let q = [
        (
            "query",
            r#"memory:inuse_space:bytes:space:bytes{service_name="it-heap"}"#,
        ),
        ("from", "now-5m"),
        ("until", "now"),
        ("n", "0"),
    ];
    let top = get(&url, "/api/v1/top", &q);
    let held = total_of(&top, "hold_session_cache");
    let ratio = held as f64 / held_bytes as f64;
    eprintln!("TRUTH held {held} of {held_bytes} bytes over the range ({ratio:.2})");
    assert!(
        (0.8..1.2).contains(&ratio),
        "the cache holds {held_bytes} bytes; the range's flame graph says {held}: {top}"
    );
    let churned = total_of(&top, "churn_buffers");
    assert!(
        churned < held / 10,
        "freed buffers are not held: {churned} bytes"
    );
    // Allocation is a counter: the windows add up.
    let alloc = get(
        &url,
        "/api/v1/top",
        &[
            (
                "query",
                r#"memory:alloc_space:bytes:space:bytes{service_name="it-heap"}"#,
            ),
            ("from", "now-5m"),
            ("until", "now"),
            ("n", "0"),
        ],
    );
    let allocated = total_of(&alloc, "churn_buffers");
    assert!(
        allocated > 10 * (4 << 20),
        "the churn allocated 4 MiB ~100 times: {allocated}"
    );
    drop(cache);
}

/// One window of a Go-style heap profile at `t_s` (10 s long): `cache`
/// and `sessions` hold the bytes given, `render` allocates 1 MiB.
fn heap_window(t_s: i64, cache: i64, sessions: i64) -> Vec<u8> {
    let mut p = Profile::with_sample_types(&[
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ]);
    p.time_nanos = t_s * 1_000_000_000;
    p.duration_nanos = 10_000_000_000;
    let main = p.add_named_location("main");
    for (f, held, allocated) in [
        ("fill_cache", cache, 0),
        ("open_session", sessions, 0),
        ("render", 0, 1 << 20),
    ] {
        let l = p.add_named_location(f);
        p.push_sample(
            &[l, main],
            &[],
            &[allocated / 1024, allocated, held / 4096, held],
        );
    }
    kiln_profile::pprof::encode_gzip(&p)
}

#[test]
fn what_grew_between_two_hours_and_the_heap_over_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_with(dir.path(), "127.0.0.1:0", &[], &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Whole minutes: two hours ago 10 MiB in the cache, an hour ago 50.
    let before = (now - 7200) / 60 * 60;
    let after = (now - 3600) / 60 * 60;
    let c = reqwest::blocking::Client::new();
    for (start, cache) in [(before, 10i64 << 20), (after, 50 << 20)] {
        for w in 0..30 {
            let r = c
                .post(format!("{url}/ingest"))
                .query(&[("name", "heap-shop{}"), ("format", "pprof")])
                .body(heap_window(start + w * 10, cache, 20 << 20))
                .send()
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().unwrap());
        }
    }
    let q = r#"memory:inuse_space:bytes:space:bytes{service_name="heap-shop"}"#;
    let range = |t: i64| [t.to_string(), (t + 300).to_string()];
    let [bf, bu] = range(before);
    let [af, au] = range(after);
    let top = |from: &str, until: &str| {
        get(
            &url,
            "/api/v1/top",
            &[("query", q), ("from", from), ("until", until), ("n", "0")],
        )
    };
    // Each range: what it held, exactly (every window held the same).
    let early = top(&bf, &bu);
    assert_eq!(total_of(&early, "fill_cache"), 10 << 20, "{early}");
    assert_eq!(total_of(&early, "open_session"), 20 << 20, "{early}");
    let late = top(&af, &au);
    assert_eq!(total_of(&late, "fill_cache"), 50 << 20, "{late}");
    // Allocation adds up: 30 windows of 1 MiB.
    let alloc = get(
        &url,
        "/api/v1/top",
        &[
            (
                "query",
                r#"memory:alloc_space:bytes:space:bytes{service_name="heap-shop"}"#,
            ),
            ("from", &bf),
            ("until", &bu),
            ("n", "0"),
        ],
    );
    assert_eq!(total_of(&alloc, "render"), 30 << 20, "{alloc}");
    // Over both hours: the mean of what was held while data came.
    let both = top(&bf, &au);
    assert_eq!(total_of(&both, "open_session"), 20 << 20, "{both}");
    // The heap over time: each whole minute, the bytes held in it.
    let tl = get(
        &url,
        "/api/v1/timeline",
        &[("query", q), ("from", &bf), ("until", &au)],
    );
    let points: Vec<(i64, i64)> = tl["lines"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap()))
        .collect();
    assert_eq!(points.len(), 10, "five minutes of each hour: {tl}");
    for (t, v) in &points {
        let want = if *t < after * 1000 {
            30 << 20
        } else {
            70 << 20
        };
        assert_eq!(*v, want, "held at minute {t}: {tl}");
    }
    // What grew: the cache, by 40 MiB; the sessions held still.
    let d = get(
        &url,
        "/api/v1/diff",
        &[
            ("leftQuery", q),
            ("leftFrom", &bf),
            ("leftUntil", &bu),
            ("rightQuery", q),
            ("rightFrom", &af),
            ("rightUntil", &au),
        ],
    );
    let row = |f: &str| {
        d["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == f)
            .cloned()
            .unwrap_or_else(|| panic!("{f} not in the diff: {d}"))
    };
    let cache = row("fill_cache");
    assert_eq!(
        cache["new_self"].as_i64().unwrap() - cache["base_self"].as_i64().unwrap(),
        40 << 20,
        "{d}"
    );
    let sessions = row("open_session");
    assert_eq!(sessions["new_self"], sessions["base_self"], "{d}");
    assert_eq!(d["functions"][0]["name"], "fill_cache", "{d}");
}
