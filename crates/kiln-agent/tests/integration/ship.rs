//! The sinks against real servers over HTTP: an S3-compatible server
//! (`s3s-fs`, in this process) gets every window under the documented key
//! and a receiver of Pyroscope's Connect push API gets the same windows
//! with the right labels; with the push target down (a black hole that
//! accepts and never answers), the host's memory stays flat, its threads
//! never wait, and `stop()` keeps its deadline.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_profile::DecodeOptions;
use kiln_profile::push::PushRequest;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::json;

use crate::{child_report, run_child, spin};

const BUCKET: &str = "kiln-bucket";
const KEY_ID: &str = "kiln-test-key";
const SECRET: &str = "kiln-test-secret";

/// An S3-compatible server (s3s-fs over a temporary directory) on a free
/// loopback port, with one bucket; lives as long as the runtime.
fn start_s3(rt: &tokio::runtime::Runtime, root: &std::path::Path) -> String {
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(KEY_ID, SECRET));
    let service = b.build();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let http =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    format!("http://{addr}")
}

/// What the push receiver got: each series' labels and its decoded profile.
type Pushed = Arc<Mutex<Vec<(Vec<(String, String)>, kiln_profile::Profile)>>>;

/// A receiver of `POST /push.v1.PusherService/Push` on a free port.
fn start_push_receiver(rt: &tokio::runtime::Runtime) -> (String, Pushed) {
    let got: Pushed = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        kiln_profile::push::PUSH_PATH,
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/proto");
                    let req = PushRequest::from_bytes(&body).unwrap();
                    for s in req.series {
                        let labels = s.labels.into_iter().map(|l| (l.name, l.value)).collect();
                        let p = kiln_profile::decode(
                            &s.samples[0].raw_profile,
                            &DecodeOptions::default(),
                        )
                        .unwrap();
                        p.validate().unwrap();
                        g.lock().unwrap().push((labels, p));
                    }
                    ([("content-type", "application/proto")], Vec::<u8>::new())
                }
            },
        ),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// Child: an agent from the environment for `SHIP_SECONDS` of work.
pub fn child_ship() {
    let seconds: f64 = std::env::var("SHIP_SECONDS").map_or(2.0, |s| s.parse().unwrap());
    let agent = kiln_agent::Agent::from_env()
        .unwrap()
        .service("ship")
        .instance("test")
        .start()
        .unwrap();
    crate::workload(seconds);
    let status = agent.status();
    agent.stop().unwrap();
    println!("KILN_REPORT {}", json!({"status": status}));
}

