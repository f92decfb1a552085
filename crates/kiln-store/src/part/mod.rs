//! A part: one tenant's series over one symbol table. The head is a part
//! that takes profiles; a block, read back from object storage, is a part
//! that no longer changes. Profiles are kept as rows — (stack, label set,
//! values) over the part's shared table — per series and minute, so a
//! thousand profiles of one service share one copy of its functions and
//! stacks, and merging rows is summing numbers under one key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kiln_profile::{Interner, Profile};

use crate::{Error, HOUR_MS, NAME_LABEL};

/// Bytes glibc's malloc adds to each allocation (its header, and the
/// rounding up to 16): counted for the tables' many small ones.
const MALLOC_OVERHEAD: usize = 16;

/// Series id within a part.
pub(crate) type SeriesId = u32;

mod buckets;
mod days;
mod observe;
mod read;
mod rows;

pub(crate) use buckets::{Buckets, Group, HourToSum, all_within, whole_hours};
pub(crate) use observe::Look;
pub(crate) use rows::Rows;

/// Where a row read back from a block goes: its minute, its kind, and
/// its group's time span (ns).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    pub minute: i64,
    pub header: u32,
    pub span: (i64, i64),
}

pub(crate) struct Series {
    pub labels: Vec<(String, String)>,
    pub buckets: Buckets,
    /// Kinds (header indices) the series held when its rows were dropped
    /// or not read (a block at [`crate::block::Level::Index`]).
    pub kinds: Vec<u32>,
    /// Totals per minute and kind read back without the rows (a block at
    /// [`crate::block::Level::Hours`]), sorted by minute.
    pub totals: Vec<MinuteTotal>,
}

/// One series' total of each sample type over a minute of one kind.
pub(crate) struct MinuteTotal {
    pub minute: i64,
    pub header: u32,
    pub values: Box<[i64]>,
}

