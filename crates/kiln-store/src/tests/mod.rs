//! The store end to end: head and blocks answer alike, restart, cuts that
//! did not finish, compaction and retention, two servers on one bucket,
//! rollups, records; the block cache and a lazy start in `cache`.

mod cache;
mod days;
mod disk_cache;
mod observed;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kiln_profile::{Merger, Profile};
use object_store::ObjectStore;

use crate::block::Level;
use crate::record::{decode_record, encode_record};
use crate::store::{Block, now_ms};
use crate::{BUCKET_MS, Detail, HOUR_MS, NAME_LABEL, Options, Store, selector};

/// The store's async reads, answered from any context (a test's sync
/// code or its runtime) on a thread of their own.
pub(crate) trait Now {
    fn select_now(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
    ) -> Result<Option<Profile>, crate::Error>;
    fn select_head_now(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
        known: &std::collections::HashSet<String>,
    ) -> Result<Option<Profile>, crate::Error>;
}

pub(crate) fn on_own_thread<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f)
        })
        .join()
        .unwrap()
    })
}

impl Now for Arc<Store> {
    fn select_now(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
    ) -> Result<Option<Profile>, crate::Error> {
        on_own_thread(self.select(tenant, q, from_ms, until_ms, detail))
    }

    fn select_head_now(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
        known: &std::collections::HashSet<String>,
    ) -> Result<Option<Profile>, crate::Error> {
        on_own_thread(self.select_head(tenant, q, from_ms, until_ms, detail, known))
    }
}

