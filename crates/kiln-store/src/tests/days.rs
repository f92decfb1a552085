//! Day sums: a service's whole days read from one day-sum block each, in
//! place of the day's blocks, with the same answer as the blocks' hour
//! sums and rows; a late block is counted once, then summed in again; a
//! restart reads them back; a query whose selector is not a service's,
//! or whose range cuts a day, reads the blocks. Timelines the same: whole
//! days from the day sums' hours.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Now, canon, labels, profile};
use crate::block::Level;
use crate::store::{Block, now_ms};
use crate::{DAY_MS, Detail, HOUR_MS, Options, Store, selector};

fn blocks(store: &Store) -> Vec<Arc<Block>> {
    store.blocks.read().unwrap().values().cloned().collect()
}

/// A timeline's lines summed per hour (the step of a timeline over days).
fn in_hours(lines: BTreeMap<String, BTreeMap<i64, i64>>) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for (t, v) in lines.into_values().flatten() {
        *out.entry(t.div_euclid(HOUR_MS) * HOUR_MS).or_insert(0i64) += v;
    }
    out
}

#[test]
fn whole_days_read_one_sum_each_and_agree_with_the_hours() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let svc = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let each = selector::parse(r#"process_cpu{service_name="svc", instance=~".+"}"#).unwrap();
    // Three whole days at the start of a week three weeks ago: over, and
    // summed as a week too.
    let d0 = (now_ms() / (7 * DAY_MS) - 3) * 7 * DAY_MS;
    let ingest = |store: &Arc<Store>, day: i64, hours: std::ops::Range<i64>, seed: i64| {
        let store = store.clone();
        async move {
            for h in hours {
                for (n, inst) in ["a", "b"].iter().enumerate() {
                    let t = d0 + day * DAY_MS + h * HOUR_MS + 17 * 60_000;
                    let p = profile(seed + h + n as i64);
                    store.ingest("", labels("svc", inst), t, p).await.unwrap();
                    let p = profile(seed + 40);
                    store.ingest("", labels("other", inst), t, p).await.unwrap();
                }
                // One block every six hours, as cuts leave them.
                if h % 6 == 5 {
                    store.flush().await.unwrap();
                }
            }
            store.flush().await.unwrap();
        }
    };
    rt.block_on(async {
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        for day in 0..3 {
            ingest(&store, day, 0..24, day * 100).await;
        }
        // The answers of the blocks alone, before any day sum.
        let ranges = [
            (d0, d0 + 3 * DAY_MS),
            (d0 + 5 * HOUR_MS + 60_000, d0 + 2 * DAY_MS + 7 * HOUR_MS),
            (d0 + DAY_MS, d0 + 2 * DAY_MS),
        ];
        let answer = |s: &Arc<Store>, q: &selector::Query, (a, b): (i64, i64)| {
            canon(&s.select_now("", q, a, b, Detail::Stacks).unwrap().unwrap())
        };
        let want: Vec<_> = ranges.iter().map(|&r| answer(&store, &svc, r)).collect();
        let want_each: Vec<_> = ranges.iter().map(|&r| answer(&store, &each, r)).collect();
        assert_eq!(want, want_each, "service sums and series agree");
        let hourly = blocks(&store).len();
        assert_eq!(hourly, 12, "four blocks a day");
        // Timelines, in hours: from the blocks' minute totals here.
        let mut want_timeline = Vec::new();
        for &(a, b) in &ranges {
            let t = store.series_totals("", &svc, a, b, None).await.unwrap();
            want_timeline.push(in_hours(t));
        }
        assert_eq!(want_timeline[0].len(), 72, "every hour of three days");

        let made = store.sum_days().await.unwrap();
        assert_eq!(made.len(), 4, "one day sum per day, then the week's");
        assert_eq!(store.stats().days_summed, 4);
        assert!(store.sum_days().await.unwrap().is_empty(), "nothing new");
        for b in blocks(&store).iter().filter(|b| !b.meta.sums_of.is_empty()) {
            let n = if b.meta.sums_days == 7 { 3 } else { 4 };
            assert_eq!(b.meta.sums_of.len(), n, "{}", b.meta.id);
            assert_eq!(b.meta.series, 0, "a day sum holds no series");
            assert!(b.meta.level >= 1, "never merged by compaction");
        }
        drop(store);

        // After a restart nothing is in memory; whole days are read from
        // the day sums alone, the day's blocks not loaded at all.
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        // A timeline over whole days reads their day sums' hours alone.
        let t = store
            .series_totals("", &svc, ranges[0].0, ranges[0].1, None)
            .await
            .unwrap();
        assert_eq!(in_hours(t), want_timeline[0], "the timeline from day sums");
        let read_blocks = blocks(&store)
            .iter()
            .filter(|b| b.meta.sums_of.is_empty() && b.level() > Level::Index)
            .count();
        assert_eq!(read_blocks, 0, "no block of those days read for it");
        assert_eq!(answer(&store, &svc, ranges[0]), want[0]);
        let loaded = |store: &Arc<Store>| -> (usize, usize) {
            let all = blocks(store);
            let days = all
                .iter()
                .filter(|b| !b.meta.sums_of.is_empty() && b.level() > Level::Index)
                .count();
            let hours = all
                .iter()
                .filter(|b| b.meta.sums_of.is_empty() && b.level() > Level::Index)
                .count();
            (days, hours)
        };
        assert_eq!(loaded(&store), (1, 0), "the week's sum, no block read");
        // A range holding every row though it starts and ends inside hours
        // (one ending now holds every block cut so far): the same sum.
        let loose = (d0 - 20 * 60_000, d0 + 3 * DAY_MS - 30 * 60_000);
        assert_eq!(answer(&store, &svc, loose), want[0]);
        assert_eq!(loaded(&store), (1, 0), "the week's sum for a loose range");
        let t = store.series_totals("", &svc, loose.0, loose.1, None);
        assert_eq!(
            in_hours(t.await.unwrap()),
            want_timeline[0],
            "loose timeline"
        );
        // Edges inside days: their blocks' hours and rows, the whole day
        // between from its sum; the same answers as before.
        for (i, &r) in ranges.iter().enumerate() {
            assert_eq!(answer(&store, &svc, r), want[i], "range {i}");
            assert_eq!(answer(&store, &each, r), want_each[i], "range {i}, series");
            let t = store.series_totals("", &svc, r.0, r.1, None).await.unwrap();
            assert_eq!(in_hours(t), want_timeline[i], "range {i}, timeline");
            let t = store
                .series_totals("", &each, r.0, r.1, None)
                .await
                .unwrap();
            assert_eq!(in_hours(t), want_timeline[i], "range {i}, series timeline");
        }

        // A late block in day 1: read beside the day sum (which does not
        // name it), counted once; then summed in, the older sum deleted.
        ingest(&store, 1, 3..4, 7).await;
        let late: Vec<_> = ranges.iter().map(|&r| answer(&store, &each, r)).collect();
        assert_ne!(late[0], want[0], "the late rows count");
        for (i, &r) in ranges.iter().enumerate() {
            assert_eq!(
                answer(&store, &svc, r),
                late[i],
                "range {i} with a late block"
            );
        }
        let again = store.sum_days().await.unwrap();
        assert_eq!(
            again.len(),
            3,
            "day 1 summed again, then its week, then the quarter the late block shares"
        );
        let sums: Vec<_> = blocks(&store)
            .into_iter()
            .filter(|b| !b.meta.sums_of.is_empty())
            .collect();
        assert_eq!(
            sums.len(),
            5,
            "the older sums of day 1 and the week are gone; one quarter sum"
        );
        for (i, &r) in ranges.iter().enumerate() {
            assert_eq!(answer(&store, &svc, r), late[i], "range {i}, summed again");
        }
        drop(store);
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(answer(&store, &svc, ranges[0]), late[0], "after a restart");
        let other = selector::parse(r#"process_cpu{service_name="other"}"#).unwrap();
        let p = store
            .select_now("", &other, ranges[0].0, ranges[0].1, Detail::Stacks)
            .unwrap()
            .unwrap();
        // profile(s) holds s + (s + 1) samples; "other" took profile(seed + 40).
        let of = |seed: i64| 2 * (seed + 40) + 1;
        let want_other: i64 = (0..3).map(|d| 24 * 2 * of(d * 100)).sum::<i64>() + 2 * of(7);
        assert_eq!(p.total(0), want_other, "another service of the same days");
    });
}

#[test]
fn a_day_is_summed_as_it_goes_and_its_sum_grows_from_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let svc = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let each = selector::parse(r#"process_cpu{service_name="svc", instance=~".+"}"#).unwrap();
    let d = (now_ms() / DAY_MS - 8) * DAY_MS;
    let ingest = |store: &Arc<Store>, hours: std::ops::Range<i64>| {
        let store = store.clone();
        async move {
            for h in hours {
                for (n, inst) in ["a", "b"].iter().enumerate() {
                    let t = d + h * HOUR_MS + 23 * 60_000;
                    let p = profile(h * 3 + n as i64);
                    store.ingest("", labels("svc", inst), t, p).await.unwrap();
                }
                if h % 6 == 5 {
                    store.flush().await.unwrap();
                }
            }
        }
    };
    let answer = |s: &Arc<Store>, q: &selector::Query, a: i64, b: i64| {
        canon(&s.select_now("", q, a, b, Detail::Stacks).unwrap().unwrap())
    };
    let loaded = |store: &Arc<Store>| -> (usize, usize) {
        let all = blocks(store);
        let at = |sums: bool| {
            all.iter()
                .filter(|b| b.meta.sums_of.is_empty() != sums && b.level() > Level::Index)
                .count()
        };
        (at(true), at(false))
    };
    rt.block_on(async {
        // The first half of a day: two blocks, summed as a day so far.
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        ingest(&store, 0..12).await;
        assert_eq!(store.sum_days().await.unwrap().len(), 1);
        drop(store);
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        let half = answer(&store, &each, d, d + 12 * HOUR_MS);
        let (from_blocks, _) = loaded(&store);
        assert_eq!(from_blocks, 0, "a series selector reads no day sum");
        drop(store);
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(answer(&store, &svc, d, d + 12 * HOUR_MS), half);
        assert_eq!(loaded(&store), (1, 0), "the half day from its sum alone");
        // A range that ends inside the summed hours reads the blocks.
        let part = answer(&store, &each, d, d + 9 * HOUR_MS);
        assert_eq!(answer(&store, &svc, d, d + 9 * HOUR_MS), part);

        // The rest of the day: read beside the sum, then summed in from
        // the earlier sum and the new blocks alone.
        ingest(&store, 12..24).await;
        let whole = answer(&store, &each, d, d + DAY_MS);
        assert_ne!(whole, half);
        assert_eq!(
            answer(&store, &svc, d, d + DAY_MS),
            whole,
            "sum + new blocks"
        );
        let want_timeline = in_hours(
            store
                .series_totals("", &each, d, d + DAY_MS, None)
                .await
                .unwrap(),
        );
        drop(store);
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(store.sum_days().await.unwrap().len(), 1, "summed again");
        let (_, hourly) = loaded(&store);
        assert_eq!(hourly, 2, "only the two new blocks were read to sum it");
        let sums: Vec<_> = blocks(&store)
            .into_iter()
            .filter(|b| !b.meta.sums_of.is_empty())
            .collect();
        assert_eq!(sums.len(), 1, "the earlier sum is gone");
        assert_eq!(sums[0].meta.sums_of.len(), 4, "it names every block");
        drop(store);
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(
            answer(&store, &svc, d, d + DAY_MS),
            whole,
            "from the new sum"
        );
        assert_eq!(loaded(&store), (1, 0));
        let t = store
            .series_totals("", &svc, d, d + 2 * DAY_MS, None)
            .await
            .unwrap();
        assert_eq!(
            in_hours(t),
            want_timeline,
            "each hour's total kept through both sums"
        );
    });
}

#[test]
fn whole_weeks_read_one_sum_each_from_their_day_sums() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let svc = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let each = selector::parse(r#"process_cpu{service_name="svc", instance=~".+"}"#).unwrap();
    let week = 7 * DAY_MS;
    // Two whole weeks and a day, three weeks ago: over.
    let w0 = (now_ms() / week - 4) * week;
    let ingest = |store: &Arc<Store>, days: std::ops::Range<i64>, seed: i64| {
        let store = store.clone();
        async move {
            for day in days {
                for h in [1, 7, 13, 19] {
                    for (n, inst) in ["a", "b"].iter().enumerate() {
                        let t = w0 + day * DAY_MS + h * HOUR_MS;
                        let p = profile(seed + day * 5 + h + n as i64);
                        store.ingest("", labels("svc", inst), t, p).await.unwrap();
                    }
                    store.flush().await.unwrap();
                }
            }
        }
    };
    let answer = |s: &Arc<Store>, q: &selector::Query, a: i64, b: i64| {
        canon(&s.select_now("", q, a, b, Detail::Stacks).unwrap().unwrap())
    };
    let sums = |store: &Arc<Store>, days: u32| -> Vec<Arc<Block>> {
        blocks(store)
            .into_iter()
            .filter(|b| {
                !b.meta.sums_of.is_empty()
                    && b.meta.sums_hours == 0
                    && b.meta.sums_days.max(1) == days
            })
            .collect()
    };
    let loaded = |store: &Arc<Store>| -> (usize, usize, usize) {
        let all = blocks(store);
        let at = |days: u32| {
            all.iter()
                .filter(|b| {
                    // Quarter sums counted with neither.
                    let d = if b.meta.sums_of.is_empty() {
                        0
                    } else if b.meta.sums_hours > 0 {
                        u32::MAX
                    } else {
                        b.meta.sums_days.max(1)
                    };
                    d == days && b.level() > Level::Index
                })
                .count()
        };
        (at(7), at(1), at(0))
    };
    let ranges = [
        (w0, w0 + 15 * DAY_MS),
        (w0 + 3 * HOUR_MS, w0 + 14 * DAY_MS + 9 * HOUR_MS),
        (w0 + 7 * DAY_MS, w0 + 14 * DAY_MS),
    ];
    rt.block_on(async {
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        ingest(&store, 0..15, 0).await;
        let want: Vec<_> = ranges
            .iter()
            .map(|&(a, b)| answer(&store, &each, a, b))
            .collect();
        let made = store.sum_days().await.unwrap();
        assert_eq!(made.len(), 15 + 2, "a sum per day, then per week");
        assert_eq!(sums(&store, 7).len(), 2);
        for w in sums(&store, 7) {
            assert_eq!(w.meta.sums_of.len(), 7, "a week names its day sums");
        }
        assert!(store.sum_days().await.unwrap().is_empty(), "nothing new");
        drop(store);

        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(answer(&store, &svc, ranges[0].0, ranges[0].1), want[0]);
        assert_eq!(loaded(&store), (2, 1, 0), "two weeks and a day, no block");
        for (i, &(a, b)) in ranges.iter().enumerate() {
            assert_eq!(answer(&store, &svc, a, b), want[i], "range {i}");
        }
        // The first week's edge hours come from its days' blocks and sums.
        let (_, _, hourly) = loaded(&store);
        assert!(hourly > 0, "range 1 cut the first day");

        // A late block in the second week: read beside the week sum, then
        // its day and week summed again.
        ingest(&store, 9..10, 50).await;
        let late: Vec<_> = ranges
            .iter()
            .map(|&(a, b)| answer(&store, &each, a, b))
            .collect();
        assert_ne!(late[0], want[0]);
        for (i, &(a, b)) in ranges.iter().enumerate() {
            assert_eq!(answer(&store, &svc, a, b), late[i], "range {i}, late block");
        }
        let again = store.sum_days().await.unwrap();
        assert_eq!(
            again.len(),
            6,
            "the day, then its week, then the four quarters a late block shares"
        );
        assert_eq!((sums(&store, 7).len(), sums(&store, 1).len()), (2, 15));
        drop(store);
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        for (i, &(a, b)) in ranges.iter().enumerate() {
            assert_eq!(
                answer(&store, &svc, a, b),
                late[i],
                "range {i}, summed again"
            );
        }
        let t = store
            .series_totals("", &svc, ranges[0].0, ranges[0].1, None)
            .await
            .unwrap();
        let e = store
            .series_totals("", &each, ranges[0].0, ranges[0].1, None)
            .await
            .unwrap();
        assert_eq!(
            in_hours(t),
            in_hours(e),
            "the timeline from the week sums' hours"
        );
    });
}

#[test]
fn a_range_starting_inside_a_day_reads_its_quarter_sums() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let svc = selector::parse(r#"process_cpu{service_name="svc"}"#).unwrap();
    let each = selector::parse(r#"process_cpu{service_name="svc", instance=~".+"}"#).unwrap();
    // A day eight days ago, a block an hour (as compaction leaves them).
    let d = (now_ms() / DAY_MS - 8) * DAY_MS;
    let answer = |s: &Arc<Store>, q: &selector::Query, (a, b): (i64, i64)| {
        canon(&s.select_now("", q, a, b, Detail::Stacks).unwrap().unwrap())
    };
    // (sums, blocks) read.
    let loaded = |store: &Arc<Store>| -> (usize, usize) {
        let all = blocks(store);
        let at = |sums: bool| {
            all.iter()
                .filter(|b| b.meta.sums_of.is_empty() != sums && b.level() > Level::Index)
                .count()
        };
        (at(true), at(false))
    };
    let min = 60_000;
    // From 07:30 to past the day (two quarters whole, hours 8-11 and the
    // edge hour 7); from before the day to 13:40 (two quarters, hours
    // 12 and 13).
    let ranges = [
        (d + 7 * HOUR_MS + 30 * min, d + DAY_MS + 10 * min),
        (d - HOUR_MS, d + 13 * HOUR_MS + 40 * min),
    ];
    rt.block_on(async {
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        for h in 0..24 {
            for (n, inst) in ["a", "b"].iter().enumerate() {
                for m in [5, 23, 41] {
                    let t = d + h * HOUR_MS + m * min;
                    let p = profile(h * 7 + m + n as i64);
                    store.ingest("", labels("svc", inst), t, p).await.unwrap();
                }
            }
            store.flush().await.unwrap();
        }
        let want: Vec<_> = ranges.iter().map(|&r| answer(&store, &each, r)).collect();
        let mut want_timeline = Vec::new();
        for &(a, b) in &ranges {
            let t = store.series_totals("", &svc, a, b, None).await.unwrap();
            want_timeline.push(in_hours(t));
        }
        let made = store.sum_days().await.unwrap();
        assert_eq!(made.len(), 5, "the day's sum, then its four quarters'");
        let quarters: Vec<_> = blocks(&store)
            .into_iter()
            .filter(|b| b.meta.sums_hours == 6)
            .collect();
        assert_eq!(quarters.len(), 4);
        for q in &quarters {
            assert_eq!(q.meta.sums_of.len(), 6, "six hourly blocks");
            assert_eq!(q.meta.sum_span().1, 6 * HOUR_MS);
        }
        assert!(store.sum_days().await.unwrap().is_empty(), "nothing new");
        drop(store);

        for (i, &r) in ranges.iter().enumerate() {
            // Each range after a restart: nothing in memory but indexes.
            let store = Store::open(dir.path(), Options::default()).await.unwrap();
            assert_eq!(answer(&store, &svc, r), want[i], "range {i}");
            let hours = if i == 0 { 5 } else { 2 };
            assert_eq!(loaded(&store), (2, hours), "range {i}: two quarter sums");
            let t = store.series_totals("", &svc, r.0, r.1, None).await.unwrap();
            assert_eq!(in_hours(t), want_timeline[i], "range {i}, timeline");
        }
        // The whole day still reads its day sum alone.
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        let whole = (d - 10 * min, d + DAY_MS + 10 * min);
        assert_eq!(answer(&store, &svc, whole), answer(&store, &each, whole));
        let store = Store::open(dir.path(), Options::default()).await.unwrap();
        let _ = answer(&store, &svc, whole);
        assert_eq!(loaded(&store), (1, 0), "the day's sum alone");
    });
}
