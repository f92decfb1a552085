//! The block cache and a lazy start: blocks over more than the cache
//! answer exactly what they hold while the memory they keep stays within
//! it; a store opened lazily takes profiles at once and its queries wait
//! for (or say they lack) the blocks it has not listed yet.

use std::sync::Arc;
use std::time::Duration;

use super::{Now, canon, labels, on_own_thread, profile};
use crate::block::Level;
use crate::store::Block;
use crate::{BUCKET_MS, Detail, Error, HOUR_MS, Options, Store, selector};

/// Six hours of two instances, a block per hour, in `dir`; returns the
/// store and what the head answered before each cut, per instance and
/// for the service.
fn six_hours(dir: &std::path::Path, opts: Options) -> (Arc<Store>, super::Canon, super::Canon) {
    let store = on_own_thread(Store::open(dir, opts)).unwrap();
    let by_inst = selector::parse(r#"process_cpu{service_name="svc", instance="a"}"#).unwrap();
    let svc = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let (mut want_inst, mut want_svc) = (super::Canon::new(), super::Canon::new());
    for hour in 0..6i64 {
        on_own_thread(async {
            for minute in [0i64, 17, 59] {
                for (i, inst) in ["a", "b"].iter().enumerate() {
                    let t = hour * HOUR_MS + minute * BUCKET_MS + 7;
                    let seed = hour * 100 + minute + i as i64;
                    store
                        .ingest("", labels("svc", inst), t, profile(seed))
                        .await
                        .unwrap();
                }
            }
        });
        let (from, until) = (hour * HOUR_MS, (hour + 1) * HOUR_MS);
        let add = |into: &mut super::Canon, q: &selector::Query| {
            let p = store
                .select_now("", q, from, until, Detail::Labels)
                .unwrap();
            for (k, v) in canon(&p.unwrap()) {
                let e = into.entry(k).or_insert_with(|| vec![0; v.len()]);
                for (o, x) in e.iter_mut().zip(&v) {
                    *o += x;
                }
            }
        };
        add(&mut want_inst, &by_inst);
        add(&mut want_svc, &svc);
        on_own_thread(store.flush()).unwrap();
    }
    (store, want_inst, want_svc)
}

#[test]
fn blocks_beyond_the_cache_answer_whole_and_memory_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    // Smaller than two of these blocks.
    let cap = 3_000;
    let opts = Options {
        cache_bytes: cap,
        ..Options::default()
    };
    let (store, want_inst, want_svc) = six_hours(dir.path(), opts.clone());
    let blocks: Vec<Arc<Block>> = store.blocks.read().unwrap().values().cloned().collect();
    assert_eq!(blocks.len(), 6);
    let one = blocks
        .iter()
        .map(|b| b.bytes.load(std::sync::atomic::Ordering::Relaxed))
        .max()
        .unwrap();
    assert!(
        one * 2 > cap as u64,
        "a block ({one} B) is over half the cache"
    );
    assert!(store.stats().cache_bytes <= cap as u64, "after the cuts");
    assert!(store.stats().cache_drops >= 4, "{:?}", store.stats());

    let by_inst = selector::parse(r#"process_cpu{service_name="svc", instance="a"}"#).unwrap();
    let svc = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let all = |store: &Arc<Store>, q: &selector::Query| {
        canon(
            &store
                .select_now("", q, 0, 6 * HOUR_MS, Detail::Labels)
                .unwrap()
                .unwrap(),
        )
    };
    for round in 0..2 {
        assert_eq!(all(&store, &by_inst), want_inst, "round {round}");
        assert!(
            store.stats().cache_bytes <= cap as u64,
            "{} held",
            store.stats().cache_bytes
        );
        assert_eq!(all(&store, &svc), want_svc, "round {round}");
        assert!(store.stats().cache_bytes <= cap as u64);
    }
    let st = store.stats();
    assert!(st.cache_loads >= 6, "{st:?}");
    assert!(st.cache_drops >= 6, "{st:?}");

    // Restarted: nothing but indexes in memory; label lists answer from
    // them; a query of the service over whole hours reads hour sums only.
    drop(store);
    let store = on_own_thread(Store::open(dir.path(), opts)).unwrap();
    let blocks: Vec<Arc<Block>> = store.blocks.read().unwrap().values().cloned().collect();
    assert!(blocks.iter().all(|b| b.level() == Level::Index));
    assert_eq!(store.stats().cache_bytes, 0);
    assert_eq!(store.label_values("", "instance", None), ["a", "b"]);
    assert_eq!(
        store.profile_types(""),
        [
            "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
            "process_cpu:samples:count:cpu:nanoseconds"
        ]
    );
    let other = selector::parse(r#"process_cpu{service_name="nothing-here"}"#).unwrap();
    assert!(
        store
            .select_now("", &other, 0, 6 * HOUR_MS, Detail::Stacks)
            .unwrap()
            .is_none()
    );
    assert_eq!(store.stats().cache_loads, 0, "no block holds that service");
    // A timeline reads the blocks' minute totals, not their rows.
    let lines = on_own_thread(store.series_totals("", &svc, 0, 6 * HOUR_MS, None)).unwrap();
    let total: i64 = lines[""].values().sum();
    let cpu: i64 = want_svc.values().map(|v| v[1]).sum();
    assert_eq!(total, cpu, "cpu, the default type");
    assert_eq!(lines[""].len(), 6 * 3, "three minutes an hour");
    let no_rows = || blocks.iter().all(|b| b.level() < Level::Full);
    assert!(no_rows(), "the timeline read rows");
    assert_eq!(all(&store, &svc), want_svc);
    assert!(no_rows(), "the service's whole hours read rows");
    // A range past every row at both ends, on no hour (as one ending now
    // is): every block lies within it, and its hour sums answer whole.
    let loose = store
        .select_now(
            "",
            &svc,
            -17 * BUCKET_MS - 3,
            6 * HOUR_MS - 30_000,
            Detail::Labels,
        )
        .unwrap()
        .unwrap();
    assert_eq!(canon(&loose), want_svc);
    assert!(no_rows(), "a range holding every block read rows");
    assert_eq!(all(&store, &by_inst), want_inst);
    // What each block is counted for is what it holds after the reads
    // (a series' whole hours, summed by the first read of its rows,
    // included).
    for b in blocks.iter().filter(|b| b.level() > Level::Index) {
        let held = b.part.read().unwrap().bytes() as u64;
        let counted = b.bytes.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(counted, held, "block {}", b.meta.id);
    }
    // One instance of two: only the row groups of its series were read.
    let held: Vec<(usize, usize)> = blocks
        .iter()
        .map(|b| {
            let g = b.groups.lock().unwrap();
            (g.iter().filter(|&&x| x).count(), g.len())
        })
        .collect();
    assert!(
        held.iter().any(|&(loaded, all)| loaded > 0 && loaded < all),
        "row groups loaded per block: {held:?}"
    );
    assert!(no_rows(), "blocks were read whole");
    assert!(store.stats().cache_bytes <= cap as u64);
}

#[test]
fn a_range_that_cuts_a_block_reads_its_edge_minutes_for_the_query_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, want_svc) = six_hours(dir.path(), Options::default());
    drop(store);
    let store = on_own_thread(Store::open(dir.path(), Options::default())).unwrap();
    let blocks: Vec<Arc<Block>> = store.blocks.read().unwrap().values().cloned().collect();
    let svc = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let each = selector::parse(r#"process_cpu{service_name="svc", instance=~".+"}"#).unwrap();
    let answer = |q: &selector::Query, from: i64, until: i64| {
        canon(
            &store
                .select_now("", q, from, until, Detail::Labels)
                .unwrap()
                .unwrap(),
        )
    };
    let rows_held = || {
        blocks
            .iter()
            .map(|b| b.groups.lock().unwrap().iter().filter(|&&g| g).count())
            .sum::<usize>()
    };
    // From minute 30 of hour 0 to minute 30 of hour 5 (hour 0's minute
    // 59, hours 1-4 whole, hour 5's minutes 0 and 17); edges inside one
    // hour; a range inside one minute.
    let ranges = [
        (30 * BUCKET_MS, 5 * HOUR_MS + 30 * BUCKET_MS),
        (10 * BUCKET_MS, 40 * BUCKET_MS),
        (HOUR_MS + 17 * BUCKET_MS, HOUR_MS + 17 * BUCKET_MS + 1),
    ];
    let got: Vec<_> = ranges.iter().map(|&(a, b)| answer(&svc, a, b)).collect();
    assert_ne!(got[0], want_svc, "the edges' other minutes left out");
    assert_eq!(rows_held(), 0, "the edge minutes were kept by their blocks");
    assert!(blocks.iter().all(|b| b.level() < Level::Full));
    // Each series' rows, read whole into the blocks: the same answers;
    // then the service reads the rows the blocks hold: the same again.
    for (i, &(a, b)) in ranges.iter().enumerate() {
        assert_eq!(answer(&each, a, b), got[i], "range {i}, by series");
    }
    assert!(rows_held() > 0);
    for (i, &(a, b)) in ranges.iter().enumerate() {
        assert_eq!(answer(&svc, a, b), got[i], "range {i}, from held rows");
    }
}

#[test]
fn a_lazy_store_takes_profiles_at_once_and_its_queries_wait_for_the_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, want_inst, _) = six_hours(dir.path(), Options::default());
    drop(store);
    let opts = Options {
        load_wait: Duration::from_millis(50),
        ..Options::default()
    };
    let store = Store::open_lazy(dir.path(), opts).unwrap();
    assert!(!store.stats().loaded);
    on_own_thread(store.ingest("", labels("svc", "a"), 7 * HOUR_MS, profile(1))).unwrap();
    let q = selector::parse(r#"process_cpu{service_name="svc", instance="a"}"#).unwrap();
    match store.select_now("", &q, 0, 6 * HOUR_MS, Detail::Labels) {
        Err(Error::Unavailable { reason, .. }) => assert!(reason.contains("list of blocks")),
        other => panic!("a partial answer: {:?}", other.map(|p| p.is_some())),
    }
    // A query waiting while the blocks are listed gets them all.
    let (answer, loaded) = on_own_thread(async {
        let waiting = {
            let (store, q) = (store.clone(), q.clone());
            tokio::spawn(async move {
                let select = store.select("", &q, 0, 6 * HOUR_MS, Detail::Labels);
                tokio::time::timeout(Duration::from_secs(30), select).await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let loaded = store.load_blocks().await;
        (waiting.await.unwrap(), loaded)
    });
    loaded.unwrap();
    // load_wait is 50 ms here: the waiting query either saw the blocks or
    // said it could not; it never answers without them.
    match answer.unwrap() {
        Ok(p) => assert_eq!(canon(&p.unwrap()), want_inst),
        Err(Error::Unavailable { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    let p = store
        .select_now("", &q, 0, 6 * HOUR_MS, Detail::Labels)
        .unwrap();
    assert_eq!(canon(&p.unwrap()), want_inst);
    assert!(store.stats().loaded);
}

/// `/metrics` reads the store's counters while the catalog adds blocks
/// (the listing at start): a counter read that took one lock twice would
/// wait forever behind the writer queued between its two reads.
#[test]
fn counters_never_wait_behind_a_writer() {
    let (_dir, store, _rt) = super::fresh();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drop(crate::store::write(&store.blocks));
                drop(crate::store::write(&store.head));
                drop(crate::store::write(&store.frozen));
            }
        })
    };
    let (done, finished) = std::sync::mpsc::channel();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..200_000 {
                std::hint::black_box(store.stats());
            }
            let _ = done.send(());
        })
    };
    let answered = finished.recv_timeout(Duration::from_secs(60));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(answered.is_ok(), "stats() deadlocked behind a writer");
    reader.join().unwrap();
    writer.join().unwrap();
}