/// A store in a temporary directory (kept alive by the first element)
/// and a runtime to ingest with.
fn fresh() -> (tempfile::TempDir, Arc<Store>, tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Hours are summable as soon as they are over (the upkeep's quiet
    // wait is for live ingest).
    let opts = Options {
        quiet_before_sum: Duration::ZERO,
        ..Options::default()
    };
    let store = rt.block_on(Store::open(dir.path(), opts)).unwrap();
    (dir, store, rt)
}

#[test]
fn service_rollup_answers_like_the_series_it_merges() {
    let (_dir, store, rt) = fresh();
    let l = |svc: &str, inst: &str| {
        vec![
            (NAME_LABEL.to_string(), "process_cpu".to_string()),
            ("service_name".to_string(), svc.to_string()),
            ("instance".to_string(), inst.to_string()),
        ]
    };
    rt.block_on(async {
        for (i, inst) in ["a", "b", "c"].iter().enumerate() {
            for minute in 0..3i64 {
                let text = format!("main;work {}\nmain;io {}\n", 10 + i, minute + 1);
                let p = kiln_profile::decode(text.as_bytes(), &Default::default()).unwrap();
                store
                    .ingest("", l("svc", inst), minute * BUCKET_MS + 5, p)
                    .await
                    .unwrap();
            }
        }
        let p = kiln_profile::decode(b"other 99\n", &Default::default()).unwrap();
        store.ingest("", l("other", "a"), 5, p).await.unwrap();
    });
    let rolled = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let per_series = selector::parse(r#"process_cpu{service_name="svc", instance=~".*"}"#).unwrap();
    let head = store.head.read().unwrap();
    assert!(head[""].uses_rollup(&rolled));
    assert!(!head[""].uses_rollup(&per_series));
    drop(head);
    for (from, until) in [(0, 3 * BUCKET_MS), (BUCKET_MS, 2 * BUCKET_MS)] {
        let a = store
            .select_now("", &rolled, from, until, Detail::Labels)
            .unwrap()
            .unwrap();
        let b = store
            .select_now("", &per_series, from, until, Detail::Labels)
            .unwrap()
            .unwrap();
        let top = |p: &Profile| kiln_profile::top(p, 0).unwrap().rows;
        assert_eq!(top(&a), top(&b), "{from}..{until}");
    }
    let all = store
        .select_now("", &rolled, 0, 3 * BUCKET_MS, Detail::Labels)
        .unwrap()
        .unwrap();
    assert_eq!(all.total(0), 3 * (10 + 11 + 12) + 3 * (1 + 2 + 3));
}

#[test]
fn whole_hours_read_merged_and_late_data_invalidates_them() {
    let (_dir, store, rt) = fresh();
    let labels = vec![
        (NAME_LABEL.to_string(), "process_cpu".to_string()),
        ("service_name".to_string(), "svc".to_string()),
    ];
    let put = |minute: i64, n: i64| {
        let text = format!("main;m{} {n}\n", minute % 7);
        let p = kiln_profile::decode(text.as_bytes(), &Default::default()).unwrap();
        rt.block_on(store.ingest("", labels.clone(), minute * BUCKET_MS + 1, p))
            .unwrap();
    };
    // Three hours, one profile a minute, value = minute + 1.
    for minute in 0..180 {
        put(minute, minute + 1);
    }
    let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let sum = |a: i64, b: i64| (a..b).map(|m| m + 1).sum::<i64>();
    let total = |from: i64, until: i64| {
        store
            .select_now("", &q, from * BUCKET_MS, until * BUCKET_MS, Detail::Labels)
            .unwrap()
            .map_or(0, |p| p.total(0))
    };
    let ranges = [(0, 180), (30, 150), (60, 120), (59, 61), (0, 60)];
    for (from, until) in ranges {
        assert_eq!(total(from, until), sum(from, until), "{from}..{until}");
    }
    // Queries do not sum the head's hours (that would hold ingest behind
    // them); the upkeep does, and the same reads then use the sums.
    assert!(store.head.read().unwrap()[""].rollup_hours(&q).is_empty());
    while store.sum_an_hour() {}
    let head = store.head.read().unwrap();
    assert_eq!(
        head[""].rollup_hours(&q).len(),
        3,
        "every whole hour summed"
    );
    drop(head);
    for (from, until) in ranges {
        assert_eq!(
            total(from, until),
            sum(from, until),
            "{from}..{until} from sums"
        );
    }
    // A late profile for minute 70 drops hour 1's sum; nothing is lost.
    put(70, 1000);
    assert!(
        !store.head.read().unwrap()[""]
            .rollup_hours(&q)
            .contains(&HOUR_MS)
    );
    assert_eq!(total(0, 180), sum(0, 180) + 1000);
    assert_eq!(total(60, 120), sum(60, 120) + 1000);
}

#[test]
fn hours_that_are_over_are_summed_ahead_of_queries() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = || Options {
        quiet_before_sum: Duration::ZERO,
        ..Options::default()
    };
    let store = rt.block_on(Store::open(dir.path(), opts())).unwrap();
    let labels = vec![
        (NAME_LABEL.to_string(), "process_cpu".to_string()),
        ("service_name".to_string(), "svc".to_string()),
    ];
    let put = |minute: i64, n: i64| {
        let text = format!("main;m{} {n}\n", minute % 5);
        let p = kiln_profile::decode(text.as_bytes(), &Default::default()).unwrap();
        rt.block_on(store.ingest("", labels.clone(), minute * BUCKET_MS + 1, p))
            .unwrap();
    };
    for minute in 0..120 {
        put(minute, minute + 1);
    }
    let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let hours = || store.head.read().unwrap()[""].rollup_hours(&q);
    assert!(hours().is_empty(), "no query asked yet");
    let mut summed = 0;
    while store.sum_an_hour() {
        summed += 1;
        assert!(summed <= 2, "each hour once");
    }
    assert_eq!(hours(), [0, HOUR_MS], "both hours summed, unasked");
    assert_eq!(store.stats().hours_summed, 2);
    let total = || {
        store
            .select_now("", &q, 0, 2 * HOUR_MS, Detail::Stacks)
            .unwrap()
            .map_or(0, |p| p.total(0))
    };
    assert_eq!(total(), (1..=120).sum::<i64>());
    // A sum taken before a late profile arrived is not kept.
    let job = store.head.read().unwrap()[""].unsummed_hour(i64::MAX, Duration::ZERO);
    assert!(job.is_none());
    put(10, 1000);
    assert_eq!(hours(), [HOUR_MS], "the late profile dropped hour 0's sum");
    let job = store.head.read().unwrap()[""]
        .unsummed_hour(i64::MAX, Duration::ZERO)
        .unwrap();
    let sum = job.sum();
    put(11, 100);
    let kept = store
        .head
        .write()
        .unwrap()
        .get_mut("")
        .unwrap()
        .put_hour(job, sum);
    assert!(!kept);
    assert_eq!(hours(), [HOUR_MS], "rows arrived meanwhile: not kept");
    assert!(store.sum_an_hour());
    assert_eq!(hours(), [0, HOUR_MS]);
    assert_eq!(total(), (1..=120).sum::<i64>() + 1100);
    // Blocks carry the hour sums: after a restart nothing of the block is
    // in memory but its index; a query of whole hours loads the symbols
    // and the sums (no rows), and nothing is summed again.
    rt.block_on(store.flush()).unwrap();
    drop(store);
    let store = rt.block_on(Store::open(dir.path(), opts())).unwrap();
    let blocks: Vec<Arc<Block>> = store.blocks.read().unwrap().values().cloned().collect();
    assert_eq!(blocks.len(), 1);
    assert!(blocks[0].meta.files.contains_key(crate::block::ROLLUPS));
    assert_eq!(blocks[0].level(), Level::Index);
    let block_hours = || blocks[0].part.read().unwrap().rollup_hours(&q);
    assert!(block_hours().is_empty());
    let p = store
        .select_now("", &q, 0, 2 * HOUR_MS, Detail::Stacks)
        .unwrap();
    assert_eq!(p.unwrap().total(0), (1..=120).sum::<i64>() + 1100);
    assert_eq!(blocks[0].level(), Level::Hours);
    assert_eq!(blocks[0].part.read().unwrap().rows(), 0, "no rows read");
    assert_eq!(block_hours(), [0, HOUR_MS]);
    assert!(!store.sum_an_hour(), "nothing left to sum");
    assert_eq!(store.stats().hours_summed, 0);
    // Half an hour at each edge: the series' rows of those minutes are
    // read for the query alone (the block keeps none), and agree.
    let p = store
        .select_now("", &q, 30 * BUCKET_MS, 90 * BUCKET_MS, Detail::Stacks)
        .unwrap();
    assert_eq!(p.unwrap().total(0), (31..=90).sum::<i64>());
    assert_eq!(blocks[0].level(), Level::Hours);
    assert_eq!(blocks[0].part.read().unwrap().rows(), 0);
    assert_eq!(block_hours(), [0, HOUR_MS], "sums kept");
    // Edges that fall inside an hour, read from minutes and sums alike.
    for (a, b) in [(0, 61), (59, 120), (1, 119), (61, 62)] {
        let p = store
            .select_now("", &q, a * BUCKET_MS, b * BUCKET_MS, Detail::Stacks)
            .unwrap();
        let want: i64 = (a..b).map(|m| m + 1).sum::<i64>()
            + if (a..b).contains(&10) { 1000 } else { 0 }
            + if (a..b).contains(&11) { 100 } else { 0 };
        assert_eq!(p.map_or(0, |p| p.total(0)), want, "{a}..{b}");
    }
    let p = store
        .select_now("", &q, 0, 2 * HOUR_MS, Detail::Stacks)
        .unwrap();
    assert_eq!(p.unwrap().total(0), (1..=120).sum::<i64>() + 1100);
}

/// A profile as a comparable map: (frames root first, sample labels)
/// → values; independent of table order.
pub(crate) type Canon = BTreeMap<(Vec<String>, Vec<(String, String)>), Vec<i64>>;

pub(crate) fn canon(p: &Profile) -> Canon {
    let mut out = BTreeMap::new();
    let n = p.sample_types.len();
    for (i, s) in p.samples.iter().enumerate() {
        let mut frames = Vec::new();
        for &l in p.stack(s.stack).iter().rev() {
            p.frame_names(l, |f| frames.push(format!("{f:?}")));
        }
        let labels = p
            .labels(s.labels)
            .iter()
            .map(|l| (p.str(l.key).to_string(), p.str(l.str).to_string()))
            .collect();
        let v: &mut Vec<i64> = out.entry((frames, labels)).or_insert_with(|| vec![0; n]);
        for (o, x) in v.iter_mut().zip(&p.values[i * n..(i + 1) * n]) {
            *o += x;
        }
    }
    out
}

/// `c` with sample labels dropped: what [`Detail::Stacks`] answers.
fn unlabelled(c: &Canon) -> Canon {
    let mut out = Canon::new();
    for ((frames, _), v) in c {
        let e = out
            .entry((frames.clone(), Vec::new()))
            .or_insert_with(|| vec![0; v.len()]);
        for (o, x) in e.iter_mut().zip(v) {
            *o += x;
        }
    }
    out
}

/// Asserts that `q` answers per stack what it answers per label set,
/// labels dropped.
fn stacks_agree(store: &Arc<Store>, q: &selector::Query) {
    let full = store
        .select_now("", q, 0, 3_600_000, Detail::Labels)
        .unwrap()
        .unwrap();
    let stacks = store
        .select_now("", q, 0, 3_600_000, Detail::Stacks)
        .unwrap()
        .unwrap();
    assert_eq!(canon(&stacks), unlabelled(&canon(&full)), "{q}");
    assert!(
        canon(&full).len() > canon(&stacks).len(),
        "labels were there"
    );
}

pub(crate) fn labels(svc: &str, inst: &str) -> Vec<(String, String)> {
    vec![
        (NAME_LABEL.to_string(), "process_cpu".to_string()),
        ("service_name".to_string(), svc.to_string()),
        ("instance".to_string(), inst.to_string()),
    ]
}

/// A two-type profile with thread labels, different per `seed`.
pub(crate) fn profile(seed: i64) -> Profile {
    let mut p = Profile::with_sample_types(&[("samples", "count"), ("cpu", "nanoseconds")]);
    p.period_type = Some(p.value_type("cpu", "nanoseconds"));
    p.period = 10_000_000;
    let mut locs = Vec::new();
    for name in ["main", "serve", "parse", "hash"] {
        let name = p.strings.intern(name);
        let f = p.add_function(kiln_profile::Function {
            name,
            ..Default::default()
        });
        locs.push(p.add_location(kiln_profile::Location {
            address: 0x1000 + locs.len() as u64,
            lines: vec![kiln_profile::Line {
                function: f,
                line: 7,
                column: 0,
            }],
            ..Default::default()
        }));
    }
    let key = p.strings.intern("thread_name");
    for (i, t) in ["worker-1", "worker-2"].iter().enumerate() {
        let t = p.strings.intern(t);
        let label = [kiln_profile::Label {
            key,
            str: t,
            ..Default::default()
        }];
        let leaf = 2 + (seed as usize + i) % 2;
        let stack = [locs[leaf], locs[1], locs[0]];
        p.push_sample(
            &stack,
            &label,
            &[seed + i as i64, (seed + i as i64) * 10_000_000],
        );
    }
    p
}

#[test]
fn blocks_answer_like_the_head_and_restart_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let by_inst = selector::parse(r#"process_cpu{instance="b"}"#).unwrap();
    let (before, tail) = rt.block_on(async {
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        for i in 0..40i64 {
            let inst = ["a", "b"][i as usize % 2];
            store
                .ingest("", labels("svc", inst), i * 20_000, profile(i))
                .await
                .unwrap();
        }
        store
            .ingest("t2", labels("svc", "a"), 5, profile(99))
            .await
            .unwrap();
        let before = store
            .select_now("", &q, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        let before_b = store
            .select_now("", &by_inst, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        stacks_agree(&store, &q);
        let ids = store.flush().await.unwrap();
        assert_eq!(ids.len(), 2, "one block per tenant");
        let st = store.stats();
        assert_eq!((st.blocks, st.head_rows, st.flushes), (2, 0, 1));
        assert_eq!(st.wal_bytes, 0, "the log the blocks hold is gone");
        let after = store
            .select_now("", &q, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        assert_eq!(canon(&after), canon(&before));
        let after_b = store
            .select_now("", &by_inst, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        assert_eq!(canon(&after_b), canon(&before_b));
        assert_eq!(store.label_values("", "instance", None), ["a", "b"]);
        assert_eq!(
            store.profile_types(""),
            [
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                "process_cpu:samples:count:cpu:nanoseconds"
            ]
        );
        // Tenants stay apart in blocks too.
        let t2 = store
            .select_now("t2", &q, 0, 3_600_000, Detail::Labels)
            .unwrap()
            .unwrap();
        assert_eq!(t2.total(0), 99 + 100);
        // The tail, after the cut, lives in the log only.
        store
            .ingest("", labels("svc", "c"), 1_000, profile(7))
            .await
            .unwrap();
        (before, profile(7))
    });
    let store = rt
        .block_on(Store::open(dir.path(), Options::default()))
        .unwrap();
    let st = store.stats();
    assert_eq!(
        (st.blocks, st.profiles),
        (2, 1),
        "blocks loaded, one record replayed"
    );
    let now = store
        .select_now("", &q, 0, 3_600_000, Detail::Labels)
        .unwrap()
        .unwrap();
    let mut want = canon(&before);
    for (k, v) in canon(&tail) {
        let e = want.entry(k).or_insert_with(|| vec![0; v.len()]);
        for (o, x) in e.iter_mut().zip(v) {
            *o += x;
        }
    }
    assert_eq!(canon(&now), want);
    // A typed query reads one column from blocks and head alike.
    let cpu = selector::parse(r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="svc"}"#)
        .unwrap();
    let p = store
        .select_now("", &cpu, 0, 3_600_000, Detail::Labels)
        .unwrap()
        .unwrap();
    assert_eq!(p.sample_types.len(), 1);
    assert_eq!(p.total(0), now.total(1));
    // Per stack, from blocks and head together, whole and typed.
    stacks_agree(&store, &q);
    stacks_agree(&store, &cpu);
}

#[test]
fn a_cut_that_did_not_finish_is_replayed_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let backup = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        for i in 0..10 {
            store
                .ingest("", labels("svc", "a"), i * 1000, profile(i))
                .await
                .unwrap();
        }
        for e in std::fs::read_dir(dir.path().join("wal")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), backup.path().join(e.file_name())).unwrap();
        }
        store.flush().await.unwrap();
    });
    // As if the server died after writing the block and before noting
    // the cut: the log is all there and the note says nothing.
    for e in std::fs::read_dir(backup.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join("wal").join(e.file_name())).unwrap();
    }
    std::fs::remove_file(dir.path().join("flushed")).unwrap();
    let store = rt
        .block_on(Store::open(dir.path(), Options::default()))
        .unwrap();
    assert_eq!(store.stats().blocks, 0, "the unfinished block is removed");
    let p = store
        .select_now("", &q, 0, 60_000, Detail::Labels)
        .unwrap()
        .unwrap();
    assert_eq!(p.total(0), (0..10).map(|i| 2 * i + 1).sum::<i64>());
}

