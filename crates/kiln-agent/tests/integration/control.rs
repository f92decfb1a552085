//! The HTTP control endpoints against a real agent in a child process:
//! sessions start, stop (by hand and by themselves) and ship; Go's
//! `go tool pprof` reads `/debug/pprof/profile`; the thread dump shows the
//! workers' stacks; bad parameters get a 4xx naming the parameter; the
//! token and loopback rules hold, also for the router a host mounts.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_profile::DecodeOptions;
use serde_json::{Value, json};

use crate::{hot_a, hot_b, hot_c, process_cpu_ns, profiles};

/// A child process running an agent with control endpoints until its
/// stdin closes; its `KILN_ADDR` lines give the addresses.
pub struct Served {
    child: Child,
    _turn: std::sync::MutexGuard<'static, ()>,
    /// Addresses the child printed, in order.
    pub addrs: Vec<String>,
}

impl Served {
    /// Starts child `mode` with `env` and waits for `n` addresses.
    pub fn start(mode: &str, env: &[(&str, String)], n: usize) -> Served {
        let turn = crate::cpu_turn();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env("KILN_TEST_CHILD", mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addrs = Vec::new();
        while addrs.len() < n {
            let line = lines
                .next()
                .expect("child exited before printing its address")
                .unwrap();
            if let Some((_, a)) = line.split_once("KILN_ADDR ") {
                addrs.push(a.trim().to_string());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe;
        // the report line is sent back through the channel.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if let Some((_, r)) = l.split_once("KILN_REPORT ") {
                    let _ = tx.send(r.to_string());
                }
            }
        });
        REPORTS.with(|r| *r.borrow_mut() = Some(rx));
        Served {
            child,
            _turn: turn,
            addrs,
        }
    }

    /// Closes the child's stdin (it stops its agent) and returns its report.
    pub fn finish(mut self) -> Value {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
        let line = REPORTS
            .with(|r| r.borrow_mut().take())
            .unwrap()
            .recv_timeout(Duration::from_secs(5))
            .expect("child report");
        serde_json::from_str(&line).unwrap()
    }
}

thread_local! {
    static REPORTS: std::cell::RefCell<Option<std::sync::mpsc::Receiver<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Blocks until the parent closes stdin.
pub fn wait_for_parent() {
    let mut s = String::new();
    while std::io::stdin().read_line(&mut s).unwrap_or(0) > 0 {}
}

/// Child: an agent at 100 Hz with control on a free loopback port, a busy
/// thread, until stdin closes; reports its CPU time.
pub fn child_control() {
    let dir = std::env::var("KILN_DIR").unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("ctl")
        .instance("test")
        .cpu_hz(100)
        .window(Duration::from_secs(1))
        .write_to_dir(&dir)
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let cpu0 = process_cpu_ns();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let worker = std::thread::Builder::new()
        .name("spinner".into())
        .spawn(move || {
            // Always computing, so a thread dump finds it in the workload.
            let mut sink = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                sink = sink
                    .wrapping_add(hot_a())
                    .wrapping_add(hot_b())
                    .wrapping_add(hot_c());
            }
            std::hint::black_box(sink);
        })
        .unwrap();
    println!("KILN_ADDR {}", agent.status().control[0]);
    wait_for_parent();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    worker.join().unwrap();
    let status = agent.status();
    agent.stop().unwrap();
    let cpu = process_cpu_ns() - cpu0;
    println!("KILN_REPORT {}", json!({"status": status, "cpu_ns": cpu}));
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Status and JSON body of a request.
fn call(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = req.send().unwrap();
    let code = r.status().as_u16();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, v)
}

fn decode(bytes: &[u8]) -> kiln_profile::Profile {
    let p = kiln_profile::decode(bytes, &DecodeOptions::default()).unwrap();
    p.validate().unwrap();
    p
}

/// CPU nanoseconds a profile gives functions whose name ends with `name`.
fn cpu_of(p: &kiln_profile::Profile, name: &str) -> i64 {
    let ty = p.sample_type_index("cpu").unwrap();
    let top = kiln_profile::top(p, ty).unwrap();
    top.rows
        .iter()
        .filter(|r| r.name.ends_with(name))
        .map(|r| r.total)
        .max()
        .unwrap_or(0)
}

