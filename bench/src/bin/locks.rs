//! Lock cost: nanoseconds per lock+unlock of std's `Mutex` against
//! `kiln_agent::sync::Mutex`, and of `parking_lot::Mutex` against
//! `lock_api::Mutex<kiln_agent::sync::RawMutex, _>`, with an agent
//! profiling locks at the default rate. Uncontended: one thread locking
//! and unlocking. Contended: THREADS threads on one lock, a few
//! nanoseconds of work inside. Variants alternate in ROUNDS rounds so
//! the machine's noise falls on all alike; prints the median of each as
//! JSON (bench/locks.py reads it).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

type KilnRaw = lock_api::Mutex<kiln_agent::sync::RawMutex, u64>;

trait Lock: Send + Sync + 'static {
    fn with(&self, f: impl FnOnce(&mut u64));
}

impl Lock for std::sync::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.lock().unwrap());
    }
}

impl Lock for kiln_agent::sync::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.lock().unwrap());
    }
}

impl Lock for parking_lot::Mutex<u64> {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.lock());
    }
}

impl Lock for KilnRaw {
    #[inline]
    fn with(&self, f: impl FnOnce(&mut u64)) {
        f(&mut self.lock());
    }
}

/// ns per lock+unlock, one thread.
fn uncontended<L: Lock>(l: &L, n: u64) -> f64 {
    let t0 = Instant::now();
    for i in 0..n {
        l.with(|v| *v = black_box(v.wrapping_add(i)));
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// ns per lock+unlock over all threads, `threads` on one lock.
fn contended<L: Lock>(l: Arc<L>, threads: usize, n: u64) -> f64 {
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    l.with(|v| {
                        for k in 0..8 {
                            *v = black_box(v.wrapping_mul(31).wrapping_add(i ^ k));
                        }
                    });
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    t0.elapsed().as_nanos() as f64 / (n * threads as u64) as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rounds = env("ROUNDS", 7) as usize;
    let n = env("N", 20_000_000);
    let threads = env("THREADS", 4) as usize;
    let cn = env("CN", 1_000_000);
    let agent = kiln_agent::Agent::builder()
        .service("bench-locks")
        .cpu_hz(0)
        .start()
        .expect("agent");
    let names = ["std", "kiln", "parking_lot", "kiln_raw"];
    let mut un: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let mut co: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for _ in 0..rounds {
        un[0].push(uncontended(&std::sync::Mutex::new(0u64), n));
        un[1].push(uncontended(
            &kiln_agent::sync::Mutex::named("bench", 0u64),
            n,
        ));
        un[2].push(uncontended(&parking_lot::Mutex::new(0u64), n));
        un[3].push(uncontended(&KilnRaw::new(0), n));
        co[0].push(contended(
            Arc::new(std::sync::Mutex::new(0u64)),
            threads,
            cn,
        ));
        co[1].push(contended(
            Arc::new(kiln_agent::sync::Mutex::named("bench", 0u64)),
            threads,
            cn,
        ));
        co[2].push(contended(
            Arc::new(parking_lot::Mutex::new(0u64)),
            threads,
            cn,
        ));
        co[3].push(contended(Arc::new(KilnRaw::new(0)), threads, cn));
    }
    let st = agent.status();
    let mut out = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        out.insert(format!("{name}_uncontended_ns"), median(&mut un[i]).into());
        out.insert(format!("{name}_contended_ns"), median(&mut co[i]).into());
    }
    out.insert("threads".into(), threads.into());
    out.insert("contended_waits".into(), st.lock.contended.into());
    out.insert("sampled_waits".into(), st.lock.sampled.into());
    agent.stop().expect("stop");
    println!("{}", serde_json::Value::Object(out));
}
