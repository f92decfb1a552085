//! Golden files from real tools (see `tests/data/README.md`): the known hot
//! functions come out with their known shares.

use kiln_profile::{group_by_label, top};

use crate::{check_expected, load, self_share, total_share};

/// burnA/burnB/burnC run 6:3:1 units of work per loop.
fn assert_60_30_10(t: &kiln_profile::Top, a: &str, b: &str, c: &str) {
    let (sa, sb, sc) = (total_share(t, a), total_share(t, b), total_share(t, c));
    let sum = sa + sb + sc;
    let shares = [sa / sum, sb / sum, sc / sum];
    for (got, want) in shares.iter().zip([0.6, 0.3, 0.1]) {
        assert!(
            (got - want).abs() < 0.05,
            "shares {shares:?}, want 60/30/10"
        );
    }
}

#[test]
fn go_cpu_pprof_has_known_hot_functions() {
    let p = load("pprof/go-cpu.pb.gz");
    let ty = p.default_type_index().unwrap();
    assert_eq!(p.sample_type_names(ty), ("cpu", "nanoseconds"));
    assert_eq!(p.period, 10_000_000);
    let t = top(&p, ty).unwrap();
    assert_eq!(t.rows[0].name, "main.spin");
    assert!(self_share(&t, "main.spin") > 0.85);
    assert!(t.rows[0].pareto);
    assert!((total_share(&t, "main.main") - 1.0).abs() < 1e-9);
    assert_60_30_10(&t, "main.burnA", "main.burnB", "main.burnC");
    // Go profiles carry mappings with build ids and line numbers.
    assert!(!p.mappings.is_empty());
    assert!(
        p.locations
            .iter()
            .any(|l| l.lines.iter().any(|line| line.line > 0))
    );
    check_expected(
        "expected/go-cpu.top.json",
        &(serde_json::to_string_pretty(&t).unwrap() + "\n"),
    );
}

#[test]
fn jdk_jfr_has_known_hot_methods_threads_allocations_and_locks() {
    let p = load("jfr/hot-jdk17.jfr");
    let types: Vec<_> = (0..p.sample_types.len())
        .map(|i| p.sample_type_names(i))
        .collect();
    assert_eq!(
        types,
        [
            ("cpu", "nanoseconds"),
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("contentions", "count"),
            ("delay", "nanoseconds")
        ]
    );
    let cpu = top(&p, 0).unwrap();
    assert_eq!(cpu.rows[0].name, "Hot.spin");
    assert!(self_share(&cpu, "Hot.spin") > 0.9);
    assert_60_30_10(&cpu, "Hot.burnA", "Hot.burnB", "Hot.burnC");

    let threads: Vec<String> = group_by_label(&p, 0, "thread_name")
        .unwrap()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    for t in ["main", "worker-1", "locker-1", "locker-2"] {
        assert!(
            threads.iter().any(|x| x == t),
            "thread {t} missing from {threads:?}"
        );
    }
    let pools = group_by_label(&p, 0, "thread_pool").unwrap();
    assert!(
        pools.iter().any(|(pool, _)| pool == "locker-*"),
        "{pools:?}"
    );

    let alloc = top(&p, 2).unwrap();
    assert_eq!(alloc.rows[0].name, "Hot.allocate");
    assert!(self_share(&alloc, "Hot.allocate") > 0.9);

    let delay = top(&p, 4).unwrap();
    assert_eq!(delay.rows[0].name, "Hot.contend");
    assert!(delay.total > 0);
    check_expected(
        "expected/hot-jdk17.top.json",
        &(serde_json::to_string_pretty(&cpu).unwrap() + "\n"),
    );
}

#[test]
fn perf_folded_has_known_hot_functions() {
    let p = load("folded/perf-hotc.folded");
    let t = top(&p, 0).unwrap();
    assert!(self_share(&t, "burn_a") > 0.5);
    assert_60_30_10(&t, "burn_a", "burn_b", "burn_c");
    let threads = group_by_label(&p, 0, "thread_name").unwrap();
    assert_eq!(threads[0].0, "hotc");
    check_expected(
        "expected/perf-hotc.top.json",
        &(serde_json::to_string_pretty(&t).unwrap() + "\n"),
    );
}

#[test]
fn golden_pprof_round_trips_losslessly() {
    let p = load("pprof/go-cpu.pb.gz");
    let again = kiln_profile::pprof::decode(&kiln_profile::pprof::encode(&p)).unwrap();
    assert_eq!(p, again);
}

#[test]
fn fast_pprof_reader_matches_prost() {
    let bytes =
        kiln_profile::compress::gunzip(&crate::read("pprof/go-cpu.pb.gz"), 1 << 30).unwrap();
    assert_eq!(
        kiln_profile::pprof::decode(&bytes).unwrap(),
        kiln_profile::pprof::decode_with_prost(&bytes).unwrap()
    );
}
