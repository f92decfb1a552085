//! Object storage that goes away and comes back, with a real
//! S3-compatible server (s3s-fs over HTTP) stopped and started again on
//! its port while `kiln server` takes pushes: the server keeps
//! acknowledging until the heads waiting for storage fill their bound,
//! then answers 503 with `Retry-After` and its memory stays flat; when
//! storage is back the uploads resume by themselves and pushes are taken
//! again; `kill -9` while storage is down loses nothing acknowledged. A
//! server started while storage is down takes pushes at once and answers
//! queries once it has listed the blocks.

use std::time::{Duration, Instant};

use crate::cluster::{BUCKET, S3, answer, blocks_in, client, free_port, s3_env};
use crate::server::start_with;

/// Bytes the head, and the heads waiting for storage, may each hold.
const BOUND: u64 = 64 * 1024;

/// Pushes profile `n` (40 stacks of its own, so each push grows the
/// head); the status and the `Retry-After` header. Its samples add up to
/// [`UNITS`].
fn push(url: &str, n: u64) -> (u16, Option<u64>) {
    let body: String = (0..40)
        .map(|j| format!("main;handler_{n};step_{j} 1\n"))
        .collect();
    let r = client()
        .post(format!("{url}/ingest"))
        .query(&[
            ("name", "shop{instance=a}"),
            ("format", "folded"),
            ("from", "now-30s"),
        ])
        .body(body)
        .send()
        .unwrap();
    let after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (r.status().as_u16(), after)
}

/// Samples in one push.
const UNITS: u64 = 40;

fn metric(url: &str, name: &str) -> u64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics")) as u64
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

/// The CPU total of the shop, as the server answers it (folded samples
/// are 10 ms each).
fn total(url: &str) -> u64 {
    answer(url).0["total"].as_u64().unwrap_or(0) / 10_000_000
}

#[test]
fn storage_down_bounds_memory_refuses_with_503_and_loses_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir().unwrap();
    let s3 = S3::start(&rt, root.path(), "127.0.0.1:0");
    let (addr, endpoint) = (s3.addr().to_string(), s3.url.clone());
    let env = s3_env(&endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        conf.path(),
        format!(
            "[storage]\nflush_every = \"1h\"\nhead_max_bytes = {BOUND}\npending_max_bytes = {BOUND}\n"
        ),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let storage = format!("s3://{BUCKET}/kiln");
    let conf_path = conf.path().display().to_string();
    let run = || {
        start_with(
            data.path(),
            &format!("127.0.0.1:{port}"),
            &["--storage", &storage, "--config", &conf_path],
            &env,
        )
    };
    let (mut server, url) = run();
    let mut acked = 0u64;
    let mut n = 0u64;
    let mut push_acked = |url: &str, acked: &mut u64| -> (u16, Option<u64>) {
        n += 1;
        let (code, after) = push(url, n);
        match code {
            200..=299 => *acked += UNITS,
            503 => {}
            other => panic!("push {n}: {other}"),
        }
        (code, after)
    };

    // Storage up: pushes are taken and the head is cut into the bucket.
    for _ in 0..5 {
        assert_eq!(push_acked(&url, &mut acked).0, 200);
    }

    // Storage down: acknowledged until the bound, then 503 + Retry-After.
    s3.stop(&rt);
    let mut refused = None;
    for _ in 0..5_000 {
        let (code, after) = push_acked(&url, &mut acked);
        if code == 503 {
            refused = Some(after);
            break;
        }
    }
    let after = refused.expect("5,000 pushes with storage down and never a 503");
    let taken_down = acked;
    assert!(after.is_some_and(|s| s >= 1), "503 without Retry-After");
    // Memory stays flat while refusing: more pushes, no growth.
    let pid = server.0.id();
    let rss0 = rss_kb(pid);
    let taken_before = acked;
    for _ in 0..300 {
        push_acked(&url, &mut acked);
    }
    let held = metric(&url, "kiln_server_head_bytes") + metric(&url, "kiln_server_pending_bytes");
    assert!(
        held <= 3 * BOUND,
        "head and pending hold {held} bytes, bound {}",
        2 * BOUND
    );
    let grown = rss_kb(pid).saturating_sub(rss0);
    assert!(grown < 16 * 1024, "RSS grew {grown} kB while refusing");
    assert!(
        acked - taken_before <= 300 * UNITS / 4,
        "most pushes past the bound were taken: {} of 300",
        (acked - taken_before) / UNITS
    );
    assert!(metric(&url, "kiln_server_refused_profiles") > 0);

    // Storage back on the same port: uploads resume by themselves and
    // pushes are taken again.
    let acked_after_refusal = acked;
    let s3 = S3::start(&rt, root.path(), &addr);
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, _) = push_acked(&url, &mut acked);
        if code == 200 && metric(&url, "kiln_server_pending_bytes") == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "uploads did not resume within 120 s of storage coming back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "FAULTS storage down: {} pushes taken, then 503 (Retry-After {after:?} s); \
         RSS +{grown} kB over 300 more; {} taken past the bound; \
         uploads resumed {:.1} s after storage came back",
        (taken_down - 5 * UNITS) / UNITS,
        (acked_after_refusal - taken_before) / UNITS,
        back.elapsed().as_secs_f64()
    );
    assert!(!blocks_in(root.path()).is_empty());
    assert_eq!(total(&url), acked);

    // Down again, more acknowledged, then kill -9 while a cut waits.
    s3.stop(&rt);
    for _ in 0..40 {
        push_acked(&url, &mut acked);
    }
    std::thread::sleep(Duration::from_secs(2));
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);

    // Storage back, server back: everything acknowledged is there.
    let _s3 = S3::start(&rt, root.path(), &addr);
    let (_server, url) = run();
    assert_eq!(total(&url), acked, "acknowledged samples lost");
}

