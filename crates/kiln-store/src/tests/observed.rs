//! When each thread was seen: a thread of an instance that started late
//! counts from that instance's first profile, whether the query reads the
//! service's rollup or its series, from the head or from blocks.

use kiln_profile::folded::FoldedOptions;
use kiln_profile::{DecodeOptions, Profile};

use super::{fresh, labels, on_own_thread};
use crate::{BUCKET_MS, HOUR_MS, Observed, selector};

const S: i64 = 1_000_000_000;

/// Folded text with thread names first, in CPU nanoseconds, over
/// `[start_ms, start_ms + 10 s)` (no time at all when `start_ms` is
/// `None`).
fn threads(text: &str, start_ms: Option<i64>) -> Profile {
    let mut folded = FoldedOptions::default();
    folded.thread_prefix = true;
    folded.sample_type = "cpu".into();
    folded.unit = "nanoseconds".into();
    let mut opts = DecodeOptions::default();
    opts.folded = folded;
    let mut p = kiln_profile::decode(text.as_bytes(), &opts).unwrap();
    if let Some(ms) = start_ms {
        p.time_nanos = ms * 1_000_000;
        p.duration_nanos = 10 * S;
    }
    p
}

#[test]
fn a_thread_is_seen_from_its_instance_s_first_profile() {
    let (_dir, store, rt) = fresh();
    // Ten minutes into an hour: instance a all along, with a busy worker
    // and an idle thread; instance b only for the last two and a half
    // minutes (from the middle of one: the service's minute began
    // before), with its evictor; instance c once, in a profile that says
    // no time.
    let t0 = 5 * HOUR_MS + 10 * BUCKET_MS;
    rt.block_on(async {
        for k in 0..60 {
            let t = t0 + k * 10_000;
            let p = threads(&format!("worker-1;work {}\nidle;park 0\n", S / 2), Some(t));
            store.ingest("", labels("shop", "a"), t, p).await.unwrap();
            if k >= 45 {
                let p = threads(&format!("evictor;spin {}\n", 98 * S / 10), Some(t));
                store.ingest("", labels("shop", "b"), t, p).await.unwrap();
            }
        }
        let p = threads("loner;x 5\n", None);
        store
            .ingest("", labels("shop", "c"), t0 + 3 * BUCKET_MS + 1, p)
            .await
            .unwrap();
    });
    let ty = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    let rolled = selector::parse(&format!(r#"{ty}{{service_name="shop"}}"#)).unwrap();
    let series =
        selector::parse(&format!(r#"{ty}{{service_name="shop", instance=~".+"}}"#)).unwrap();
    let only_b = selector::parse(&format!(r#"{ty}{{service_name="shop", instance="b"}}"#)).unwrap();
    let evictor = selector::parse(r#"{thread_name="evictor"}"#)
        .unwrap()
        .matchers;
    let look = |q: &selector::Query,
                from: i64,
                until: i64,
                by: &str,
                keep: &[selector::Matcher]|
     -> Observed {
        on_own_thread(store.observed("", q, from, until, by, keep)).unwrap()
    };
    let check = |when: &str| {
        for (q, from, until) in [
            (&rolled, t0, t0 + 10 * BUCKET_MS),
            (&series, t0, t0 + 10 * BUCKET_MS),
            // Whole hours around it, summed or not.
            (&rolled, 4 * HOUR_MS, 7 * HOUR_MS),
            (&series, 4 * HOUR_MS, 7 * HOUR_MS),
        ] {
            let o = look(q, from, until, "thread_name", &[]);
            let at = format!("{when}, {q} over {from}..{until}");
            assert_eq!(o.covered_ns("evictor"), 150 * S, "{at}");
            assert_eq!(o.covered_ns("worker-1"), 600 * S, "{at}");
            assert_eq!(o.covered_ns("idle"), 0, "no CPU, not seen: {at}");
            // No time on the profile: its minute.
            assert_eq!(o.covered_ns("loner"), 60 * S, "{at}");
            let pools = look(q, from, until, "thread_pool", &[]);
            assert_eq!(pools.covered_ns("worker-*"), 600 * S, "{at}");
        }
        let o = look(&only_b, t0, t0 + 10 * BUCKET_MS, "thread_name", &[]);
        assert_eq!(o.groups().collect::<Vec<_>>(), ["evictor"], "{when}");
        let o = look(&rolled, t0, t0 + 10 * BUCKET_MS, "thread_name", &evictor);
        assert_eq!(o.groups().collect::<Vec<_>>(), ["evictor"], "{when}");
        // The last minute alone: the evictor ran all of it.
        let o = look(
            &rolled,
            t0 + 9 * BUCKET_MS,
            t0 + 10 * BUCKET_MS,
            "thread_name",
            &[],
        );
        assert_eq!(o.covered_ns("evictor"), 60 * S, "{when}");
    };
    check("head");
    // A merge sums the whole hours of the series it reads first.
    on_own_thread(store.select("", &series, 4 * HOUR_MS, 7 * HOUR_MS, crate::Detail::Labels))
        .unwrap();
    check("head, hours summed");
    on_own_thread(store.flush()).unwrap();
    check("blocks");
}
