//! The web UI in a real browser: a real `kiln server` with profiles pushed
//! through its Connect API, and `e2e/ui.test.mjs` driving Debian's Chromium
//! (playwright-core) against it — shared URL, top table, zoom by clicking
//! the canvas, search, sandwich, the icicle the graph opens as, hiding
//! thread-start glue, comparison, threads, the live heap and what grew. Screenshots land in
//! `target/e2e/` for a human look.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_profile::{Function, Label, Line, Location, Profile};

use crate::server::start_with;

/// A CPU profile of the "shop" service at `time_ms`: `(thread, stack root
/// first, seconds of CPU)` per sample, counted as samples of 10 ms
/// (rounded) beside the nanoseconds.
fn profile(time_ms: i64, samples: &[(&str, &str, f64)]) -> Profile {
    let values: Vec<[i64; 2]> = samples
        .iter()
        .map(|&(_, _, secs)| [(secs * 100.0).round() as i64, (secs * 1e9) as i64])
        .collect();
    let rows: Vec<Row<'_>> = samples
        .iter()
        .zip(&values)
        .map(|(&(thread, stack, _), v)| (thread, stack, &[][..], &v[..]))
        .collect();
    let mut p = typed(
        time_ms,
        &[("samples", "count"), ("cpu", "nanoseconds")],
        &rows,
    );
    p.period_type = Some(p.value_type("cpu", "nanoseconds"));
    p.period = 10_000_000;
    p
}

/// The frames above a spawned thread's own, as the agent symbolizes them
/// (from `kiln demo`), root first.
const THREAD_GLUE: &str = "__clone3;start_thread;\
    <std::sys::thread::unix::Thread>::new::thread_start;\
    <alloc::boxed::Box<dyn core::ops::function::FnOnce<(), Output = ()> + core::marker::Send> as core::ops::function::FnOnce<()>>::call_once;\
    core::ops::function::FnOnce::call_once{{vtable.shim}};\
    std::thread::lifecycle::spawn_unchecked::{{closure}};\
    std::panic::catch_unwind;std::panicking::catch_unwind;std::panicking::catch_unwind::do_call;\
    <core::panic::unwind_safe::AssertUnwindSafe<F> as core::ops::function::FnOnce<()>>::call_once;\
    std::thread::lifecycle::spawn_unchecked::{{closure}}::{{closure}};\
    std::sys::backtrace::__rust_begin_short_backtrace;core::ops::function::FnOnce::call_once";

/// The frames above the main thread's `main`.
const MAIN_GLUE: &str = "_start;__libc_start_main;__libc_start_call_main;main;\
    std::rt::lang_start_internal;std::rt::lang_start::{{closure}};\
    std::sys::backtrace::__rust_begin_short_backtrace;core::ops::function::FnOnce::call_once";

/// One sample: thread, stack root first, extra labels, values.
type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [i64]);

/// A profile of sample types `types` at `time_ms` (10 s long).
fn typed(time_ms: i64, types: &[(&str, &str)], rows: &[Row<'_>]) -> Profile {
    let mut p = Profile::with_sample_types(types);
    p.period_type = Some(p.value_type(types[0].0, types[0].1));
    p.period = 1;
    p.time_nanos = time_ms * 1_000_000;
    p.duration_nanos = 10_000_000_000;
    // One function and location per frame name.
    let mut locs = std::collections::HashMap::new();
    for &(thread, stack, extra, values) in rows {
        let ids: Vec<_> = stack
            .split(';')
            .rev()
            .map(|frame| {
                *locs.entry(frame.to_string()).or_insert_with(|| {
                    let name = p.strings.intern(frame);
                    let f = p.add_function(Function {
                        name,
                        ..Default::default()
                    });
                    p.add_location(Location {
                        lines: vec![Line {
                            function: f,
                            line: 0,
                            column: 0,
                        }],
                        ..Default::default()
                    })
                })
            })
            .collect();
        let pool = kiln_profile::thread_pool(thread);
        let mut labels = vec![("thread_name", thread.to_string()), ("thread_pool", pool)];
        labels.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let labels: Vec<Label> = labels
            .into_iter()
            .map(|(k, v)| Label {
                key: p.strings.intern(k),
                str: p.strings.intern(&v),
                ..Default::default()
            })
            .collect();
        p.push_sample(&ids, &labels, values);
    }
    p
}

/// Pushes `p` as one series named `name` (a wall profile's `samples`
/// must not be filed under `process_cpu`).
fn push_named(url: &str, name: &str, p: &Profile, instance: &str) {
    let req = kiln_profile::push::PushRequest::single(
        name,
        &[
            ("service_name".into(), "shop".into()),
            ("instance".into(), instance.into()),
        ],
        kiln_profile::pprof::encode_gzip(p),
        String::new(),
    );
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}{}", kiln_profile::push::PUSH_PATH))
        .header("content-type", "application/proto")
        .body(req.to_bytes())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "push: {}", r.status());
}

