//! The threads table: a thread's cores are its CPU time over the time it
//! was seen, not over the range asked for — an instance that started two
//! and a half minutes ago with a thread spinning on a core shows that
//! thread near 1.0 in a ten-minute view (over the range it would be 0.25),
//! from the head, from blocks, and through a peer.

use kiln_profile::folded::FoldedOptions;
use kiln_profile::{DecodeOptions, Profile};

use crate::Server;

const S: i64 = 1_000_000_000;
const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

/// A 10-second CPU profile from `start_ms`: folded lines, the thread's
/// name first, in nanoseconds.
fn profile(start_ms: i64, text: &str) -> Profile {
    let mut folded = FoldedOptions::default();
    folded.thread_prefix = true;
    folded.sample_type = "cpu".into();
    folded.unit = "nanoseconds".into();
    let mut opts = DecodeOptions::default();
    opts.folded = folded;
    let mut p = kiln_profile::decode(text.as_bytes(), &opts).unwrap();
    p.period_type = Some(p.value_type("cpu", "nanoseconds"));
    p.period = 10_000_000;
    p.time_nanos = start_ms * 1_000_000;
    p.duration_nanos = 10 * S;
    p
}

fn push(s: &Server, instance: &str, p: &Profile) {
    let labels = [
        ("service_name".to_string(), "shop".to_string()),
        ("instance".to_string(), instance.to_string()),
    ];
    let r = s
        .client()
        .post(format!("{}{}", s.url, kiln_profile::push::PUSH_PATH))
        .header("content-type", "application/proto")
        .body(kiln_profile::push::request_for(p, &labels).to_bytes())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "push: {}", r.status());
}

/// Ten minutes from `t0`: `shop-1` all along (a worker at half a core, a
/// loop at 0.95), `shop-2` from 7.5 minutes on (its evictor at 0.98).
fn workload(t0: i64, one: &Server, two: &Server) {
    for k in 0..60 {
        let t = t0 + k * 10_000;
        let text = format!("worker-1;serve {}\nhot-loop;spin {}\n", 5 * S, 95 * S / 10);
        push(one, "shop-1", &profile(t, &text));
        if k >= 45 {
            let text = format!("cache-evictor;evict {}\n", 98 * S / 10);
            push(two, "shop-2", &profile(t, &text));
        }
    }
}

/// `(cores, seen seconds)` of each row of the threads table.
fn table(s: &Server, query: &str, t0: i64) -> Vec<(String, f64, f64)> {
    let (from, until) = (t0.to_string(), (t0 + 600_000).to_string());
    let (code, v) = s.get(
        "/api/v1/threads",
        &[("query", query), ("from", &from), ("until", &until)],
    );
    assert_eq!(code, 200, "{v}");
    v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["cores"].as_f64().unwrap(),
                r["seen_ns"].as_f64().unwrap() / 1e9,
            )
        })
        .collect()
}

fn row<'a>(t: &'a [(String, f64, f64)], name: &str) -> &'a (String, f64, f64) {
    t.iter()
        .find(|r| r.0 == name)
        .unwrap_or_else(|| panic!("no {name} in {t:?}"))
}

/// A minute boundary twenty minutes ago.
fn t0() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now / 60_000 - 20) * 60_000
}

fn check(s: &Server, t0: i64, when: &str) {
    for query in [
        format!(r#"{CPU}{{service_name="shop"}}"#),
        format!(r#"{CPU}{{service_name="shop", instance=~"shop-.*"}}"#),
    ] {
        let t = table(s, &query, t0);
        let (_, cores, seen) = row(&t, "cache-evictor");
        assert!(
            (cores - 0.98).abs() < 1e-9 && *seen == 150.0,
            "{when}, {query}: the evictor ran 147 s in the 150 s it was seen: {cores} cores over {seen} s"
        );
        let (_, cores, seen) = row(&t, "hot-loop");
        assert!(
            (cores - 0.95).abs() < 1e-9 && *seen == 600.0,
            "{when}: {cores} {seen}"
        );
        let (_, cores, _) = row(&t, "worker-1");
        assert!((cores - 0.5).abs() < 1e-9, "{when}: {cores}");
    }
    // A sample-label matcher keeps the thread and its time.
    let t = table(s, &format!(r#"{CPU}{{thread_name="cache-evictor"}}"#), t0);
    assert_eq!(t.len(), 1, "{t:?}");
    assert!((t[0].1 - 0.98).abs() < 1e-9, "{t:?}");
}

#[test]
fn cores_are_over_the_time_a_thread_was_seen() {
    let s = Server::start();
    let t0 = t0();
    workload(t0, &s, &s);
    check(&s, t0, "head");
    let (_, v) = s.get("/api/v1/threads", &[("query", CPU), ("from", "0")]);
    let pools = v["pools"].as_array().unwrap();
    assert!(pools.iter().any(|p| p["name"] == "worker-*"), "{v}");
    let r = s
        .client()
        .post(format!("{}/api/v1/admin/flush", s.url))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    check(&s, t0, "blocks");
}

#[test]
fn a_peer_says_when_its_threads_were_seen() {
    // The new instance pushes to one server, the old to another that asks
    // it for its head.
    let two = Server::start();
    let one = Server::start_with(&format!("[cluster]\npeers = [\"{}\"]\n", two.url));
    let t0 = t0();
    workload(t0, &one, &two);
    check(&one, t0, "through a peer");
}
