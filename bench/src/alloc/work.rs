//! The allocation benchmark's workload, shared by its three binaries
//! (`alloc-system`, `alloc-kiln`, `alloc-jemalloc`), which differ only in
//! their global allocator: JSON records parsed into structs again and
//! again (strings, vectors, a map: a realistic mix of small and medium
//! blocks), every tenth parse kept for a while (a live heap that moves),
//! then pairs of a 64-byte allocation and its free, timed alone.

use std::hint::black_box;
use std::time::Instant;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Record {
    id: u64,
    name: String,
    email: String,
    tags: Vec<String>,
    price: f64,
    attrs: std::collections::BTreeMap<String, String>,
}

fn json(records: usize) -> String {
    let mut s = String::from("[");
    for i in 0..records {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":{i},"name":"customer number {i}","email":"c{i}@example.com","tags":["t{a}","group-{b}","x"],"price":{p}.5,"attrs":{{"tier":"gold","region":"eu-{b}","note":"{n}"}}}}"#,
            a = i % 17,
            b = i % 5,
            p = i % 1000,
            n = "n".repeat(i % 64)
        ));
    }
    s.push(']');
    s
}

/// Runs the workload; prints one JSON line of its own figures.
pub fn run(rounds: usize, pairs: usize) {
    // Services are multi-threaded. glibc's malloc skips its locks while a
    // process has one thread, which would charge any agent that starts a
    // thread with that difference: every variant has a second thread.
    std::thread::spawn(|| {
        loop {
            std::thread::park();
        }
    });
    let text = json(20_000);
    let t = Instant::now();
    let mut kept: Vec<Vec<Record>> = Vec::new();
    let mut n = 0usize;
    for r in 0..rounds {
        let v: Vec<Record> = serde_json::from_str(&text).expect("valid JSON");
        n += v.len();
        if r % 10 == 0 {
            kept.push(v);
            if kept.len() > 8 {
                kept.remove(0);
            }
        }
    }
    let parse_s = t.elapsed().as_secs_f64();
    black_box(&kept);
    drop(kept);
    let t = Instant::now();
    for i in 0..pairs {
        let b = black_box(Box::new([i as u8; 64]));
        drop(b);
    }
    let pair_ns = t.elapsed().as_nanos() as f64 / pairs.max(1) as f64;
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({"records": n, "parse_s": parse_s, "pair_ns": pair_ns, "vmhwm_kb": hwm})
    );
}

/// Rounds and pairs from the command line (defaults 60 and 20 M).
pub fn args() -> (usize, usize) {
    let a: Vec<String> = std::env::args().collect();
    let rounds = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let pairs = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000_000);
    (rounds, pairs)
}
