//! Buckets: one series' rows per minute, grouped by profile kind, and
//! the sums of whole hours (rollups) kept beside them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Rows;
use crate::{BUCKET_MS, HOUR_MS};

/// The rows of one kind (one header) within a bucket.
#[derive(Clone, Debug)]
pub(crate) struct Group {
    /// Index into [`Part::headers`].
    pub header: u32,
    pub rows: Rows,
    /// Earliest profile start and latest end, ns (0 when unknown).
    pub start_ns: i64,
    pub end_ns: i64,
}

impl Group {
    pub(super) fn widen(&mut self, start_ns: i64, end_ns: i64) {
        if start_ns != 0 {
            self.start_ns = if self.start_ns == 0 {
                start_ns
            } else {
                self.start_ns.min(start_ns)
            };
            self.end_ns = self.end_ns.max(end_ns);
        }
    }
}

/// A series' (or a rollup's) rows by time: per minute as they come, and
/// per hour, summed from the minutes once a query reads the whole hour
/// (or, for rollups, in the background once the hour is over: see
/// [`Part::unsummed_hour`]); an hour's sum goes when a row arrives for one
/// of its minutes.
#[derive(Default)]
pub(crate) struct Buckets {
    pub minutes: BTreeMap<i64, Vec<Group>>,
    pub(crate) hours: BTreeMap<i64, Vec<Group>>,
    /// Per hour, per kind, each sample type's total: kept by a day sum
    /// (whose `hours` hold one sum per day) so a timeline over days reads
    /// 24 numbers a day, not the day's blocks.
    pub(crate) hour_totals: BTreeMap<i64, Vec<KindTotals>>,
    /// Per hour, how many times rows were added to it, and when last: a
    /// sum made off the lock is kept only if its hour saw no rows
    /// meanwhile, and is made only once the hour has been quiet a while.
    pub(super) edits: BTreeMap<i64, (u64, Instant)>,
    /// The newest minute rows arrived for: when rows arrive for a newer
    /// one, its rows are folded (minutes fill one after another, so a
    /// minute left behind is usually complete).
    pub(super) open: Option<i64>,
}

/// A kind (header index) and each of its sample types' total.
pub(crate) type KindTotals = (u32, Box<[i64]>);

/// The whole hours within `[lo, until)`: `[first, end)`, empty if none.
pub(crate) fn whole_hours(lo: i64, until: i64) -> (i64, i64) {
    let first = (lo + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let end = until.div_euclid(HOUR_MS) * HOUR_MS;
    (first, end.max(first))
}

/// Whether every row of a part or block holding profiles from `min_ms` to
/// `max_ms` lies in the minutes a read of `[lo, until)` takes (`lo` a
/// minute's first millisecond): then its hour sums answer the read whole,
/// whether or not its hours are whole in the range. A range ending now
/// holds every block cut so far this hour, and one starting before the
/// data holds its first block whole.
pub(crate) fn all_within(min_ms: i64, max_ms: i64, lo: i64, until: i64) -> bool {
    min_ms >= lo && max_ms.div_euclid(BUCKET_MS) * BUCKET_MS < until
}

/// `groups` summed per kind and packed.
pub(super) fn sum_groups<'a>(groups: impl Iterator<Item = &'a Group>) -> Vec<Group> {
    let mut sum: Vec<Group> = Vec::new();
    for g in groups {
        let s = group_of(&mut sum, g.header, g.rows.width);
        s.rows.extend(&g.rows);
        s.rows.maybe_fold();
        s.widen(g.start_ns, g.end_ns);
    }
    for g in &mut sum {
        g.rows.pack();
    }
    sum
}

/// One whole hour of a service rollup to sum away from the part's lock:
/// taken by [`Part::unsummed_hour`], summed by [`HourToSum::sum`], kept by
/// [`Part::put_hour`] unless rows arrived for the hour meanwhile.
pub(crate) struct HourToSum {
    pub(super) part: u64,
    pub(super) key: (String, String),
    pub(super) hour: i64,
    pub(super) edits: u64,
    pub(super) minutes: Vec<Group>,
}

impl HourToSum {
    pub fn sum(&self) -> Vec<Group> {
        sum_groups(self.minutes.iter())
    }
}

/// The group of `header` in `groups`, added if missing.
pub(super) fn group_of(groups: &mut Vec<Group>, header: u32, width: usize) -> &mut Group {
    let i = match groups.iter().position(|g| g.header == header) {
        Some(i) => i,
        None => {
            groups.push(Group {
                header,
                rows: Rows::new(width),
                start_ns: 0,
                end_ns: 0,
            });
            groups.len() - 1
        }
    };
    &mut groups[i]
}

impl Buckets {
    /// The group that takes rows of `header` for the minute of `time_ms`.
    pub(super) fn group(&mut self, time_ms: i64, header: u32, width: usize) -> &mut Group {
        let hour = time_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let now = Instant::now();
        let e = self.edits.entry(hour).or_insert((0, now));
        *e = (e.0 + 1, now);
        self.slot(time_ms, header, width)
    }

    /// As [`Buckets::group`], but not counted as an edit of its hour: for
    /// rows read back from a block, which takes none after (a block's rows
    /// come one at a time, and this is per row).
    pub(super) fn slot(&mut self, time_ms: i64, header: u32, width: usize) -> &mut Group {
        let minute = time_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        self.hours.remove(&(minute.div_euclid(HOUR_MS) * HOUR_MS));
        if self.open.is_none_or(|m| m < minute) {
            if let Some(left) = self.open.and_then(|m| self.minutes.get_mut(&m)) {
                for g in left {
                    g.rows.pack();
                }
            }
            self.open = Some(minute);
        }
        group_of(self.minutes.entry(minute).or_default(), header, width)
    }