/// A server started while object storage is down listens and takes pushes
/// at once; a query says it lacks the history (503, never a partial
/// answer); once storage is back the blocks are listed by themselves and
/// every profile, old and new, is answered.
#[test]
fn a_server_started_with_storage_down_takes_pushes_and_answers_once_it_is_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir().unwrap();
    let s3 = S3::start(&rt, root.path(), "127.0.0.1:0");
    let (addr, endpoint) = (s3.addr().to_string(), s3.url.clone());
    let env = s3_env(&endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let storage = format!("s3://{BUCKET}/kiln");
    let run = || {
        start_with(
            data.path(),
            &format!("127.0.0.1:{port}"),
            &["--storage", &storage],
            &env,
        )
    };
    let (mut server, url) = run();
    for n in 0..5 {
        assert_eq!(push(&url, n).0, 200);
    }
    let r = client()
        .post(format!("{url}/api/v1/admin/flush"))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert!(!blocks_in(root.path()).is_empty());
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);

    s3.stop(&rt);
    let t0 = Instant::now();
    let (_server, url) = run();
    let listening = t0.elapsed();
    assert_eq!(push(&url, 5).0, 200, "a push while the blocks are unlisted");
    let acked = t0.elapsed();
    assert!(
        acked < Duration::from_secs(5),
        "first push acknowledged {acked:?} after start"
    );
    let r = client()
        .get(format!("{url}/api/v1/top"))
        .query(&[
            ("query", r#"process_cpu{service_name="shop"}"#),
            ("from", "now-1h"),
            ("until", "now"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503, "{}", r.text().unwrap());
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(metric(&url, "kiln_server_blocks_listed"), 0);

    let _s3 = S3::start(&rt, root.path(), &addr);
    let back = Instant::now();
    while metric(&url, "kiln_server_blocks_listed") == 0 {
        assert!(
            back.elapsed() < Duration::from_secs(90),
            "blocks not listed 90 s after storage came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "FAULTS start with storage down: listening after {listening:?}, first push acknowledged \
         after {acked:?}; blocks listed {:.1} s after storage came back",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(total(&url), 6 * UNITS, "old and new profiles");
}