fn push(url: &str, p: &Profile, instance: &str) {
    let req = kiln_profile::push::request_for(
        p,
        &[
            ("service_name".into(), "shop".into()),
            ("instance".into(), instance.into()),
        ],
    );
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}{}", kiln_profile::push::PUSH_PATH))
        .header("content-type", "application/proto")
        .body(req.to_bytes())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "push: {}", r.status());
}

/// A watchdog's event as the agent ships it: save_board stuck for 640 ms
/// in `shop::board::wait_for_disk` at `time_ms`.
fn stuck_event(time_ms: i64) -> Profile {
    let mut p = Profile::with_sample_types(&[("events", "count")]);
    p.time_nanos = time_ms * 1_000_000;
    p.duration_nanos = 10_000_000_000;
    let mut locs = Vec::new();
    for name in [
        "__clock_nanosleep",
        "shop::board::wait_for_disk (src/board.rs:88)",
        "shop::board::save (src/board.rs:40)",
    ] {
        let n = p.strings.intern(name);
        let f = p.add_function(Function {
            name: n,
            system_name: n,
            ..Function::default()
        });
        locs.push(p.add_location(Location {
            lines: vec![Line {
                function: f,
                line: 0,
                column: 0,
            }],
            ..Location::default()
        }));
    }
    let mut labels = Vec::new();
    for (k, v) in [
        ("kind", "stuck"),
        ("task", "save_board"),
        ("thread_name", "board-saver"),
        ("site", "shop::board::wait_for_disk:88"),
    ] {
        labels.push(Label {
            key: p.strings.intern(k),
            str: p.strings.intern(v),
            ..Label::default()
        });
    }
    for (k, v) in [
        ("time_ms", time_ms),
        ("elapsed_ns", 640_000_000),
        ("deadline_ns", 500_000_000),
        ("capture", 1),
    ] {
        labels.push(Label {
            key: p.strings.intern(k),
            num: v,
            ..Label::default()
        });
    }
    p.push_sample(&locs, &labels, &[1]);
    p
}

/// One window of the shop's tasks (see the test).
fn tasks_window(tail_ms: u64, k: i64) -> Vec<kiln_profile::tasks::TaskRow> {
    use kiln_profile::tasks::TaskRow;
    let ms = 1_000_000u64;
    let mut open = TaskRow {
        task: "open_board".into(),
        count: 100,
        cpu_ns: 100 * ms,
        ..TaskRow::default()
    };
    for i in 0..100 {
        let lat = if i < 90 { 4 * ms } else { tail_ms * ms };
        open.latency.record(lat);
        open.latency_sum_ns += lat;
    }
    open.io_ns
        .insert("sql".into(), 90 * 5 * ms / 2 + 10 * (tail_ms - 1) * ms);
    open.other_ns = open.latency_sum_ns - open.cpu_ns - open.io_ns["sql"];
    open.sites.insert("shop::board::load_rows:42".into(), 9);
    let mut save = TaskRow {
        task: "save_board".into(),
        count: 20,
        cpu_ns: 200 * ms,
        stuck: u64::from(k % 6 == 0),
        ..TaskRow::default()
    };
    for _ in 0..20 {
        save.latency.record(120 * ms);
        save.latency_sum_ns += 120 * ms;
    }
    save.io_ns.insert("redis".into(), 2000 * ms);
    save.other_ns = save.latency_sum_ns - 2200 * ms;
    save.sites.insert("shop::board::save:88".into(), 2);
    vec![open, save]
}

