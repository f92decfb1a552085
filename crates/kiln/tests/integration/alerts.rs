//! Alerts end to end: Debian's `prometheus-alertmanager` started here, a
//! real `kiln server` with `[[alerts]]` rules evaluated every second, and
//! a real agent in this process pushing live profiles. A share rule fires
//! into Alertmanager with its labels while `price_hot` takes most of the
//! CPU, and resolves when it cools down; a rule whose function never runs
//! never fires; an event rule fires on a stuck task; a bad rule is refused
//! at start with a message naming it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::start_with;

struct Alertmanager(Child, String, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn alertmanager() -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus-alertmanager must be installed (scripts/test installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(30);
    while reqwest::blocking::get(format!("{url}/-/ready"))
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(Instant::now() < until, "alertmanager did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    Alertmanager(child, url, dir)
}

/// The alerts Alertmanager holds now, by `alertname`.
fn active(am: &Alertmanager) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::blocking::get(format!("{}/api/v2/alerts", am.1))
        .unwrap()
        .json()
        .unwrap();
    v.as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < until, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[inline(never)]
fn price_hot(d: Duration) {
    let t = Instant::now();
    let mut x = 1u64;
    while t.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

#[inline(never)]
fn cool_work(d: Duration) {
    let t = Instant::now();
    let mut x = 3u64;
    while t.elapsed() < d {
        x = std::hint::black_box(x.wrapping_mul(2862933555777941757).wrapping_add(7));
    }
}

#[inline(never)]
fn stall(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_bad_rule_is_refused_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kiln.toml");
    std::fs::write(
        &cfg,
        "[[alerts]]\nname = \"hot\"\nkind = \"share\"\nquery = 'process_cpu{service_name=\"x\"}'\nfunction = \"(\"\nabove = 10\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--no-self-profile",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad rule must stop the start");
    assert!(
        err.contains("alert rule \"hot\"") && err.contains("function"),
        "{err}"
    );
}

#[test]
fn share_and_event_rules_reach_alertmanager() {
    let _one = crate::ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let am = alertmanager();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kiln.toml");
    let sel = r#"{service_name="alert-shop"}"#;
    let cpu = format!("process_cpu:cpu:nanoseconds:cpu:nanoseconds{sel}");
    std::fs::write(
        &cfg,
        format!(
            r#"[alerting]
alertmanager = "{am}"
every = "1s"
external_url = "http://kiln.example:4040"

[[alerts]]
name = "pricing hot"
kind = "share"
query = '{cpu}'
function = "integration::alerts::price_hot"
measure = "total"
above = 40
window = "4s"

[[alerts]]
name = "never"
kind = "share"
query = '{cpu}'
function = "integration::alerts::never_called"
above = 1
window = "4s"

[[alerts]]
name = "stuck tasks"
kind = "event"
query = '{sel}'
event = "stuck"
window = "1m"
"#,
            am = am.1
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let (_server, url) = start_with(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--config", &cfg_s],
        &[],
    );
    let agent = kiln_agent::Agent::builder()
        .service("alert-shop")
        .instance("shop-1")
        .cpu_hz(200)
        .window(Duration::from_secs(1))
        .push_to(&url)
        .start()
        .unwrap();
    // Hot: price_hot takes ~80% of the CPU; and a task stalls past its
    // deadline.
    let hot_until = Instant::now() + Duration::from_secs(6);
    std::thread::spawn(|| {
        let _t = kiln_agent::task::start_with_deadline("save_board", Duration::from_millis(100));
        stall(Duration::from_millis(500));
    });
    while Instant::now() < hot_until {
        price_hot(Duration::from_millis(40));
        cool_work(Duration::from_millis(10));
    }
    fn named(name: &'static str) -> impl Fn(&serde_json::Value) -> bool {
        move |a| a["labels"]["alertname"] == name
    }
    let states = || {
        reqwest::blocking::get(format!("{url}/api/v1/alerts"))
            .unwrap()
            .text()
            .unwrap()
    };
    let until = Instant::now() + Duration::from_secs(20);
    while !active(&am).iter().any(named("pricing hot")) {
        assert!(
            Instant::now() < until,
            "the share rule did not reach Alertmanager: {}",
            states()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let alerts = active(&am);
    let hot = alerts.iter().find(|a| named("pricing hot")(a)).unwrap();
    assert_eq!(hot["labels"]["service_name"], "alert-shop", "{hot}");
    assert_eq!(
        hot["labels"]["function"], "integration::alerts::price_hot",
        "{hot}"
    );
    assert!(
        hot["annotations"]["value"].as_str().unwrap().ends_with('%'),
        "{hot}"
    );
    assert!(
        hot["annotations"]["link"]
            .as_str()
            .unwrap()
            .starts_with("http://kiln.example:4040/?query="),
        "{hot}"
    );
    wait_for("the event rule firing", 20, || {
        active(&am).iter().any(named("stuck tasks"))
    });
    // Cool: price_hot stops; the rule resolves and leaves Alertmanager.
    let cool_until = Instant::now() + Duration::from_secs(25);
    let mut resolved = false;
    while Instant::now() < cool_until {
        cool_work(Duration::from_millis(200));
        if !active(&am).iter().any(named("pricing hot")) {
            resolved = true;
            break;
        }
    }
    agent.stop().unwrap();
    assert!(
        resolved,
        "the share rule resolved once price_hot cooled down"
    );
    assert!(
        !active(&am).iter().any(named("never")),
        "a rule whose condition never held never fires"
    );
    let states: serde_json::Value = reqwest::blocking::get(format!("{url}/api/v1/alerts"))
        .unwrap()
        .json()
        .unwrap();
    let by = |n: &str| {
        states["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by("pricing hot")["state"], "inactive", "{states}");
    assert_eq!(by("never")["state"], "inactive", "{states}");
    assert_eq!(by("stuck tasks")["state"], "firing", "{states}");
    let metrics = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("kiln_server_alerts_resolved_total 1"),
        "{metrics}"
    );
}