#[test]
fn compaction_merges_an_hour_and_retention_deletes_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let old = (now_ms() / HOUR_MS - 3) * HOUR_MS;
    let mut opts = Options::default();
    opts.retention
        .insert(String::new(), Duration::from_secs(2 * 3600));
    opts.retention
        .insert("keep".into(), Duration::from_secs(10 * 3600));
    rt.block_on(async {
        let store = Store::open(dir.path(), opts.clone()).await.unwrap();
        for round in 0..3 {
            for i in 0..5 {
                let t = old + (round * 5 + i) * 60_000;
                store
                    .ingest("", labels("svc", "a"), t, profile(i))
                    .await
                    .unwrap();
                store
                    .ingest("keep", labels("svc", "a"), t, profile(i))
                    .await
                    .unwrap();
            }
            store.flush().await.unwrap();
        }
        let total = |s: &Arc<Store>| {
            s.select_now("", &q, old, old + HOUR_MS, Detail::Labels)
                .unwrap()
                .unwrap()
                .total(0)
        };
        let before = total(&store);
        assert_eq!(store.stats().blocks, 6);
        let made = store.compact().await.unwrap();
        assert_eq!(made.len(), 2, "one per tenant for the hour");
        assert_eq!(store.stats().blocks, 2);
        assert_eq!(total(&store), before);
        drop(store);
        // Sources are gone from storage; a restart sees the compacted
        // blocks alone and the same totals.
        let store = Store::open(dir.path(), opts.clone()).await.unwrap();
        assert_eq!(store.stats().blocks, 2);
        assert_eq!(total(&store), before);
        assert_eq!(
            store.expire().await.unwrap(),
            1,
            "the default tenant's hour is past 2 h"
        );
        assert!(
            store
                .select_now("", &q, old, old + HOUR_MS, Detail::Labels)
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .select_now("keep", &q, old, old + HOUR_MS, Detail::Labels)
                .unwrap()
                .is_some()
        );
    });
    let left: Vec<_> = walk(&dir.path().join("blocks"));
    assert!(left.iter().all(|p| p.contains("/t-keep/")), "{left:?}");
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn two_servers_on_one_bucket_answer_alike() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let q = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    rt.block_on(async {
        let opts = |id: &str| Options {
            storage: Some(bucket.clone()),
            server_id: Some(id.into()),
            refresh_every: Duration::ZERO,
            ..Options::default()
        };
        let a = Store::open(da.path(), opts("a")).await.unwrap();
        let b = Store::open(db.path(), opts("b")).await.unwrap();
        // What a server answers: its own view plus each peer's head.
        let answer = |me: &Arc<Store>, peer: &Arc<Store>| {
            let mut m = Merger::new();
            for p in [
                me.select_now("", &q, 0, HOUR_MS, Detail::Labels).unwrap(),
                peer.select_head_now("", &q, 0, HOUR_MS, Detail::Labels, &me.peer_blocks())
                    .unwrap(),
            ]
            .into_iter()
            .flatten()
            {
                m.add(&p).unwrap();
            }
            canon(&m.finish())
        };
        for i in 0..6 {
            a.ingest("", labels("svc", "a"), i * 1000, profile(i))
                .await
                .unwrap();
            b.ingest("", labels("svc", "b"), i * 1000, profile(i + 10))
                .await
                .unwrap();
        }
        let heads = answer(&a, &b);
        assert_eq!(answer(&b, &a), heads);
        a.flush().await.unwrap();
        // b has not looked at the bucket yet: a still answers for its
        // new block.
        assert_eq!(answer(&b, &a), heads);
        assert_eq!(answer(&a, &b), heads);
        b.refresh().await.unwrap();
        assert_eq!(b.stats().blocks, 1);
        assert_eq!(
            answer(&b, &a),
            heads,
            "counted once after b found the block"
        );
        b.flush().await.unwrap();
        a.refresh().await.unwrap();
        assert_eq!(answer(&a, &b), heads);
        assert_eq!(answer(&b, &a), heads);
    });
}

#[test]
fn records_round_trip_and_refuse_garbage() {
    let labels = vec![("a".to_string(), "1".to_string())];
    let r = encode_record("t", &labels, -5, b"xyz");
    let (t, l, time, p) = decode_record(&r).unwrap();
    assert_eq!((t.as_str(), l, time, p), ("t", labels, -5, &b"xyz"[..]));
    for cut in 0..r.len() {
        assert!(decode_record(&r[..cut]).is_none());
    }
}
