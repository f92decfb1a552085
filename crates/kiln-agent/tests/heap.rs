//! Allocation profiling against a workload's own counts, with
//! `Profiled<System>` as this test binary's global allocator and the
//! default sampling rate: big buffers, many small strings, a retained
//! cache, a vector grown by realloc, and blocks freed on another thread.
//! The memory profile the agent writes must give each function its share
//! of the bytes allocated within ±5 points, and the retained cache its
//! bytes in use at the window's end within ±20%. Then a stress run:
//! many threads allocating and freeing, threads coming and going, and a
//! fork whose child allocates with nothing recorded.

use std::alloc::System;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use kiln_agent::alloc::Profiled;

mod common;

#[global_allocator]
static ALLOC: Profiled<System> = Profiled::new(System);

/// One agent per process: the tests take turns.
static ONE_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[inline(never)]
fn big_buffers() -> u64 {
    let mut n = 0;
    for i in 0..256 {
        let v = vec![i as u8; 1 << 20];
        n += black_box(&v).len() as u64;
    }
    n
}

#[inline(never)]
fn small_strings() -> u64 {
    let mut n = 0;
    for i in 0..4_000_000u64 {
        // Sized up front: one allocation of 48 bytes each.
        let mut s = String::with_capacity(48);
        std::fmt::Write::write_fmt(&mut s, format_args!("{i:0>48}")).unwrap();
        n += black_box(&s).capacity() as u64;
    }
    n
}

#[inline(never)]
fn retained_cache(cache: &mut Vec<Box<[u8]>>) -> u64 {
    for _ in 0..65_536 {
        cache.push(vec![7u8; 4096].into_boxed_slice());
    }
    65_536 * 4096
}

#[inline(never)]
fn grow_vec() -> u64 {
    let mut n = 0;
    for _ in 0..2 {
        let mut v: Vec<u8> = Vec::new();
        let mut cap = 0;
        for i in 0..(32u64 << 20) {
            v.push(i as u8);
            if v.capacity() != cap {
                cap = v.capacity();
                n += cap as u64;
            }
        }
        black_box(&v);
    }
    n
}

#[inline(never)]
fn freed_elsewhere() -> u64 {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let t = std::thread::spawn(move || rx.into_iter().map(|v| v.len()).sum::<usize>());
    for _ in 0..128 {
        tx.send(vec![3u8; 1 << 20]).unwrap();
    }
    drop(tx);
    t.join().unwrap() as u64
}

const WORKLOAD: [&str; 5] = [
    "big_buffers",
    "small_strings",
    "retained_cache",
    "grow_vec",
    "freed_elsewhere",
];

/// Per workload function, the value of sample type `ty` of the samples
/// whose stack holds it.
fn by_function(p: &kiln_profile::Profile, ty: &str) -> BTreeMap<&'static str, i64> {
    let i = p.sample_type_index(ty).expect(ty);
    let n = p.sample_types.len();
    let mut out = BTreeMap::new();
    for (k, s) in p.samples.iter().enumerate() {
        let names: Vec<&str> = p
            .stack(s.stack)
            .iter()
            .flat_map(|&l| p.locations[l.0 as usize].lines.iter())
            .map(|ln| p.str(p.functions[ln.function.0 as usize].name))
            .collect();
        if let Some(f) = WORKLOAD
            .iter()
            .find(|f| names.iter().any(|n| n.ends_with(&format!("::{f}"))))
        {
            *out.entry(*f).or_default() += p.values[k * n + i];
        }
    }
    out
}

#[test]
fn allocations_and_live_heap_match_what_the_workload_did() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("heap-truth")
        .cpu_hz(0)
        .window(Duration::from_secs(600))
        .write_to_dir(dir.path())
        .start()
        .unwrap();
    let st = agent.status();
    assert!(st.alloc.on, "{:?}", st.alloc);
    // Counters are the process's: the other test's count too.
    let dropped_before = st.alloc.dropped;
    let mut cache = Vec::new();
    let truth = [
        big_buffers(),
        small_strings(),
        retained_cache(&mut cache),
        grow_vec(),
        freed_elsewhere(),
    ];
    let st = agent.status();
    eprintln!("TRUTH status: {:?}", st.alloc);
    assert_eq!(st.alloc.dropped, dropped_before, "{:?}", st.alloc);
    agent.stop().unwrap();
    let profiles = common::profiles(dir.path(), "memory");
    assert_eq!(profiles.len(), 1, "one window");
    let p = &profiles[0];
    if std::env::var_os("HEAP_DEBUG").is_some() {
        let i = p.sample_type_index("alloc_space").unwrap();
        eprintln!("{}", kiln_profile::folded::encode(p, i, false));
    }
    let alloc = by_function(p, "alloc_space");
    let total: i64 = alloc.values().sum();
    let all: u64 = truth.iter().sum();
    let mut report = Vec::new();
    for (f, t) in WORKLOAD.iter().zip(truth) {
        let want = 100.0 * t as f64 / all as f64;
        let got = 100.0 * *alloc.get(f).unwrap_or(&0) as f64 / total as f64;
        report.push(format!(
            "{f}: {got:.1}% (truth {want:.1}%; {} of {t} bytes)",
            alloc.get(f).unwrap_or(&0)
        ));
        assert!((got - want).abs() <= 5.0, "{}", report.join(", "));
    }
    eprintln!("TRUTH alloc_space shares: {}", report.join(", "));
    // The estimate of the bytes allocated, not only their shares.
    let ratio = total as f64 / all as f64;
    assert!(
        (0.8..1.25).contains(&ratio),
        "estimated {total} of {all} bytes"
    );
    let inuse = by_function(p, "inuse_space");
    let held = *inuse.get("retained_cache").unwrap_or(&0) as f64;
    let want = truth[2] as f64;
    eprintln!("TRUTH inuse_space of retained_cache: {held:.0} (truth {want:.0})");
    assert!(
        (held - want).abs() <= 0.2 * want,
        "retained_cache holds {held:.0} bytes by the profile, {want:.0} in truth"
    );
    // What the workload freed is not in use.
    for f in ["big_buffers", "small_strings", "freed_elsewhere"] {
        let v = *inuse.get(f).unwrap_or(&0) as f64;
        assert!(v < 0.05 * want, "{f} still in use: {v}");
    }
    black_box(&cache);
}