#[test]
fn s3_and_push_sinks_get_every_window() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let endpoint = start_s3(&rt, root.path());
    let (push_url, pushed) = start_push_receiver(&rt);
    let out = run_child(
        "ship",
        &[
            ("KILN_S3", format!("s3://{BUCKET}/profiles")),
            ("KILN_SERVER", push_url),
            ("KILN_LABELS", "region=eu-west-1".into()),
            ("KILN_WINDOW", "400ms".into()),
            ("KILN_CPU_HZ", "200".into()),
            ("AWS_ENDPOINT_URL", endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
        ],
    );
    let report = child_report(&out);
    let sinks = report["status"]["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 2, "{report}");
    for s in sinks {
        assert_eq!(s["failed"], 0, "{s}");
        assert_eq!(s["dropped"], 0, "{s}");
    }

    // Read the bucket back through the S3 API, as a user would.
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET)
        .with_region("us-east-1")
        .build()
        .unwrap();
    let keys: Vec<String> = rt.block_on(async {
        use futures::TryStreamExt;
        let prefix = object_store::path::Path::from("profiles");
        let list: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
        list.into_iter().map(|m| m.location.to_string()).collect()
    });
    assert!(keys.len() >= 3, "{keys:?}");
    // CPU windows, and beside them each window's per-thread figures.
    let key = regex::Regex::new(r"^profiles/ship/test/(process_cpu|threads)/(\d+)-(\d+)\.pb\.gz$")
        .unwrap();
    let mut s3_cpu = 0;
    let mut s3_windows = 0;
    for k in &keys {
        let c = key.captures(k).unwrap_or_else(|| panic!("bad key {k}"));
        if &c[1] == "threads" {
            continue;
        }
        s3_windows += 1;
        assert!(
            c[2].parse::<u64>().unwrap() < c[3].parse::<u64>().unwrap(),
            "{k}"
        );
        let bytes = rt.block_on(async {
            store
                .get(&object_store::path::Path::from(k.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        });
        let p = kiln_profile::decode(&bytes, &DecodeOptions::default()).unwrap();
        p.validate().unwrap();
        s3_cpu += p.total(p.sample_type_index("cpu").unwrap());
    }

    // The same windows reached the push receiver, labelled.
    let pushed = pushed.lock().unwrap();
    assert_eq!(pushed.len(), keys.len(), "one push per profile, as in S3");
    let mut push_cpu = 0;
    let mut push_windows = 0;
    for (labels, p) in pushed.iter() {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("__name__") == Some("threads") {
            continue;
        }
        push_windows += 1;
        assert_eq!(get("__name__"), Some("process_cpu"), "{labels:?}");
        assert_eq!(get("service_name"), Some("ship"), "{labels:?}");
        assert_eq!(get("instance"), Some("test"), "{labels:?}");
        assert_eq!(get("region"), Some("eu-west-1"), "{labels:?}");
        push_cpu += p.total(p.sample_type_index("cpu").unwrap());
    }
    assert_eq!(s3_windows, push_windows);
    assert_eq!(s3_cpu, push_cpu);
    assert!(s3_cpu > 0);
}

/// A server that accepts connections and never answers.
fn black_hole() -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().take(10_000) {
            match s {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
    (format!("http://{addr}"), h)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// `voluntary_ctxt_switches` of the calling thread: how often it waited.
fn voluntary_switches() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Child: push to a dead server for `DEAD_SECONDS` with 100 ms windows
/// while two application threads compute; reports memory over time, how
/// often the application threads waited, and how long `stop()` took.
pub fn child_dead_server() {
    let seconds: u64 = std::env::var("DEAD_SECONDS").map_or(24, |s| s.parse().unwrap());
    let agent = kiln_agent::Agent::from_env()
        .unwrap()
        .service("dead")
        .instance("test")
        .window(Duration::from_millis(100))
        .start()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(seconds);
    let app = |name: &str| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let before = voluntary_switches();
                let mut x = 0u64;
                while Instant::now() < until {
                    x = x.wrapping_add(spin(1));
                }
                std::hint::black_box(x);
                voluntary_switches() - before
            })
            .unwrap()
    };
    let apps = [app("app-1"), app("app-2")];
    let mut rss = Vec::new();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(rss_bytes());
    }
    let waits: Vec<u64> = apps.into_iter().map(|t| t.join().unwrap()).collect();
    let status = agent.status();
    let t = Instant::now();
    let stopped = agent.stop();
    let stop_ms = t.elapsed().as_millis() as u64;
    println!(
        "KILN_REPORT {}",
        json!({"status": status, "rss": rss, "app_waits": waits, "stop_ms": stop_ms,
               "stop_error": stopped.err().map(|e| e.to_string())})
    );
}

#[test]
fn dead_push_target_bounded_memory_and_no_waiting() {
    let (url, _hole) = black_hole();
    let seconds: u64 = std::env::var("DEAD_SECONDS").map_or(24, |s| s.parse().unwrap());
    let out = run_child(
        "deadpush",
        &[
            ("KILN_SERVER", url),
            ("KILN_CPU_HZ", "250".into()),
            ("DEAD_SECONDS", seconds.to_string()),
        ],
    );
    let report = child_report(&out);
    let sink = &report["status"]["sinks"][0];
    eprintln!("dead push target: {report}");
    // Bounded: the queue is full and the oldest profiles were dropped.
    assert_eq!(sink["queued"], kiln_agent::QUEUE_CAPACITY as u64, "{sink}");
    assert!(sink["dropped"].as_u64().unwrap() > 0, "{sink}");
    assert_eq!(sink["sent"], 0, "{sink}");
    assert!(
        sink["last_error"].as_str().unwrap().contains("timed out"),
        "{sink}"
    );
    // The queue's bound is proven by its counters above; RSS guards against
    // anything else growing with each window once the queue is full (after
    // ~7 s of 100 ms windows). The agent without any sink also grows a few
    // MB over its first minutes (symbol caches; docs/performance.md), so
    // this bound is loose.
    let rss: Vec<u64> = report["rss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let settled = rss[9];
    let peak = *rss[9..].iter().max().unwrap();
    assert!(
        peak - settled < 12 << 20,
        "RSS grew by {} KiB after the queue filled: {rss:?}",
        (peak - settled) >> 10
    );
    // The application threads computed without ever waiting.
    for w in report["app_waits"].as_array().unwrap() {
        assert!(
            w.as_u64().unwrap() < 20,
            "an application thread waited: {report}"
        );
    }
    // stop() tried a last flush and kept its deadline.
    let stop_ms = report["stop_ms"].as_u64().unwrap();
    assert!(
        stop_ms <= kiln_agent::STOP_DEADLINE.as_millis() as u64 + 2000,
        "stop took {stop_ms} ms"
    );
}
