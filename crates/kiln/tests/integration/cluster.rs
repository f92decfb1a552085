//! Two `kiln server` processes on one bucket of a real S3-compatible server
//! (s3s-fs over HTTP, SigV4, started here): each takes different profiles,
//! and both answer every query identically — while the data is in their
//! heads (they ask each other), after one and then both cut their heads
//! into blocks in the bucket, and after one is killed and restarted from
//! the bucket with its log gone.

use std::time::{Duration, Instant};

use crate::server::{Running, start_with};

pub const BUCKET: &str = "kiln-bucket";
const KEY_ID: &str = "kiln-test-key";
const SECRET: &str = "kiln-test-secret";

/// s3s-fs over `root` on a free port, one bucket; lives with the runtime.
fn start_s3(rt: &tokio::runtime::Runtime, root: &std::path::Path) -> String {
    let s3 = S3::start(rt, root, "127.0.0.1:0");
    let url = s3.url.clone();
    std::mem::forget(s3.task);
    url
}

/// A real S3-compatible server (s3s-fs over HTTP, SigV4) that can be
/// stopped — its listener closed and every connection cut — and started
/// again on the same address.
pub struct S3 {
    /// `http://host:port`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl S3 {
    /// Serves `root` (bucket [`BUCKET`]) on `addr` (`127.0.0.1:0` for any
    /// free port).
    pub fn start(rt: &tokio::runtime::Runtime, root: &std::path::Path, addr: &str) -> S3 {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(KEY_ID, SECRET));
        let service = b.build();
        let listener = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = rt.spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // Connections live in the set: aborting this task drops it,
            // which aborts them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                conns.spawn(async move {
                    let _ = conn.await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        S3 {
            url: format!("http://{addr}"),
            task,
        }
    }

    /// Stops serving: the port refuses connections until started again.
    pub fn stop(self, rt: &tokio::runtime::Runtime) {
        self.task.abort();
        let _ = rt.block_on(self.task);
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

/// The environment that points a server's S3 client at `endpoint`.
pub fn s3_env(endpoint: &str) -> [(&'static str, String); 5] {
    [
        ("AWS_ACCESS_KEY_ID", KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Folded profiles, pushed through the legacy ingest.
fn ingest(url: &str, instance: &str, text: &str) {
    let r = client()
        .post(format!("{url}/ingest"))
        .query(&[
            ("name", format!("shop{{instance={instance}}}").as_str()),
            ("format", "folded"),
            ("from", "now-30s"),
        ])
        .body(text.to_string())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
}

/// What a server answers for the shop: the top table and the merged
/// profile's folded stacks.
pub fn answer(url: &str) -> (serde_json::Value, String) {
    let q = [
        ("query", r#"process_cpu{service_name="shop"}"#),
        ("from", "now-1h"),
        ("until", "now"),
    ];
    let top: serde_json::Value = client()
        .get(format!("{url}/api/v1/top"))
        .query(&q)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let r = client()
        .get(format!("{url}/api/v1/pprof"))
        .query(&q)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let p = kiln_profile::decode(&r.bytes().unwrap(), &Default::default()).unwrap();
    let i = p.default_type_index().unwrap();
    (top, kiln_profile::folded::encode(&p, i, false))
}

fn flush(url: &str) -> Vec<String> {
    let v: serde_json::Value = client()
        .post(format!("{url}/api/v1/admin/flush"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect()
}

/// Block ids in the bucket (by their meta.json).
pub fn blocks_in(root: &std::path::Path) -> Vec<String> {
    fn walk(d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "meta.json") {
                let id = p.parent().unwrap().file_name().unwrap();
                out.push(id.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(BUCKET), &mut out);
    out.sort();
    out
}

#[test]
fn two_servers_on_one_s3_bucket_answer_alike() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3_root = tempfile::tempdir().unwrap();
    let endpoint = start_s3(&rt, s3_root.path());
    let env = [
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let (pa, pb) = (free_port(), free_port());
    let conf = tempfile::tempdir().unwrap();
    let config = |me: &str, peer: u16| {
        let path = conf.path().join(format!("{me}.toml"));
        std::fs::write(
            &path,
            format!(
                "[storage]\nflush_every = \"1h\"\nrefresh_every = \"0s\"\n\
                 [cluster]\nserver_id = \"{me}\"\npeers = [\"http://127.0.0.1:{peer}\"]\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let (ca, cb) = (config("a", pb), config("b", pa));
    let storage = format!("s3://{BUCKET}/kiln");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |dir: &std::path::Path, port: u16, conf: &str| -> (Running, String) {
        start_with(
            dir,
            &format!("127.0.0.1:{port}"),
            &["--storage", &storage, "--config", conf],
            &env,
        )
    };
    let (a, ua) = run(da.path(), pa, &ca);
    let (_b, ub) = run(db.path(), pb, &cb);

    ingest(&ua, "a", "main;checkout;price 30\nmain;checkout;db 10\n");
    ingest(&ua, "a", "main;search 5\n");
    ingest(&ub, "b", "main;checkout;price 7\nmain;gc 2\n");
    // Folded samples at the default 100 Hz: 10 ms of CPU each.
    let want = "main;checkout;db 100000000\nmain;checkout;price 370000000\n\
                main;gc 20000000\nmain;search 50000000\n";

    // In the heads: each asks the other.
    let heads = answer(&ua);
    assert_eq!(heads.1, want);
    assert_eq!(heads.0["total"], 540_000_000, "{}", heads.0);
    assert_eq!(answer(&ub), heads);

    // a cuts its head into the bucket; b finds the block or asks a.
    let made = flush(&ua);
    assert_eq!(made.len(), 1);
    assert_eq!(blocks_in(s3_root.path()), made);
    assert_eq!(answer(&ua), heads);
    assert_eq!(answer(&ub), heads);
    let more = flush(&ub);
    assert_eq!(blocks_in(s3_root.path()).len(), 2);
    assert!(
        more[0].contains("-b-") && made[0].contains("-a-"),
        "{made:?} {more:?}"
    );
    assert_eq!(answer(&ua), heads);
    assert_eq!(answer(&ub), heads);

    // Late data lands in a's head again, and both still agree.
    ingest(&ua, "a", "main;search 1\n");
    let later = answer(&ub);
    assert_eq!(later.0["total"], 550_000_000);
    assert_eq!(answer(&ua), later);

    // a dies and comes back: its blocks come from the bucket, its head
    // from its log (the cut removed the log the blocks hold).
    drop(a);
    let wal: u64 = std::fs::read_dir(da.path().join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        wal < 4096,
        "only the late profile is in a's log: {wal} bytes"
    );
    let t = Instant::now();
    let (mut a, ua) = run(da.path(), pa, &ca);
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(answer(&ua), later);
    assert_eq!(answer(&ub), later);

    // SIGTERM (what systemd, Kubernetes and `kill` send) stops a
    // gracefully: it exits 0 and its head is a block in the bucket, where
    // b and any other server find it.
    let before = blocks_in(s3_root.path()).len();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &a.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = a.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop the server");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert_eq!(blocks_in(s3_root.path()).len(), before + 1);
}
