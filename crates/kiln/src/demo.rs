//! `kiln demo`: a server and, beside it, a small shop service that embeds
//! kiln-agent and pushes to it — a thread pool serving requests (parsing,
//! pricing, a database call that slows down every other two minutes,
//! rendering, a session cache that holds memory) and a cache evictor that
//! keeps one core busy. A newcomer runs one command and sees live data:
//! the flame graph, the top table, the comparison of two phases, the
//! bottleneck thread, where memory is allocated and who holds it, and
//! each request as a task: `checkout` with its `sql` and `redis` calls
//! (one in fifty waits 20 ms on redis: the slow tail), a nested `render`;
//! and a `save_board` task whose disk stalls once a minute, past its
//! deadline: a stuck task the watchdog catches with its stack.
//!
//! The service is this binary again (`kiln demo-service`, hidden), so the
//! server's own profile and the shop's stay apart.

use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The demo's alert rules: the evictor's share of CPU (fires), the
/// checkout task's p99 (its redis tail passes 15 ms), stuck saves (once a
/// minute).
const DEMO_ALERTS: &str = r#"
[alerting]
every = "10s"

[[alerts]]
name = "evictor hot"
kind = "share"
query = 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="demo-shop"}'
function = "kiln::demo::evict_cold"
measure = "total"
above = 25
window = "2m"

[[alerts]]
name = "checkout p99"
kind = "task"
query = '{service_name="demo-shop"}'
task = "checkout"
quantile = 0.99
above = "15ms"
window = "5m"

[[alerts]]
name = "stuck saves"
kind = "event"
query = '{service_name="demo-shop"}'
event = "stuck"
window = "5m"
"#;

/// Runs the demo until Ctrl-C.
pub fn run(listen: &str, data_dir: Option<&Path>) -> Result<()> {
    let dir = data_dir.map_or_else(|| std::env::temp_dir().join("kiln-demo"), Path::to_path_buf);
    let mut cfg = crate::server::config_for(Some(&dir), None, None)?;
    // Blocks every minute, so the demo shows them too.
    cfg.flush_every = Duration::from_secs(60);
    // Alert rules over the shop, so the Alerts view has something to say.
    let cfg = cfg.apply_toml(DEMO_ALERTS)?;
    crate::server::serve(cfg, listen, true, |url| {
        let exe = std::env::current_exe().context("finding this program")?;
        let child = Command::new(exe)
            .args(["demo-service", "--push", url])
            .stdin(Stdio::null())
            .spawn()
            .context("starting the demo service")?;
        println!(
            "kiln demo: open {url}/?query=process_cpu:cpu:nanoseconds:cpu:nanoseconds%7Bservice_name%3D%22demo-shop%22%7D&from=now-15m"
        );
        println!(
            "kiln demo: memory held: {url}/?query=memory:inuse_space:bytes:space:bytes%7Bservice_name%3D%22demo-shop%22%7D&from=now-15m"
        );
        println!(
            "kiln demo: tasks: {url}/?query=process_cpu:cpu:nanoseconds:cpu:nanoseconds%7Bservice_name%3D%22demo-shop%22%7D&from=now-15m&tab=tasks"
        );
        println!("kiln demo: the first profiles arrive within 5 seconds; Ctrl-C stops");
        Ok(Some(child))
    })
}

/// The shop service: profiles itself into `url` until its parent exits.
pub fn service(url: &str) -> Result<()> {
    let agent = kiln_agent::Agent::builder()
        .service("demo-shop")
        .window(Duration::from_secs(5))
        .wall_hz(20)
        .push_to(url)
        .start()
        .context("starting the agent")?;
    let parent = std::os::unix::process::parent_id();
    let mut threads = Vec::new();
    for i in 1..=3 {
        threads.push(
            std::thread::Builder::new()
                .name(format!("shop-worker-{i}"))
                .spawn(move || worker(i))?,
        );
    }
    threads.push(
        std::thread::Builder::new()
            .name("cache-evictor".into())
            .spawn(evictor)?,
    );
    threads.push(
        std::thread::Builder::new()
            .name("board-saver".into())
            .spawn(saver)?,
    );
    // Gone with the server: a parent killed outright leaves this process
    // adopted by another.
    while std::os::unix::process::parent_id() == parent {
        std::thread::sleep(Duration::from_millis(500));
    }
    agent.stop().context("stopping the agent")?;
    Ok(())
}

/// Serves "requests": about a third of a core.
fn worker(seed: u64) {
    let mut x = seed;
    loop {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = handle_request(x);
        }
        std::thread::sleep(Duration::from_millis(60));
    }
}