    /// Readies `[lo, until)` for reading: folds its minutes and, with
    /// `sum_hours`, sums each whole hour not summed yet.
    pub(crate) fn prepare(&mut self, lo: i64, until: i64, sum_hours: bool) {
        for (_, groups) in self.minutes.range_mut(lo..until) {
            for g in groups {
                g.rows.fold();
            }
        }
        if !sum_hours {
            return;
        }
        let (first, end) = whole_hours(lo, until);
        for h in self.hours_held(first, end) {
            if !self.hours.contains_key(&h) {
                let sum = sum_groups(self.minutes.range(h..h + HOUR_MS).flat_map(|(_, v)| v));
                if !sum.is_empty() {
                    self.hours.insert(h, sum);
                }
            }
        }
    }

    /// The first hour over by `before` that holds minutes, is not summed,
    /// and took no rows for `quiet`.
    pub(super) fn unsummed_hour(&self, before: i64, quiet: Duration) -> Option<i64> {
        let first = *self.minutes.keys().next()?;
        let end = before.div_euclid(HOUR_MS) * HOUR_MS;
        self.hours_held(first.div_euclid(HOUR_MS) * HOUR_MS, end)
            .into_iter()
            .find(|h| {
                !self.hours.contains_key(h)
                    && self.edits.get(h).is_none_or(|e| e.1.elapsed() >= quiet)
            })
    }

    /// How many times rows were added to hour `h`.
    pub(super) fn edits_of(&self, h: i64) -> u64 {
        self.edits.get(&h).map_or(0, |e| e.0)
    }

    /// The hours within `[first, end)` that hold any minute, found by
    /// skipping from one to the next (a range of years costs what it
    /// holds, not one step per hour).
    pub(super) fn hours_held(&self, first: i64, end: i64) -> Vec<i64> {
        // Sums read back without their minutes (a block at `Hours`).
        let mut out: Vec<i64> = self.hours.range(first..end).map(|(&h, _)| h).collect();
        let mut at = first;
        while at < end {
            let Some((&m, _)) = self.minutes.range(at..end).next() else {
                break;
            };
            let h = m.div_euclid(HOUR_MS) * HOUR_MS;
            out.push(h);
            at = h + HOUR_MS;
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The groups that cover `[lo, until)`: summed hours where there are
    /// any, minutes elsewhere.
    pub(super) fn read<'a>(&'a self, lo: i64, until: i64, out: &mut Vec<&'a Group>) {
        let minutes = |a: i64, b: i64, out: &mut Vec<&'a Group>| {
            if a < b {
                out.extend(self.minutes.range(a..b).flat_map(|(_, v)| v.iter()));
            }
        };
        let (first, end) = whole_hours(lo, until);
        if first >= end {
            minutes(lo, until, out);
            return;
        }
        minutes(lo, first, out);
        for h in self.hours_held(first, end) {
            match self.hours.get(&h) {
                Some(v) => out.extend(v.iter()),
                None => minutes(h, h + HOUR_MS, out),
            }
        }
        minutes(end, until, out);
    }

    /// The finest groups that cover `[lo, until)`, each with its bucket's
    /// start and length (ms): every minute held, and the sums of whole
    /// hours that hold no minutes (read back without them).
    pub(crate) fn finest<'a>(&'a self, lo: i64, until: i64, out: &mut Vec<(i64, i64, &'a Group)>) {
        for (&m, groups) in self.minutes.range(lo..until.max(lo)) {
            out.extend(groups.iter().map(|g| (m, BUCKET_MS, g)));
        }
        let (first, end) = whole_hours(lo, until);
        for (&h, groups) in self.hours.range(first..end) {
            if self.minutes.range(h..h + HOUR_MS).next().is_none() {
                out.extend(groups.iter().map(|g| (h, HOUR_MS, g)));
            }
        }
    }

    /// The minute groups within `[a, b)`.
    pub(crate) fn minutes_in<'a>(&'a self, a: i64, b: i64, out: &mut Vec<&'a Group>) {
        if a < b {
            out.extend(self.minutes.range(a..b).flat_map(|(_, v)| v.iter()));
        }
    }

    pub fn bytes(&self) -> usize {
        let b = |m: &BTreeMap<i64, Vec<Group>>| -> usize {
            m.values()
                .flat_map(|v| v.iter())
                .map(|g| g.rows.bytes() + 48)
                .sum()
        };
        let totals: usize = self
            .hour_totals
            .values()
            .flatten()
            .map(|(_, v)| v.len() * 8 + 40)
            .sum();
        b(&self.minutes) + b(&self.hours) + totals
    }

    /// Adds `values` (one per sample type of kind `header`) to hour `h`'s
    /// totals.
    pub(crate) fn add_hour_totals(&mut self, h: i64, header: u32, values: &[i64]) {
        let line = self.hour_totals.entry(h).or_default();
        let at = match line.iter().position(|(k, _)| *k == header) {
            Some(i) => i,
            None => {
                line.push((header, vec![0; values.len()].into()));
                line.len() - 1
            }
        };
        for (t, v) in line[at].1.iter_mut().zip(values) {
            *t = t.saturating_add(*v);
        }
    }
}
