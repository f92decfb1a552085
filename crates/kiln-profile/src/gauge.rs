//! Gauges: sample types that say what is held at an instant
//! (`inuse_objects`, `inuse_space`: the live heap at a window's end) rather
//! than what happened during a window (CPU, allocations, lock waits).
//!
//! Counters add up over time; gauges do not — ten windows of a 1 GiB heap
//! are a 1 GiB heap, not 10 GiB. So a store keeps a gauge as its integral
//! over time: each window's values times the window's length in seconds
//! ("byte-seconds"), which add up exactly across windows, minutes, hours,
//! days and instances like any counter. A query over a range divides by the
//! time its data covers ([`to_mean`]): the result is the mean held over the
//! range, summed over the instances — for a steady heap, what it holds; and
//! one step of a timeline ([`step_mean`]) is that step's mean.
//! Pyroscope's heap views average over a range the same way.

use crate::Profile;

/// The length a window without a duration stands for: Pyroscope's and
/// Kiln's default upload interval.
pub const UNTIMED_WINDOW_MS: i64 = 10_000;

/// Is sample type `ty` (its type name, such as `inuse_space`) a gauge?
pub fn is_gauge(ty: &str) -> bool {
    ty.starts_with("inuse_")
}

/// The columns of `p` that are gauges.
fn gauge_columns(p: &Profile) -> Vec<usize> {
    (0..p.sample_types.len())
        .filter(|&i| is_gauge(p.sample_type_names(i).0))
        .collect()
}

/// `p` with each gauge value multiplied by its window's length in seconds
/// (the duration, or [`UNTIMED_WINDOW_MS`] without one), rounded; `None`
/// when `p` has no gauge (store it as it is).
pub fn integrate(p: &Profile) -> Option<Profile> {
    let cols = gauge_columns(p);
    if cols.is_empty() {
        return None;
    }
    let ms = if p.duration_nanos > 0 {
        (p.duration_nanos / 1_000_000).max(1)
    } else {
        UNTIMED_WINDOW_MS
    };
    let mut out = p.clone();
    if out.duration_nanos <= 0 && out.time_nanos > 0 {
        // The span a merge reports then matches the weight given here.
        out.duration_nanos = UNTIMED_WINDOW_MS * 1_000_000;
    }
    scale_columns(&mut out, &cols, ms as i128, 1000);
    Some(out)
}

/// Turns the integrals of a merged profile (as [`integrate`] stored them)
/// back into means over the time its data covers: its own span
/// (`time_nanos` to `time_nanos + duration_nanos`), or `[from_ns,
/// until_ns)` when it carries none, and no longer than `covered_ns` when
/// the caller knows how long data came (the minutes that hold any: a
/// range with an hour's gap between two bursts means what the bursts
/// held, not that spread over the gap).
pub fn to_mean(p: &mut Profile, from_ns: i64, until_ns: i64, covered_ns: Option<i64>) {
    let cols = gauge_columns(p);
    if cols.is_empty() {
        return;
    }
    let mut span_ns = if p.time_nanos > 0 && p.duration_nanos > 0 {
        p.duration_nanos
    } else {
        until_ns.saturating_sub(from_ns)
    };
    if let Some(c) = covered_ns.filter(|&c| c > 0) {
        span_ns = span_ns.min(c);
    }
    // Below a millisecond, the window's length is all that is known.
    let span_ms = (span_ns / 1_000_000).max(1);
    scale_columns(p, &cols, 1000, span_ms as i128);
}

/// A timeline step's mean of a gauge from the step's integral (its total
/// in value-seconds) and the milliseconds data covered in it.
pub fn step_mean(integral: i64, covered_ms: i64) -> i64 {
    div_round(integral as i128 * 1000, covered_ms.max(1) as i128)
}

fn scale_columns(p: &mut Profile, cols: &[usize], num: i128, den: i128) {
    let n = p.sample_types.len();
    for row in p.values.chunks_mut(n.max(1)) {
        for &c in cols {
            if let Some(v) = row.get_mut(c) {
                *v = div_round(*v as i128 * num, den);
            }
        }
    }
}

/// `a / b` rounded to nearest, saturated to `i64`.
fn div_round(a: i128, b: i128) -> i64 {
    let q = (a + a.signum() * b / 2) / b;
    q.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap(held: i64, allocated: i64, duration_ms: i64) -> Profile {
        let mut p =
            Profile::with_sample_types(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        p.time_nanos = 1_000_000_000;
        p.duration_nanos = duration_ms * 1_000_000;
        let f = p.add_named_location("cache");
        p.push_sample(&[f], &[], &[allocated, held]);
        p
    }

    #[test]
    fn ten_windows_of_a_steady_heap_are_that_heap() {
        let mut m = crate::Merger::new();
        for i in 0..10 {
            let mut w = integrate(&heap(1 << 30, 100, 10_000)).unwrap();
            w.time_nanos += i * 10_000_000_000;
            m.add(&w).unwrap();
        }
        let mut p = m.finish();
        assert_eq!(p.total(1), 100 * (1 << 30), "integral of 100 s of 1 GiB");
        to_mean(&mut p, 0, 0, None);
        assert_eq!(p.total(1), 1 << 30, "held: the heap, not ten of it");
        assert_eq!(p.total(0), 1000, "allocated: a counter, summed");
    }

    #[test]
    fn a_gap_between_bursts_does_not_dilute_the_mean() {
        let mut m = crate::Merger::new();
        for t in [0, 3_600] {
            let mut w = integrate(&heap(1000, 0, 60_000)).unwrap();
            w.time_nanos = (t + 1) * 1_000_000_000;
            m.add(&w).unwrap();
        }
        let merged = m.finish();
        let mut spread = merged.clone();
        to_mean(&mut spread, 0, 0, None);
        assert!(spread.total(1) < 100, "over the span: {}", spread.total(1));
        let mut p = merged;
        to_mean(&mut p, 0, 0, Some(120_000_000_000));
        assert_eq!(p.total(1), 1000, "over the two minutes data came");
    }

    #[test]
    fn windows_weigh_by_length_and_untimed_ones_by_the_default() {
        let long = integrate(&heap(600, 0, 30_000)).unwrap();
        assert_eq!(long.total(1), 600 * 30);
        let mut untimed = heap(7, 0, 0);
        untimed.duration_nanos = 0;
        assert_eq!(integrate(&untimed).unwrap().total(1), 70);
        let mut cpu = Profile::with_sample_types(&[("cpu", "nanoseconds")]);
        cpu.duration_nanos = 10_000_000_000;
        assert!(integrate(&cpu).is_none(), "no gauge: stored as it is");
    }

    #[test]
    fn a_minute_mean_and_saturation() {
        assert_eq!(step_mean(60 * 512, 60_000), 512);
        assert_eq!(step_mean(45, 60_000), 1, "0.75 rounds to 1");
        assert_eq!(div_round(i64::MAX as i128 * 4, 1), i64::MAX);
        assert_eq!(div_round(-5, 2), -3);
    }
}