impl Series {
    /// The kinds (header indices) of the series' rows, sorted.
    pub fn kinds_held(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.kinds.clone();
        out.extend(self.buckets.minutes.values().flatten().map(|g| g.header));
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The symbol table: growing while the part takes profiles, fixed after
/// (shared then with the parts a query reads a block's edges into).
pub(crate) enum Dict {
    Live(Box<Interner>),
    Fixed(Arc<Profile>),
}

impl Dict {
    pub fn tables(&self) -> &Profile {
        match self {
            Dict::Live(i) => i.tables(),
            Dict::Fixed(p) => p,
        }
    }
}

/// One tenant's series, rows and symbols; see the module docs.
pub(crate) struct Part {
    pub dict: Dict,
    /// Profile headers (sample types, period) the rows refer to.
    pub headers: Vec<Profile>,
    pub series: Vec<Series>,
    by_labels: HashMap<Vec<(String, String)>, SeriesId>,
    /// Label name → value → series.
    pub index: BTreeMap<String, BTreeMap<String, BTreeSet<SeriesId>>>,
    /// (`__name__`, `service_name`) → every instance's rows summed.
    pub rollups: HashMap<(String, String), Buckets>,
    /// Whether the services' rollups hold minutes (the head, and blocks
    /// written before they carried hour sums); without, a service's
    /// minutes are read from its series.
    pub rollup_minutes: bool,
    /// Earliest and latest profile time (ms) held.
    pub min_ms: i64,
    pub max_ms: i64,
    /// Profiles and samples taken.
    pub profiles: u64,
    pub samples: u64,
    /// This part among all made in the process: a sum made off the lock
    /// goes back only to the part it was taken from (the head may have
    /// been cut and replaced meanwhile).
    id: u64,
}

impl Default for Part {
    fn default() -> Part {
        Part {
            dict: Dict::Live(Box::default()),
            headers: Vec::new(),
            series: Vec::new(),
            by_labels: HashMap::new(),
            index: BTreeMap::new(),
            rollups: HashMap::new(),
            rollup_minutes: true,
            min_ms: i64::MAX,
            max_ms: i64::MIN,
            profiles: 0,
            samples: 0,
            id: PART_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Where [`Part::id`]s come from.
static PART_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sample type names and period type of `p`: profiles with equal
/// signatures share a header.
fn same_kind(a: &Profile, b: &Profile) -> bool {
    fn period(p: &Profile) -> Option<(&str, &str)> {
        p.period_type.map(|v| (p.str(v.ty), p.str(v.unit)))
    }
    a.sample_types.len() == b.sample_types.len()
        && (0..a.sample_types.len()).all(|i| a.sample_type_names(i) == b.sample_type_names(i))
        && period(a) == period(b)
        && a.period == b.period
        && a.str(a.default_sample_type) == b.str(b.default_sample_type)
}

/// `rows` with their stacks and label sets re-interned by `remap`.
fn remapped(remap: &mut kiln_profile::Remapper<'_>, rows: &Rows) -> Result<Rows, Error> {
    let mut out = Rows::new(rows.width);
    let mut failed = None;
    rows.for_each(|st, l, v| match remap.row(st, l) {
        Ok((st, l)) => out.push(st, l, v),
        Err(e) => failed = Some(e),
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// `h` reduced to sample type `i`.
fn one_type(h: &Profile, i: usize) -> Profile {
    let mut one = h.clone();
    one.sample_types = vec![h.sample_types[i]];
    one.default_sample_type = h.sample_types[i].ty;
    one
}

impl Part {
    /// The header index for `p`'s kind, added if new.
    pub fn header_for(&mut self, p: &Profile) -> u32 {
        match self.headers.iter().position(|h| same_kind(h, p)) {
            Some(i) => i as u32,
            None => {
                let mut h = kiln_profile::header(p);
                h.time_nanos = 0;
                h.duration_nanos = 0;
                self.headers.push(h);
                (self.headers.len() - 1) as u32
            }
        }
    }

    /// The series of `labels` (sorted), added if new.
    pub fn series_for(&mut self, labels: &[(String, String)]) -> SeriesId {
        if let Some(&id) = self.by_labels.get(labels) {
            return id;
        }
        let id = self.series.len() as SeriesId;
        for (k, v) in labels {
            self.index
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(id);
        }
        self.series.push(Series {
            labels: labels.to_vec(),
            buckets: Buckets::default(),
            kinds: Vec::new(),
            totals: Vec::new(),
        });
        self.by_labels.insert(labels.to_vec(), id);
        id
    }

    pub fn rollup_key(labels: &[(String, String)]) -> Option<(String, String)> {
        let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Some((get(NAME_LABEL)?, get("service_name")?))
    }

    /// Takes one profile of the series `labels` (sorted) at `time_ms`.
    pub fn add(
        &mut self,
        labels: &[(String, String)],
        time_ms: i64,
        p: &Profile,
    ) -> Result<(), Error> {
        let Dict::Live(dict) = &mut self.dict else {
            return Err(Error::Block {
                block: String::new(),
                reason: "a block takes no profiles".into(),
            });
        };
        // Gauges (the live heap) are kept as their integral over time, so
        // they add up across windows like counters (`kiln_profile::gauge`).
        let integral = kiln_profile::gauge::integrate(p);
        let p = integral.as_ref().unwrap_or(p);
        let width = p.sample_types.len();
        let mut rows = Rows::new(width);
        dict.add(p, |s, l, v| rows.push(s, l, v))?;
        let header = self.header_for(p);
        let id = self.series_for(labels);
        let end = p.time_nanos.saturating_add(p.duration_nanos);
        if let Some(key) = Part::rollup_key(labels) {
            let g = self
                .rollups
                .entry(key)
                .or_default()
                .group(time_ms, header, width);
            g.rows.extend(&rows);
            g.rows.maybe_fold();
            g.widen(p.time_nanos, end);
        }
        let g = self.series[id as usize]
            .buckets
            .group(time_ms, header, width);
        g.rows.extend(&rows);
        g.rows.maybe_fold();
        g.widen(p.time_nanos, end);
        self.min_ms = self.min_ms.min(time_ms);
        self.max_ms = self.max_ms.max(time_ms);
        self.profiles += 1;
        self.samples += p.samples.len() as u64;
        Ok(())
    }

    /// Puts a run of rows read back from a block, all of series `series`
    /// (whose rollup key is `rollup`) and one minute, kind and time span:
    /// into the series and its service's rollup.
    pub fn put_rows(
        &mut self,
        series: SeriesId,
        rollup: Option<&(String, String)>,
        At {
            minute,
            header,
            span: (start, end),
        }: At,
        rows: &Rows,
    ) {
        if let Some(key) = rollup {
            let r = match self.rollups.get_mut(key) {
                Some(r) => r,
                None => self.rollups.entry(key.clone()).or_default(),
            };
            let g = r.slot(minute, header, rows.width);
            g.rows.extend(rows);
            g.rows.maybe_fold();
            g.widen(start, end);
        }
        let g = self.series[series as usize]
            .buckets
            .slot(minute, header, rows.width);
        g.rows.extend(rows);
        g.widen(start, end);
    }

    /// This part's header index for each of `other`'s headers, added
    /// where new.
    pub(crate) fn headers_of(&mut self, other: &Part) -> Vec<u32> {
        other
            .headers
            .iter()
            .map(|h| {
                match self.headers.iter().position(|x| same_kind(x, h)) {
                    Some(i) => i,
                    None => {
                        self.headers.push(h.clone());
                        self.headers.len() - 1
                    }
                }
                .try_into()
                .unwrap_or(u32::MAX)
            })
            .collect()
    }

    /// Adds another part's rows (re-interned into this part's table).
    pub fn absorb(&mut self, other: &Part) -> Result<(), Error> {
        let fixed = || Error::Block {
            block: String::new(),
            reason: "a block takes no rows".into(),
        };
        if !matches!(self.dict, Dict::Live(_)) {
            return Err(fixed());
        }
        let ids: Vec<SeriesId> = other
            .series
            .iter()
            .map(|s| self.series_for(&s.labels))
            .collect();
        let headers = self.headers_of(other);
        let Dict::Live(dict) = &mut self.dict else {
            return Err(fixed());
        };
        let mut remap = dict.remapper(other.dict.tables());
        for (s, &id) in other.series.iter().zip(&ids) {
            let key = Part::rollup_key(&s.labels);
            for (&minute, groups) in &s.buckets.minutes {
                for g in groups {
                    let rows = remapped(&mut remap, &g.rows)?;
                    let header = headers[g.header as usize];
                    if let Some(key) = &key {
                        let r = self.rollups.entry(key.clone()).or_default().group(
                            minute,
                            header,
                            g.rows.width,
                        );
                        r.rows.extend(&rows);
                        r.rows.maybe_fold();
                        r.widen(g.start_ns, g.end_ns);
                    }
                    let into = self.series[id as usize]
                        .buckets
                        .group(minute, header, g.rows.width);
                    into.rows.extend(&rows);
                    into.rows.maybe_fold();
                    into.widen(g.start_ns, g.end_ns);
                }
            }
        }
        self.min_ms = self.min_ms.min(other.min_ms);
        self.max_ms = self.max_ms.max(other.max_ms);
        self.profiles += other.profiles;
        self.samples += other.samples;
        Ok(())
    }

    /// Fixes the symbol table and folds every row: what a block holds.
    pub fn seal(&mut self) {
        if let Dict::Live(_) = self.dict {
            let Dict::Live(i) = std::mem::replace(&mut self.dict, Dict::Fixed(Arc::default()))
            else {
                unreachable!("checked above");
            };
            self.dict = Dict::Fixed(Arc::new(i.into_tables()));
        }
        for s in &mut self.series {
            for g in s.buckets.minutes.values_mut().flatten() {
                g.rows.pack();
            }
        }
        for r in self.rollups.values_mut() {
            for g in r.minutes.values_mut().flatten() {
                g.rows.pack();
            }
        }
    }

    /// Sums every hour of every rollup not summed yet: a block's
    /// `rollups.parquet` then holds every hour the block holds.
    pub fn sum_all_hours(&mut self) {
        for r in self.rollups.values_mut() {
            r.prepare(i64::MIN / 2, i64::MAX / 2, true);
        }
    }

    /// Puts an hour's sum read back from a block into the rollup `key`.
    pub fn put_hour_rows(&mut self, key: (String, String), at: At, mut rows: Rows) {
        rows.pack();
        let groups = self
            .rollups
            .entry(key)
            .or_default()
            .hours
            .entry(at.minute)
            .or_default();
        let g = buckets::group_of(groups, at.header, rows.width);
        if g.rows.len() == 0 {
            // Packed already: taken as they are, not folded again.
            g.rows = rows;
        } else {
            g.rows.extend(&rows);
            g.rows.pack();
        }
        g.widen(at.span.0, at.span.1);
    }

    /// A part a query reads a block's edge minutes into (the rows of the
    /// minutes its range holds outside its whole hours): this part's
    /// symbol table (shared), headers, series and index without rows,
    /// and of rollup `key` only the hour sums within `[first, end)`. What
    /// is put into it is read once and dropped with it, never held by the
    /// block.
    pub(crate) fn edge_copy(&self, key: &(String, String), first: i64, end: i64) -> Part {
        let dict = match &self.dict {
            Dict::Fixed(t) => Dict::Fixed(t.clone()),
            Dict::Live(i) => Dict::Fixed(Arc::new(i.tables().clone())),
        };
        let series = self
            .series
            .iter()
            .map(|s| Series {
                labels: s.labels.clone(),
                buckets: Buckets::default(),
                kinds: s.kinds_held(),
                totals: Vec::new(),
            })
            .collect();
        let mut sums = Buckets::default();
        if let Some(r) = self.rollups.get(key) {
            sums.hours = r
                .hours
                .range(first..end)
                .map(|(&h, g)| (h, g.clone()))
                .collect();
        }
        Part {
            dict,
            headers: self.headers.clone(),
            series,
            by_labels: self.by_labels.clone(),
            index: self.index.clone(),
            rollups: HashMap::from([(key.clone(), sums)]),
            rollup_minutes: false,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            ..Part::default()
        }
    }

    /// Drops the symbol table, rows and sums, keeping what plans a query:
    /// series, labels, the index, kinds and headers (a block back at
    /// [`crate::block::Level::Index`]).
    pub fn evict(&mut self) {
        for s in &mut self.series {
            s.kinds = s.kinds_held();
            s.buckets = Buckets::default();
            s.totals = Vec::new();
        }
        self.rollups.clear();
        self.dict = Dict::Fixed(Arc::default());
    }

    /// A rollup's whole hour that ended by `before_ms` and that no query
    /// summed yet, with a copy of its minutes (packed rows: a copy is a
    /// fraction of the sum's work), so it can be summed off the lock.
    pub fn unsummed_hour(&self, before_ms: i64, quiet: Duration) -> Option<HourToSum> {
        self.rollups.iter().find_map(|(key, b)| {
            let hour = b.unsummed_hour(before_ms, quiet)?;
            Some(HourToSum {
                part: self.id,
                key: key.clone(),
                hour,
                edits: b.edits_of(hour),
                minutes: b
                    .minutes
                    .range(hour..hour + HOUR_MS)
                    .flat_map(|(_, v)| v.iter().cloned())
                    .collect(),
            })
        })
    }

    /// Keeps the sum of `job`'s hour, unless rows arrived for the hour
    /// since it was taken (then a later call takes it again); says which.
    pub fn put_hour(&mut self, job: HourToSum, sum: Vec<Group>) -> bool {
        if job.part == self.id
            && let Some(b) = self.rollups.get_mut(&job.key)
            && b.edits_of(job.hour) == job.edits
        {
            b.hours.insert(job.hour, sum);
            return true;
        }
        false
    }

    /// Rows held in series buckets (not rollups).
    pub fn rows(&self) -> u64 {
        self.series
            .iter()
            .flat_map(|s| s.buckets.minutes.values().flatten())
            .map(|g| g.rows.len() as u64)
            .sum()
    }

    /// Minute buckets held.
    pub fn buckets(&self) -> u64 {
        self.series
            .iter()
            .map(|s| s.buckets.minutes.len() as u64)
            .sum()
    }

    /// Approximate bytes of memory held.
    pub fn bytes(&self) -> usize {
        let t = self.dict.tables();
        // Beside what the tables ask for, the allocator's own word or two
        // on each string and each location's lines.
        t.heap_bytes()
            + MALLOC_OVERHEAD * (t.strings.len() + t.locations.len())
            + self
                .series
                .iter()
                .map(|s| {
                    s.buckets.bytes()
                        + 64
                        + s.totals.capacity() * std::mem::size_of::<MinuteTotal>()
                        + s.totals.iter().map(|t| t.values.len() * 8).sum::<usize>()
                })
                .sum::<usize>()
            + self.rollups.values().map(Buckets::bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use kiln_profile::{LabelSetId, StackId};

    use super::*;

    fn rows_of(r: &Rows) -> Vec<(u32, u32, Vec<i64>)> {
        let mut out = Vec::new();
        r.for_each(|s, l, v| out.push((s.0, l.0, v.to_vec())));
        out.sort();
        out
    }

    #[test]
    fn packed_rows_read_back_and_take_late_rows() {
        let mut r = Rows::new(2);
        let mut want: BTreeMap<(u32, u32), Vec<i64>> = BTreeMap::new();
        fn add(
            r: &mut Rows,
            want: &mut BTreeMap<(u32, u32), Vec<i64>>,
            s: u32,
            l: u32,
            v: [i64; 2],
        ) {
            r.push(StackId(s), LabelSetId(l), &v);
            let e = want.entry((s, l)).or_insert(vec![0, 0]);
            e[0] += v[0];
            e[1] += v[1];
        }
        for i in 0..5000u32 {
            add(
                &mut r,
                &mut want,
                (i * 7919) % 3000,
                i % 3,
                [1, 10_000_000 * i64::from(i % 5)],
            );
        }
        add(&mut r, &mut want, 5, 0, [-3, i64::MIN / 4]);
        add(&mut r, &mut want, u32::MAX - 1, 9, [i64::MAX / 4, -1]);
        let unpacked = r.bytes();
        r.pack();
        assert!(r.bytes() * 2 < unpacked, "{} vs {unpacked}", r.bytes());
        let flat = |w: &BTreeMap<(u32, u32), Vec<i64>>| -> Vec<(u32, u32, Vec<i64>)> {
            w.iter().map(|(&(s, l), v)| (s, l, v.clone())).collect()
        };
        assert_eq!(rows_of(&r), flat(&want));
        assert_eq!(r.len(), want.len());
        let column = |w: &BTreeMap<(u32, u32), Vec<i64>>, i: usize| -> i64 {
            w.values().map(|v| v[i]).sum()
        };
        assert_eq!(
            (r.total(0), r.total(1)),
            (column(&want, 0), column(&want, 1))
        );
        // Late rows join packed ones; a fold packs them together again.
        add(&mut r, &mut want, 5, 0, [1, 1]);
        add(&mut r, &mut want, 12_345, 1, [2, 2]);
        assert_eq!(
            rows_of(&r).len(),
            want.len() + 1,
            "the late duplicate is not summed yet"
        );
        r.fold();
        assert_eq!(rows_of(&r), flat(&want));
        assert_eq!(r.keys.len(), 0, "packed again");
        assert_eq!(
            (r.total(0), r.total(1)),
            (column(&want, 0), column(&want, 1))
        );
    }
}
