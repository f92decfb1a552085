//! Tasks and the watchdog's events, end to end: a real agent in this
//! process pushes to a real `kiln server`; `/api/v1/tasks` gives each
//! task's count, I/O and sites merged, `/api/v1/events` the stuck task
//! with its stack, CPU samples inside a task are its flame graph
//! (`task="…"`), and `kiln query --tasks` prints the table.

use std::time::{Duration, Instant};

use crate::server::start_with;

/// Burns about `d` of CPU.
#[inline(never)]
fn work(d: Duration) {
    let t = Instant::now();
    let mut x = 1u64;
    while t.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

#[inline(never)]
fn fetch_rows() {
    kiln_agent::task::io("sql", || std::thread::sleep(Duration::from_millis(2)));
}

/// Where the stuck task waits.
#[inline(never)]
fn wait_for_lock_forever(d: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        std::thread::sleep(Duration::from_millis(10));
    }
}

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

#[test]
fn tasks_and_stuck_events_reach_the_server() {
    let _one = crate::ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_with(dir.path(), "127.0.0.1:0", &[], &[]);
    let agent = kiln_agent::Agent::builder()
        .service("it-tasks")
        .instance("it-1")
        .cpu_hz(200)
        .window(Duration::from_secs(1))
        .task_stack_every(5)
        .push_to(&url)
        .start()
        .unwrap();
    for _ in 0..60 {
        let _t = kiln_agent::task::start("open_board");
        work(Duration::from_millis(5));
        fetch_rows();
    }
    std::thread::Builder::new()
        .name("stuck-worker".into())
        .spawn(|| {
            let _t =
                kiln_agent::task::start_with_deadline("save_board", Duration::from_millis(150));
            wait_for_lock_forever(Duration::from_millis(700));
        })
        .unwrap()
        .join()
        .unwrap();
    agent.stop().unwrap();

    let sel = r#"{service_name="it-tasks"}"#;
    let range = [("query", sel), ("from", "now-10m"), ("until", "now")];
    let t = get(&url, "/api/v1/tasks", &range);
    let rows = t["tasks"].as_array().unwrap();
    let ob = rows
        .iter()
        .find(|r| r["task"] == "open_board")
        .unwrap_or_else(|| panic!("{t}"));
    assert_eq!(ob["count"], 60, "{ob}");
    let sql = ob["io_ns"]["sql"].as_f64().unwrap();
    assert!((60.0 * 2e6..60.0 * 4e6).contains(&sql), "sql time {sql}");
    assert!(
        ob["sites"].as_array().unwrap().iter().any(|s| s["site"]
            .as_str()
            .unwrap()
            .starts_with("integration::tasks::fetch_rows:")),
        "the sql call's site: {ob}"
    );
    let sb = rows.iter().find(|r| r["task"] == "save_board").unwrap();
    assert_eq!(sb["stuck"], 1, "{sb}");

    let e = get(&url, "/api/v1/events", &range);
    let events = e["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "caught, and again past 4x: {e}");
    for ev in events {
        assert_eq!(ev["kind"], "stuck");
        assert_eq!(ev["task"], "save_board");
        assert_eq!(ev["instance"], "it-1");
        assert_eq!(ev["thread_name"], "stuck-worker");
        assert!(
            ev["site"]
                .as_str()
                .unwrap()
                .starts_with("integration::tasks::wait_for_lock_forever:"),
            "{ev}"
        );
        assert!(
            ev["stack"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.as_str().unwrap().contains("wait_for_lock_forever"))
        );
    }
    assert!(
        events[0]["time_ms"].as_i64() >= events[1]["time_ms"].as_i64(),
        "newest first"
    );

    // CPU samples taken inside open_board are its flame graph.
    let q = r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="it-tasks", task="open_board"}"#;
    let top = get(
        &url,
        "/api/v1/top",
        &[("query", q), ("from", "now-10m"), ("until", "now")],
    );
    let rows = top["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["name"].as_str().unwrap().ends_with("tasks::work")),
        "{top}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "query", "--server", &url, "--tasks", sel, "--from", "now-10m", "--until", "now",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("open_board") && text.contains("sql") && text.contains("fetch_rows"),
        "{text}"
    );
}