/// One request, a `checkout` task: its database call is I/O `sql` (a
/// real wait beside the query's CPU); one in fifty also waits 20 ms on
/// `redis`; the response is rendered in a nested `render` task.
#[inline(never)]
fn handle_request(x: u64) -> u64 {
    let _task = kiln_agent::task::start("checkout");
    let body = parse_request(x);
    let total = price_cart(body);
    let rows = kiln_agent::task::io("sql", || {
        std::thread::sleep(Duration::from_micros(300));
        query_db(total)
    });
    if rows % 50 == 0 {
        kiln_agent::task::io("redis", || std::thread::sleep(Duration::from_millis(20)));
    }
    let body = {
        let _render = kiln_agent::task::start("render");
        render_response(rows)
    };
    remember_session(body);
    send_response(body)
}

/// The last 2,000 sessions (16 KiB each, ~32 MB): what the live heap
/// shows as held, beside the short-lived strings of rendering. The
/// evictor audits them under the lock now and then, so the workers wait
/// on it: the lock profile names `sessions`.
static SESSIONS: kiln_agent::sync::Mutex<std::collections::VecDeque<Vec<u8>>> =
    kiln_agent::sync::Mutex::named("sessions", std::collections::VecDeque::new());

#[inline(never)]
fn remember_session(x: u64) {
    let session = vec![(x & 0xff) as u8; 16 << 10];
    let mut s = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    s.push_back(session);
    if s.len() > 2_000 {
        s.pop_front();
    }
}

/// Reads every session under the lock (tens of milliseconds).
#[inline(never)]
fn audit_sessions() -> u64 {
    let s = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    let mut sum = 0u64;
    for _ in 0..4 {
        for v in s.iter() {
            sum = v
                .iter()
                .fold(sum, |a, &b| a.wrapping_mul(31) ^ u64::from(b));
        }
    }
    black_box(sum)
}

/// Copies the page into the socket buffer (libc's `memcpy`) and writes it
/// out (`write(2)`, here to `/dev/null`): time inside libc and a syscall,
/// which a frame-pointer walk would hand to `handle_request`'s caller;
/// the flame graph shows it under `send_response`.
#[inline(never)]
fn send_response(x: u64) -> u64 {
    use std::io::Write;
    static SINK: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    thread_local! {
        static PAGE: Vec<u8> = vec![b'k'; 64 << 10];
        static OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 << 10]);
    }
    PAGE.with(|page| {
        OUT.with(|out| {
            let mut out = out.borrow_mut();
            out.copy_from_slice(black_box(page));
            if let Some(mut f) = SINK
                .get_or_init(|| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open("/dev/null")
                        .ok()
                })
                .as_ref()
            {
                let _ = f.write_all(&out[..4096]);
            }
            black_box(out[(x % 4096) as usize] as u64) ^ x
        })
    })
}

#[inline(never)]
fn parse_request(x: u64) -> u64 {
    let mut h = x;
    for b in
        black_box(b"{\"cart\":[{\"sku\":\"kiln-42\",\"qty\":3},{\"sku\":\"glaze\",\"qty\":1}]}")
    {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[inline(never)]
fn price_cart(x: u64) -> u64 {
    let mut p = (x % 1000) as f64;
    for i in 0..400 {
        p = (p * 1.000_1 + f64::from(i)).sqrt() * 3.0;
    }
    black_box(p) as u64 ^ x
}

/// Slow every other two minutes: what a comparison of two ranges finds.
#[inline(never)]
fn query_db(x: u64) -> u64 {
    let slow = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / 120)
        % 2
        == 1;
    let rounds = if slow { 3_000 } else { 600 };
    let mut h = x;
    for i in 0..rounds {
        h = h.rotate_left(7) ^ black_box(i);
    }
    h
}

#[inline(never)]
fn render_response(x: u64) -> u64 {
    let s = format!("{{\"total\":{x},\"currency\":\"EUR\"}}");
    black_box(s.len() as u64) ^ x
}

/// Saves a board every two seconds, a `save_board` task with a 200 ms
/// deadline; every thirtieth save the disk stalls for 1.2 s: the
/// watchdog catches it past its deadline and again past four times it,
/// with this thread's stack (`wait_for_disk`), and the server lists the
/// events.
fn saver() {
    for n in 1u64.. {
        let task = kiln_agent::task::start_with_deadline("save_board", Duration::from_millis(200));
        let stall = if n % 30 == 0 { 1_200 } else { 15 };
        kiln_agent::task::io("disk", || wait_for_disk(Duration::from_millis(stall)));
        drop(task);
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[inline(never)]
fn wait_for_disk(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Walks the cache nearly all the time: the bottleneck thread. Every
/// second it audits the sessions, holding their lock.
fn evictor() {
    let mut cache: Vec<u64> = (0..50_000).collect();
    for round in 0u64.. {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(90) {
            evict_cold(&mut cache);
        }
        if round % 10 == 0 {
            audit_sessions();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[inline(never)]
fn evict_cold(cache: &mut [u64]) {
    for v in cache.iter_mut() {
        *v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    black_box(cache);
}