#[test]
fn sessions_pprof_threads_metrics_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        "control",
        &[("KILN_DIR", dir.path().display().to_string())],
        1,
    );
    let base = format!("http://{}", served.addrs[0]);
    let c = client();

    let (code, status) = call(c.get(format!("{base}/debug/kiln/status")));
    assert_eq!(code, 200, "{status}");
    assert!(status["engine"].is_string(), "{status}");
    assert_eq!(status["control"][0], served.addrs[0].as_str());
    assert_eq!(status["sinks"][0]["sink"], "dir");

    // A session at 500 Hz beside the continuous 100 Hz profile.
    let (code, started) = call(c.post(format!(
        "{base}/debug/kiln/start?event=cpu&hz=500&duration=60s"
    )));
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["hz"], 500);
    let id = started["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, report) = call(c.post(format!("{base}/debug/kiln/stop?id={id}")));
    assert_eq!(code, 200, "{report}");
    assert!(report["samples"].as_u64().unwrap() > 100, "{report}");
    let shipped = &report["shipped"][0];
    assert_eq!(shipped["sink"], "dir", "{report}");
    assert_eq!(shipped["ok"], true, "{report}");
    let file = shipped["location"].as_str().unwrap();
    assert!(
        Path::new(file).starts_with(dir.path().join("ctl/test/process_cpu")),
        "{file}"
    );
    let p = decode(&std::fs::read(file).unwrap());
    assert!(cpu_of(&p, "hot_a") > cpu_of(&p, "hot_c"));
    // Stopping again answers the same report; an unknown id is 404.
    let (code, again) = call(c.post(format!("{base}/debug/kiln/stop?id={id}")));
    assert_eq!((code, &again["samples"]), (200, &report["samples"]));
    let (code, _) = call(c.post(format!("{base}/debug/kiln/stop?id=nope")));
    assert_eq!(code, 404);

    // A session past its duration stops and ships by itself.
    let (code, started) = call(c.post(format!("{base}/debug/kiln/start?duration=1")));
    assert_eq!(code, 200, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (_, st) = call(c.get(format!("{base}/debug/kiln/status")));
        let s = st["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id.as_str())
            .cloned()
            .unwrap();
        if s["state"] == "done" {
            break s["report"].clone();
        }
        assert!(Instant::now() < until, "session never ended: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(report["shipped"][0]["ok"], true, "{report}");
    assert!(Path::new(report["shipped"][0]["location"].as_str().unwrap()).exists());

    // Go's /debug/pprof/profile, raw and through `go tool pprof`.
    let r = c
        .get(format!("{base}/debug/pprof/profile?seconds=2"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let p = decode(&r.bytes().unwrap());
    assert!(cpu_of(&p, "hot_a") > 0);
    let go_home = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            &format!("{base}/debug/pprof/profile?seconds=2"),
        ])
        .env("PPROF_TMPDIR", go_home.path())
        .env("HOME", go_home.path())
        .output()
        .expect("`go` must be installed for this test: run scripts/test, which installs golang-go");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("hot_a"), "{text}");

    // Go's symbolz: the handshake, and names for addresses of the profile.
    let r = c.get(format!("{base}/debug/pprof/symbol")).send().unwrap();
    assert_eq!(r.text().unwrap(), "num_symbols: 1\n");
    let addrs: Vec<String> = p
        .locations
        .iter()
        .filter(|l| l.address != 0)
        .take(50)
        .map(|l| format!("{:#x}", l.address))
        .collect();
    let r = c
        .post(format!("{base}/debug/pprof/symbol"))
        .body(addrs.join("+"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().unwrap();
    assert!(text.lines().count() >= addrs.len() / 2, "{text}");
    assert!(text.contains("hot_"), "{text}");
    let r = c
        .post(format!("{base}/debug/pprof/symbol"))
        .body("0xzz")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // The thread dump: every thread, the busy ones in the workload.
    let r = c.get(format!("{base}/debug/kiln/threads")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("\"spinner\" tid="), "{text}");
    assert!(text.contains("\"kiln-sampler\" tid="), "{text}");
    let (code, dump) = call(c.get(format!("{base}/debug/kiln/threads?format=json")));
    assert_eq!(code, 200);
    let threads = dump["threads"].as_array().unwrap();
    let spinner = threads
        .iter()
        .find(|t| t["name"] == "spinner")
        .expect("spinner thread");
    let names: Vec<&str> = spinner["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.contains("hot_") || n.contains("spin")),
        "{names:?}"
    );
    // The sampler sleeps between drains: its stack is in the agent.
    let sampler = threads
        .iter()
        .find(|t| t["name"] == "kiln-sampler")
        .unwrap();
    assert!(
        sampler["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"]
                .as_str()
                .unwrap()
                .contains("kiln_agent::sampler")),
        "{sampler}"
    );

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("# TYPE kiln_agent_samples_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_agent_sink_sent_total{sink=\"dir\""),
        "{metrics}"
    );

    // Bad input: 4xx, and the message names the parameter.
    for (method, path, want, word) in [
        ("POST", "/debug/kiln/start?event=bogus", 400, "event"),
        (
            "POST",
            "/debug/kiln/start?event=wall&hz=5000",
            400,
            "wall session",
        ),
        ("POST", "/debug/kiln/start?hz=0", 400, "hz"),
        ("POST", "/debug/kiln/start?hz=fast", 400, "hz"),
        ("POST", "/debug/kiln/start?hz=20000", 400, "hz"),
        ("POST", "/debug/kiln/start?duration=-1", 400, "duration"),
        ("POST", "/debug/kiln/start?duration=2d", 400, "duration"),
        ("POST", "/debug/kiln/start?duration=5h", 400, "duration"),
        ("POST", "/debug/kiln/start?engine=turbo", 400, "engine"),
        ("POST", "/debug/kiln/stop", 400, "id"),
        ("GET", "/debug/pprof/profile?seconds=0", 400, "seconds"),
        ("GET", "/debug/pprof/profile?seconds=abc", 400, "seconds"),
        ("GET", "/debug/pprof/profile?seconds=2&hz=-5", 400, "hz"),
        ("GET", "/debug/kiln/threads?format=xml", 400, "format"),
        // This binary's global allocator counts allocations; it is not
        // the agent's, so the heap is not sampled, and says why.
        ("GET", "/debug/pprof/heap", 503, "Profiled"),
    ] {
        let url = format!("{base}{path}");
        let req = if method == "POST" {
            c.post(&url)
        } else {
            c.get(&url)
        };
        let (code, body) = call(req);
        assert_eq!(code, want, "{method} {path}: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(word), "{method} {path}: {body}");
    }
    // Asking for an engine other than the one running is a conflict.
    let running = status["engine"].as_str().unwrap();
    let other = if running == "itimer" {
        "ctimer"
    } else {
        "itimer"
    };
    let (code, body) = call(c.post(format!("{base}/debug/kiln/start?engine={other}")));
    assert_eq!(code, 409, "{body}");
    // GET on a POST endpoint is refused, not run.
    let (code, _) = call(c.get(format!("{base}/debug/kiln/start")));
    assert_eq!(code, 405);

    let report = served.finish();
    // Sessions at 500 Hz did not change what the continuous 100 Hz profile
    // says: its CPU time still matches the process's.
    let mut total = 0i64;
    for f in profiles(dir.path()) {
        if report["status"]["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["report"]["shipped"][0]["location"] == f.display().to_string().as_str())
        {
            continue;
        }
        let p = decode(&std::fs::read(&f).unwrap());
        total += p.total(p.sample_type_index("cpu").unwrap());
    }
    let cpu = report["cpu_ns"].as_f64().unwrap();
    let ratio = total as f64 / cpu;
    assert!(
        (0.7..=1.1).contains(&ratio),
        "continuous profile {total} ns vs process CPU {cpu} ns (ratio {ratio:.3})"
    );
}

/// Child: control with a token, on every interface, also mounted into a
/// host's own axum server; first shows that a non-loopback address
/// without a token is refused.
pub fn child_token() {
    let err = kiln_agent::Agent::builder()
        .cpu_hz(0)
        .control("0.0.0.0:0")
        .start()
        .err()
        .expect("a non-loopback control address without a token must be refused");
    assert!(err.to_string().contains("KILN_CONTROL_TOKEN"), "{err}");
    let agent = kiln_agent::Agent::builder()
        .service("tok")
        .cpu_hz(0)
        .control("0.0.0.0:0")
        .control_token("s3cret")
        .start()
        .unwrap();
    let port = agent.status().control[0]
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    println!("KILN_ADDR 127.0.0.1:{port}");
    let router = agent.router();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    println!("KILN_ADDR {}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, router).await });
    wait_for_parent();
    let status = agent.status();
    agent.stop().unwrap();
    println!("KILN_REPORT {}", json!({"status": status}));
}

#[test]
fn token_required_off_loopback_and_checked_on_mounted_router() {
    let served = Served::start("token", &[], 2);
    let c = client();
    for addr in &served.addrs {
        let url = format!("http://{addr}/debug/kiln/status");
        let r = c.get(&url).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{addr}: no token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = c.get(&url).bearer_auth("s3creT").send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{addr}: wrong token");
        let r = c.get(&url).bearer_auth("s3cret2").send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{addr}: longer token");
        let (code, st) = call(c.get(&url).bearer_auth("s3cret"));
        assert_eq!(code, 200, "{addr}: {st}");
        assert!(
            st["engine_reason"]
                .as_str()
                .unwrap()
                .contains("continuous CPU sampling is off"),
            "{st}"
        );
        // Even with sampling off, a session can run (and is refused
        // without the token).
        let r = c
            .get(format!("http://{addr}/debug/pprof/profile?seconds=1"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let r = c
        .get(format!(
            "http://{}/debug/pprof/profile?seconds=1",
            served.addrs[1]
        ))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    decode(&r.bytes().unwrap());
    served.finish();
}