#[test]
fn web_ui_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let e2e = root.join("e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists(),
        "e2e/node_modules is missing: run `npm ci --prefix e2e` (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    // Two alert rules over the shop's CPU: the evictor's loop (over half
    // of it) fires, pricing (never 90%) does not.
    let cfg = dir.path().join("kiln.toml");
    let cpu = r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="shop"}"#;
    std::fs::write(
        &cfg,
        format!(
            "[alerting]\nevery = \"1s\"\n\n[[alerts]]\nname = \"evictor hot\"\nkind = \"share\"\nquery = '{cpu}'\nfunction = \"shop::cache::evict_loop\"\nabove = 30\nwindow = \"1h\"\n\n[[alerts]]\nname = \"pricing hot\"\nkind = \"share\"\nquery = '{cpu}'\nfunction = \"shop::checkout::price\"\nabove = 90\nwindow = \"1h\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    let (_server, url) = start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--config", &cfg],
        &[],
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // One instance, a 10-second profile every 10 s. From 50 to 40 minutes
    // ago pricing is hot; in the last 10 minutes the database is. A
    // `hot-loop` thread burns 9.5 s of every 10; workers share the rest;
    // the main thread renders a tree 50 calls deep (deeper than a screen
    // is tall). Every thread's stack starts with thread-start glue. A
    // second instance started two and a half minutes ago, its
    // `cache-evictor` thread at 9.8 s of every 10.
    let handle = format!("{THREAD_GLUE};shop::server::run;shop::checkout::handle");
    let deep = format!(
        "{MAIN_GLUE};shop::main;shop::render::tree{}",
        ";shop::render::node".repeat(50)
    );
    let glue = |rest: &str| format!("{THREAD_GLUE};{rest}");
    for (start_min, price, db) in [(50, 3.0, 0.5), (10, 0.75, 3.5)] {
        for k in 0..60 {
            let t = now - start_min * 60_000 + k * 10_000;
            if start_min == 10 && k >= 45 {
                let p = profile(
                    t,
                    &[("cache-evictor", &glue("shop::cache::evict_cold"), 9.8)],
                );
                push(&url, &p, "shop-2");
            }
            let p = profile(
                t,
                &[
                    (
                        "worker-1",
                        &format!("{handle};shop::checkout::price"),
                        price,
                    ),
                    (
                        "worker-2",
                        &format!("{handle};shop::checkout::price;shop::checkout::tax"),
                        price / 4.0,
                    ),
                    ("worker-2", &format!("{handle};shop::db::query"), db),
                    (
                        "worker-3",
                        &format!("{handle};shop::db::query;tokio_postgres::query"),
                        db / 3.0,
                    ),
                    (
                        "worker-1",
                        &format!("{handle};serde_json::de::from_str"),
                        0.4,
                    ),
                    (
                        "worker-3",
                        &glue("shop::search::run;serde_json::de::from_str"),
                        0.2,
                    ),
                    ("io-1", &glue("tokio::runtime::park;epoll_wait"), 0.1),
                    ("hot-loop", &glue("shop::cache::evict_loop"), 9.5),
                    ("main", &deep, 0.3),
                    ("offload-1", &glue("shop::offload::hand_off"), 0.05),
                    ("offload-2", &glue("shop::offload::hand_off"), 0.05),
                ],
            );
            push(&url, &p, "shop-1");
            // The live heap as the agent ships it: the session cache
            // holds 10 MiB in the early phase and 50 MiB in the late one,
            // the sessions 20 MiB throughout; rendering allocates 8 MiB a
            // window and holds nothing.
            let mib = 1i64 << 20;
            let cache = if start_min == 50 { 10 * mib } else { 50 * mib };
            let mut heap = typed(
                t,
                &[
                    ("alloc_objects", "count"),
                    ("alloc_space", "bytes"),
                    ("inuse_objects", "count"),
                    ("inuse_space", "bytes"),
                ],
                &[
                    (
                        "worker-1",
                        &format!("{handle};shop::cache::fill"),
                        &[],
                        &[cache / 4096, cache, cache / 4096, cache],
                    ),
                    (
                        "worker-2",
                        &format!("{handle};shop::session::open"),
                        &[],
                        &[0, 0, 20 * mib / 512, 20 * mib],
                    ),
                    (
                        "worker-3",
                        &format!("{handle};shop::render::page"),
                        &[],
                        &[8 * mib / 64, 8 * mib, 0, 0],
                    ),
                ],
            );
            heap.period_type = Some(heap.value_type("space", "bytes"));
            push_named(&url, "memory", &heap, "shop-1");
            if start_min == 10 {
                // Wall clock and locks, the last 10 minutes: hot-loop on a
                // CPU, worker-2 waiting on the `sessions` lock most of
                // each 10 s, worker-1 mostly asleep.
                let s = 1_000_000_000i64;
                let cache_get = format!("{handle};shop::cache::get");
                let sleep = glue("shop::server::run;std::thread::sleep");
                let wall = typed(
                    t,
                    &[("samples", "count"), ("wall", "nanoseconds")],
                    &[
                        (
                            "hot-loop",
                            &glue("shop::cache::evict_loop"),
                            &[("thread_state", "running")],
                            &[190, 19 * s / 2],
                        ),
                        (
                            "worker-2",
                            &cache_get,
                            &[("thread_state", "lock")],
                            &[140, 7 * s],
                        ),
                        (
                            "worker-2",
                            &format!("{handle};shop::db::query"),
                            &[("thread_state", "running")],
                            &[40, 2 * s],
                        ),
                        (
                            "worker-1",
                            &sleep,
                            &[("thread_state", "sleeping")],
                            &[160, 8 * s],
                        ),
                        (
                            "worker-1",
                            &format!("{handle};shop::checkout::price"),
                            &[("thread_state", "running")],
                            &[40, 2 * s],
                        ),
                    ],
                );
                push_named(&url, "wall", &wall, "shop-1");
                let mutex = typed(
                    t,
                    &[("contentions", "count"), ("delay", "nanoseconds")],
                    &[
                        (
                            "worker-2",
                            &cache_get,
                            &[("lock", "sessions")],
                            &[900, 7 * s],
                        ),
                        (
                            "worker-3",
                            &format!("{handle};shop::db::query"),
                            &[("lock", "pool")],
                            &[30, s / 2],
                        ),
                    ],
                );
                push_named(&url, "mutex", &mutex, "shop-1");
                // Each thread's counters: the offload pool switches 4,000
                // times per 10 s for 50 ms of CPU; the others barely.
                let ms = 1_000_000i64;
                let counts = typed(
                    t,
                    &[
                        ("cpu", "nanoseconds"),
                        ("run_delay", "nanoseconds"),
                        ("voluntary_switches", "count"),
                        ("involuntary_switches", "count"),
                    ],
                    &[
                        ("hot-loop", "hot-loop", &[], &[9_500 * ms, 300 * ms, 2, 40]),
                        ("worker-1", "worker-1", &[], &[1_150 * ms, 20 * ms, 60, 5]),
                        ("worker-2", "worker-2", &[], &[4_250 * ms, 40 * ms, 90, 9]),
                        (
                            "offload-1",
                            "offload-1",
                            &[],
                            &[50 * ms, 30 * ms, 4_000, 20],
                        ),
                        (
                            "offload-2",
                            "offload-2",
                            &[],
                            &[50 * ms, 30 * ms, 4_000, 20],
                        ),
                    ],
                );
                push_named(&url, "threads", &counts, "shop-1");
                // Tasks as the agent ships them: open_board's slow tail
                // grows from 20 to 80 ms five minutes ago; save_board is
                // slower, and one in twenty runs past its deadline.
                let tail_ms = if k < 30 { 20 } else { 80 };
                let p = kiln_profile::tasks::tasks_profile(
                    &tasks_window(tail_ms, k),
                    t * 1_000_000,
                    10_000_000_000,
                );
                push_named(&url, "tasks", &p, "shop-1");
                if k == 40 {
                    push_named(&url, "events", &stuck_event(t + 3_000), "shop-1");
                }
            }
        }
    }
    let shots = root.join("target/e2e");
    let out = Command::new("node")
        .arg(e2e.join("ui.test.mjs"))
        .env("KILN_URL", &url)
        .env("KILN_SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node (Debian's nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the UI test failed (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}
