//! The agent in the runtimes services use: a multi-threaded tokio runtime
//! and a rayon pool. Samples land on their worker threads, pooled by name,
//! with the same 60/30/10 split.

use serde_json::json;

use crate::{child_report, hot_a, hot_b, hot_c, merged, run_child};

fn round() -> u64 {
    hot_a().wrapping_add(hot_b()).wrapping_add(hot_c())
}

/// Child: CPU-bound tasks on a two-worker tokio runtime, then a rayon
/// parallel loop, each for about two seconds.
pub fn child_runtimes() {
    let agent = kiln_agent::Agent::from_env().unwrap().start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    rt.block_on(async move {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(async move {
                    let mut x = 0u64;
                    while std::time::Instant::now() < until {
                        x = x.wrapping_add(round());
                        tokio::task::yield_now().await;
                    }
                    x
                })
            })
            .collect();
        for t in tasks {
            std::hint::black_box(t.await.unwrap());
        }
    });
    drop(rt);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .thread_name(|i| format!("rayon-{i}"))
        .build()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    pool.install(|| {
        use rayon::prelude::*;
        while std::time::Instant::now() < until {
            let v = (0..4u64)
                .into_par_iter()
                .map(|_| round())
                .reduce(|| 0, u64::wrapping_add);
            std::hint::black_box(v);
        }
    });
    let status = agent.status();
    agent.stop().unwrap();
    println!("KILN_REPORT {}", json!({ "status": status }));
}

#[test]
fn tokio_and_rayon_workers_are_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_child(
        "runtimes",
        &[
            ("KILN_CPU_HZ", "250".into()),
            ("KILN_WINDOW", "1s".into()),
            ("KILN_DIR", dir.path().display().to_string()),
        ],
    );
    let r = child_report(&out);
    assert_eq!(r["status"]["dropped"], 0, "{r}");
    let p = merged(dir.path());
    let ty = p.sample_type_index("cpu").unwrap();
    let pools = kiln_profile::group_by_label(&p, ty, "thread_pool").unwrap();
    let share = |pool: &str| {
        pools.iter().find(|(n, _)| n == pool).map_or(0, |(_, v)| *v) as f64 / p.total(ty) as f64
    };
    // tokio names its workers `tokio-rt-worker` (the kernel keeps 15 bytes of a name).
    // Each phase runs two seconds of wall time; under a loaded machine the
    // CPU each pool gets varies, so ask only that both are clearly there.
    assert!(share("tokio-rt-worker") > 0.1, "{pools:?}");
    assert!(share("rayon-*") > 0.1, "{pools:?}");
    crate::engines::assert_split("tokio+rayon", crate::engines::shares(dir.path()).0);
}