#[test]
fn many_threads_churn_and_fork_run_clean() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let agent = kiln_agent::Agent::builder()
        .service("heap-stress")
        .cpu_hz(0)
        .alloc_sample_bytes(4096)
        .window(Duration::from_millis(200))
        .start()
        .unwrap();
    for round in 0..20 {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut keep = Vec::new();
                    for i in 0..20_000usize {
                        let v = vec![(i + t + round) as u8; 16 + (i * 7919) % 4096];
                        if i % 3 == 0 {
                            keep.push(v);
                        }
                        if keep.len() > 100 {
                            keep.swap_remove(i % 100);
                        }
                    }
                    keep.len()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
    // A forked child allocates; it must neither record nor deadlock.
    // SAFETY: the child only allocates, frees and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut v = Vec::new();
        for i in 0..10_000usize {
            v.push(vec![i as u8; 1000]);
        }
        black_box(&v);
        // SAFETY: ends the child without running the parent's atexit.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let st = agent.status();
    assert!(st.alloc.sampled > 1000, "{:?}", st.alloc);
    agent.stop().unwrap();
}

#[inline(never)]
fn hold_buffers(keep: &mut Vec<Vec<u8>>) {
    for _ in 0..64 {
        keep.push(vec![9u8; 1 << 20]);
    }
}

#[test]
fn heap_endpoint_and_alloc_sessions_answer_like_go() {
    let _one = ONE_AGENT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let agent = kiln_agent::Agent::builder()
        .service("heap-http")
        .cpu_hz(0)
        .window(Duration::from_secs(600))
        .write_to_dir(dir.path())
        .control("127.0.0.1:0")
        .start()
        .unwrap();
    let base = format!("http://{}", agent.status().control[0]);
    let c = reqwest::blocking::Client::new();
    let r = c
        .post(format!("{base}/debug/kiln/start?event=alloc&duration=60s"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let started: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
    assert_eq!(started["event"], "alloc");
    let id = started["id"].as_str().unwrap().to_string();
    let mut keep = Vec::new();
    hold_buffers(&mut keep);
    // Go's heap profile: the live blocks now, and what was allocated.
    let r = c.get(format!("{base}/debug/pprof/heap")).send().unwrap();
    assert_eq!(r.status(), 200);
    let raw = r.bytes().unwrap();
    let heap = kiln_profile::decode(&raw, &Default::default()).unwrap();
    // `go tool pprof` reads it, as it reads Go's.
    let file = dir.path().join("heap.pb.gz");
    std::fs::write(&file, &raw).unwrap();
    let text = common::go_top(&file, &["-sample_index=inuse_space"]);
    assert!(text.contains("Type: inuse_space"), "{text}");
    assert!(text.contains("hold_buffers"), "{text}");
    std::fs::remove_file(&file).unwrap();
    let names: Vec<String> = (0..heap.sample_types.len())
        .map(|i| heap.sample_type_names(i).0.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(heap.str(heap.default_sample_type), "inuse_space");
    let held = {
        let i = heap.sample_type_index("inuse_space").unwrap();
        let n = heap.sample_types.len();
        heap.samples
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                heap.stack(s.stack).iter().any(|&l| {
                    heap.locations[l.0 as usize].lines.iter().any(|ln| {
                        heap.str(heap.functions[ln.function.0 as usize].name)
                            .ends_with("::hold_buffers")
                    })
                })
            })
            .map(|(k, _)| heap.values[k * n + i])
            .sum::<i64>()
    };
    let want = 64i64 << 20;
    assert!(
        (held - want).abs() <= want / 5,
        "hold_buffers holds {held} by /debug/pprof/heap, {want} in truth"
    );
    // The session ships a memory profile of its own.
    let r = c
        .post(format!("{base}/debug/kiln/stop?id={id}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let written = common::profiles(dir.path(), "memory");
    assert_eq!(written.len(), 1, "the session's profile");
    let i = written[0].sample_type_index("alloc_space").unwrap();
    assert!(written[0].total(i) >= want / 2, "{}", written[0].total(i));
    black_box(&keep);
    agent.stop().unwrap();
}
