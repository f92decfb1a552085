//! A part: one tenant's series over one symbol table. The head is a part
//! that takes profiles; a block, read back from object storage, is a part
//! that no longer changes. Profiles are kept as rows — (stack, label set,
//! values) over the part's shared table — per series and minute, so a
//! thousand profiles of one service share one copy of its functions and
//! stacks, and merging rows is summing numbers under one key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kiln_profile::{Interner, LabelSetId, Merger, Profile, StackId};

use crate::{BUCKET_MS, Detail, Error, HOUR_MS, NAME_LABEL, Read, selector};

/// Series id within a part.
pub(crate) type SeriesId = u32;

/// Rows are folded (sorted and summed) once this many more arrived since
/// the last fold, and at least as many as it left.
const FOLD_ROWS: usize = 4096;

/// Rows over a shared table: keys and their values, `width` per row.
/// New rows are appended to a tail as they come; [`Rows::fold`] sorts and
/// sums equal keys. Once their minute is over, rows are packed
/// ([`Rows::pack`]): sorted by key, each row is the varint of its stack id
/// minus the previous row's, the varint of its label set, and its values
/// as zigzag varints — 8 to 10 bytes where the tail takes 24.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rows {
    packed: Vec<u8>,
    packed_rows: usize,
    keys: Vec<(StackId, LabelSetId)>,
    values: Vec<i64>,
    pub width: usize,
    folded: usize,
    /// Each value column summed over every row: a timeline reads these
    /// instead of decoding the rows.
    sums: Vec<i64>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `*at`, advancing it. Packed bytes are only ever written
/// by [`put_varint`], so they are well formed.
fn get_varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&byte) = b.get(*at) {
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
    }
    v
}

impl Rows {
    pub fn new(width: usize) -> Rows {
        Rows {
            width,
            sums: vec![0; width],
            ..Rows::default()
        }
    }

    pub fn len(&self) -> usize {
        self.packed_rows + self.keys.len()
    }

    pub fn push(&mut self, stack: StackId, labels: LabelSetId, values: &[i64]) {
        self.keys.push((stack, labels));
        self.values.extend_from_slice(values);
        for (t, &v) in self.sums.iter_mut().zip(values) {
            *t = t.saturating_add(v);
        }
    }

    /// Folds when enough has arrived since the last fold, so an append
    /// costs its own size on average: the tail may grow to twice what the
    /// last fold left (sorted or packed) before it is folded again.
    pub fn maybe_fold(&mut self) {
        if self.keys.len() > 2 * self.folded.max(self.packed_rows) + FOLD_ROWS {
            self.fold();
        }
    }

    /// Sorts by key and sums the values of equal keys; packed rows that
    /// late rows joined are packed again.
    pub fn fold(&mut self) {
        if self.folded == self.keys.len() && (self.packed_rows == 0 || self.keys.is_empty()) {
            return;
        }
        let repack = self.packed_rows > 0;
        if repack {
            self.unpack();
        }
        let w = self.width;
        // Sorted as (key, index) pairs side by side: comparing in place is
        // several times faster than sorting indices by looking keys up.
        let mut order: Vec<(u64, u32)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, &(s, l))| ((u64::from(s.0) << 32) | u64::from(l.0), i as u32))
            .collect();
        order.sort_unstable_by_key(|&(k, _)| k);
        let mut keys = Vec::with_capacity(order.len());
        let mut values: Vec<i64> = Vec::with_capacity(self.values.len());
        for (_, i) in order {
            let i = i as usize;
            let v = &self.values[i * w..(i + 1) * w];
            if keys.last() == Some(&self.keys[i]) {
                let at = values.len() - w;
                for (o, &x) in values[at..].iter_mut().zip(v) {
                    *o = o.saturating_add(x);
                }
            } else {
                keys.push(self.keys[i]);
                values.extend_from_slice(v);
            }
        }
        keys.shrink_to_fit();
        values.shrink_to_fit();
        self.keys = keys;
        self.values = values;
        self.folded = self.keys.len();
        if repack {
            self.pack();
        }
    }

    /// Folds, then packs every row (see the type's docs).
    pub fn pack(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        if self.packed_rows > 0 || self.folded != self.keys.len() {
            // fold() unpacks, merges and comes back here with none packed.
            self.fold();
            if self.packed_rows > 0 {
                return;
            }
        }
        let mut out = Vec::with_capacity(self.keys.len() * (3 + 3 * self.width));
        let mut prev = 0u32;
        for (i, &(s, l)) in self.keys.iter().enumerate() {
            put_varint(&mut out, u64::from(s.0 - prev));
            prev = s.0;
            put_varint(&mut out, u64::from(l.0));
            for &v in &self.values[i * self.width..(i + 1) * self.width] {
                put_varint(&mut out, ((v << 1) ^ (v >> 63)) as u64);
            }
        }
        out.shrink_to_fit();
        self.packed = out;
        self.packed_rows = self.keys.len();
        self.keys = Vec::new();
        self.values = Vec::new();
        self.folded = 0;
    }

    /// Moves the packed rows back into the tail, before the rows there.
    fn unpack(&mut self) {
        let mut keys = Vec::with_capacity(self.len());
        let mut values = Vec::with_capacity(self.len() * self.width);
        self.for_each_packed(|s, l, v| {
            keys.push((s, l));
            values.extend_from_slice(v);
        });
        keys.extend_from_slice(&self.keys);
        values.extend_from_slice(&self.values);
        self.keys = keys;
        self.values = values;
        self.packed = Vec::new();
        self.packed_rows = 0;
        self.folded = 0;
    }

    fn for_each_packed(&self, mut f: impl FnMut(StackId, LabelSetId, &[i64])) {
        let b = &self.packed;
        let mut at = 0;
        let mut stack = 0u32;
        let mut v = vec![0i64; self.width];
        for _ in 0..self.packed_rows {
            stack += get_varint(b, &mut at) as u32;
            let labels = get_varint(b, &mut at) as u32;
            for x in v.iter_mut() {
                let z = get_varint(b, &mut at);
                *x = (z >> 1) as i64 ^ -((z & 1) as i64);
            }
            f(StackId(stack), LabelSetId(labels), &v);
        }
    }

    /// Calls `f` with every row: packed ones first, then the tail.
    pub fn for_each(&self, mut f: impl FnMut(StackId, LabelSetId, &[i64])) {
        self.for_each_packed(&mut f);
        for (&(s, l), v) in self.keys.iter().zip(self.values.chunks(self.width.max(1))) {
            f(s, l, v);
        }
    }

    pub fn extend(&mut self, other: &Rows) {
        other.for_each(|s, l, v| self.push(s, l, v));
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.packed.capacity()
            + self.keys.capacity() * 8
            + (self.values.capacity() + self.sums.capacity()) * 8
    }

    /// The total of value column `i`.
    pub fn total(&self, i: usize) -> i64 {
        self.sums.get(i).copied().unwrap_or(0)
    }
}

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
    fn widen(&mut self, start_ns: i64, end_ns: i64) {
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
    hours: BTreeMap<i64, Vec<Group>>,
    /// Per hour, how many times rows were added to it, and when last: a
    /// sum made off the lock is kept only if its hour saw no rows
    /// meanwhile, and is made only once the hour has been quiet a while.
    edits: BTreeMap<i64, (u64, Instant)>,
    /// The newest minute rows arrived for: when rows arrive for a newer
    /// one, its rows are folded (minutes fill one after another, so a
    /// minute left behind is usually complete).
    open: Option<i64>,
}

/// The whole hours within `[lo, until)`: `[first, end)`, empty if none.
fn whole_hours(lo: i64, until: i64) -> (i64, i64) {
    let first = (lo + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    let end = until.div_euclid(HOUR_MS) * HOUR_MS;
    (first, end.max(first))
}

/// `groups` summed per kind and packed.
fn sum_groups<'a>(groups: impl Iterator<Item = &'a Group>) -> Vec<Group> {
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
    part: u64,
    key: (String, String),
    hour: i64,
    edits: u64,
    minutes: Vec<Group>,
}

impl HourToSum {
    pub fn sum(&self) -> Vec<Group> {
        sum_groups(self.minutes.iter())
    }
}

/// The group of `header` in `groups`, added if missing.
fn group_of(groups: &mut Vec<Group>, header: u32, width: usize) -> &mut Group {
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
    fn group(&mut self, time_ms: i64, header: u32, width: usize) -> &mut Group {
        let hour = time_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let now = Instant::now();
        let e = self.edits.entry(hour).or_insert((0, now));
        *e = (e.0 + 1, now);
        self.slot(time_ms, header, width)
    }

    /// As [`Buckets::group`], but not counted as an edit of its hour: for
    /// rows read back from a block, which takes none after (a block's rows
    /// come one at a time, and this is per row).
    fn slot(&mut self, time_ms: i64, header: u32, width: usize) -> &mut Group {
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

    /// Readies `[lo, until)` for reading: folds its minutes and sums each
    /// whole hour not summed yet.
    fn prepare(&mut self, lo: i64, until: i64) {
        for (_, groups) in self.minutes.range_mut(lo..until) {
            for g in groups {
                g.rows.fold();
            }
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
    fn unsummed_hour(&self, before: i64, quiet: Duration) -> Option<i64> {
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
    fn edits_of(&self, h: i64) -> u64 {
        self.edits.get(&h).map_or(0, |e| e.0)
    }

    /// The hours within `[first, end)` that hold any minute, found by
    /// skipping from one to the next (a range of years costs what it
    /// holds, not one step per hour).
    fn hours_held(&self, first: i64, end: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut at = first;
        while at < end {
            let Some((&m, _)) = self.minutes.range(at..end).next() else {
                break;
            };
            let h = m.div_euclid(HOUR_MS) * HOUR_MS;
            out.push(h);
            at = h + HOUR_MS;
        }
        out
    }

    /// The groups that cover `[lo, until)`: summed hours where there are
    /// any, minutes elsewhere.
    fn read<'a>(&'a self, lo: i64, until: i64, out: &mut Vec<&'a Group>) {
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

    pub fn bytes(&self) -> usize {
        let b = |m: &BTreeMap<i64, Vec<Group>>| -> usize {
            m.values()
                .flat_map(|v| v.iter())
                .map(|g| g.rows.bytes() + 48)
                .sum()
        };
        b(&self.minutes) + b(&self.hours)
    }
}

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
}

/// The symbol table: growing while the part takes profiles, fixed after.
pub(crate) enum Dict {
    Live(Box<Interner>),
    Fixed(Box<Profile>),
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
        let headers: Vec<u32> = other
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
            .collect();
        let Dict::Live(dict) = &mut self.dict else {
            return Err(fixed());
        };
        let mut remap = dict.remapper(other.dict.tables());
        for (s, &id) in other.series.iter().zip(&ids) {
            let key = Part::rollup_key(&s.labels);
            for (&minute, groups) in &s.buckets.minutes {
                for g in groups {
                    let mut rows = Rows::new(g.rows.width);
                    let mut failed = None;
                    g.rows.for_each(|st, l, v| match remap.row(st, l) {
                        Ok((st, l)) => rows.push(st, l, v),
                        Err(e) => failed = Some(e),
                    });
                    if let Some(e) = failed {
                        return Err(e.into());
                    }
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
            let Dict::Live(i) = std::mem::replace(&mut self.dict, Dict::Fixed(Box::default()))
            else {
                unreachable!("checked above");
            };
            self.dict = Dict::Fixed(Box::new(i.into_tables()));
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

    /// The rollup that answers `q` exactly: `q` names a profile and
    /// selects by `service_name="…"` alone.
    fn rollup_key_for(q: &selector::Query) -> Option<(String, String)> {
        match q.matchers.as_slice() {
            [m] if m.name == "service_name"
                && m.op == selector::Op::Eq
                && !q.profile_name().is_empty() =>
            {
                Some((q.profile_name().to_string(), m.value.clone()))
            }
            _ => None,
        }
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

    /// Whether `q` is read from a rollup here.
    #[cfg(test)]
    pub fn uses_rollup(&self, q: &selector::Query) -> bool {
        Part::rollup_key_for(q).is_some_and(|k| self.rollups.contains_key(&k))
    }

    /// Whole hours summed in the rollup `q` reads.
    #[cfg(test)]
    pub fn rollup_hours(&self, q: &selector::Query) -> Vec<i64> {
        Part::rollup_key_for(q)
            .and_then(|k| self.rollups.get(&k))
            .map(|r| r.hours.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Series matching `q`: equality matchers narrow through the index,
    /// the rest are checked on each candidate.
    pub fn matching(&self, q: &selector::Query) -> Vec<SeriesId> {
        let mut candidates: Option<BTreeSet<SeriesId>> = None;
        let mut narrow = |name: &str, value: &str| {
            let set = self
                .index
                .get(name)
                .and_then(|v| v.get(value))
                .cloned()
                .unwrap_or_default();
            candidates = Some(match candidates.take() {
                Some(c) => c.intersection(&set).copied().collect(),
                None => set,
            });
        };
        if !q.profile_name().is_empty() {
            narrow(NAME_LABEL, q.profile_name());
        }
        for m in &q.matchers {
            if m.op == selector::Op::Eq && !m.value.is_empty() {
                narrow(&m.name, &m.value);
            }
        }
        let all: Box<dyn Iterator<Item = SeriesId>> = match candidates {
            Some(c) => Box::new(c.into_iter()),
            None => Box::new(0..self.series.len() as SeriesId),
        };
        all.filter(|&i| q.matches(&self.series[i as usize].labels))
            .collect()
    }

    /// Readies every bucket a read of `q` over the range touches.
    pub fn prepare(&mut self, q: &selector::Query, from_ms: i64, until_ms: i64) {
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        if let Some(r) = Part::rollup_key_for(q).and_then(|k| self.rollups.get_mut(&k)) {
            r.prepare(lo, until_ms);
            return;
        }
        for id in self.matching(q) {
            self.series[id as usize].buckets.prepare(lo, until_ms);
        }
    }

    /// The groups `q` reads over the range.
    fn groups(&self, q: &selector::Query, from_ms: i64, until_ms: i64) -> Vec<&Group> {
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let mut out = Vec::new();
        match Part::rollup_key_for(q).and_then(|k| self.rollups.get(&k)) {
            Some(r) => r.read(lo, until_ms, &mut out),
            None => {
                for id in self.matching(q) {
                    self.series[id as usize]
                        .buckets
                        .read(lo, until_ms, &mut out);
                }
            }
        }
        out
    }

    /// Adds what `q` selects over the range to `m`: per kind, every row
    /// at once. With a sample type in `q`, rows are reduced to it, so kinds
    /// that share it merge; kinds without it are left out. With
    /// [`Detail::Stacks`], rows are summed per stack here, over the part's
    /// own ids, and the merge sees each stack once, unlabelled.
    pub fn read_into(&self, at: &Read, m: &mut Merger) -> Result<(), Error> {
        let groups = self.groups(at.q, at.from_ms, at.until_ms);
        let ty = at.q.sample_type();
        // Per stack id, its sums (`width` each), and the stacks touched.
        let mut sums: Vec<i64> = Vec::new();
        let mut touched: Vec<u32> = Vec::new();
        let mut seen: Vec<bool> = Vec::new();
        for (h, header) in self.headers.iter().enumerate() {
            let mine: Vec<&Group> = groups
                .iter()
                .copied()
                .filter(|g| g.header as usize == h && g.rows.len() > 0)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let column = match &ty {
                Some(t) => match header.sample_type_index(t) {
                    Some(i) => Some(i),
                    None => continue,
                },
                None => None,
            };
            let mut head = match column {
                Some(i) if header.sample_types.len() > 1 => one_type(header, i),
                _ => header.clone(),
            };
            let start = mine
                .iter()
                .filter(|g| g.start_ns != 0)
                .map(|g| g.start_ns)
                .min();
            if let Some(start) = start {
                head.time_nanos = start;
                head.duration_nanos = mine.iter().map(|g| g.end_ns).max().unwrap_or(start) - start;
            }
            let tables = self.dict.tables();
            let mut sink = m.rows(&head, tables)?;
            let mut failed = None;
            let pick = |v: &[i64]| -> usize {
                match column {
                    Some(i) if v.len() > 1 => i,
                    _ => usize::MAX,
                }
            };
            match at.detail {
                Detail::Labels => {
                    for g in mine {
                        g.rows.for_each(|s, l, v| {
                            let v = match pick(v) {
                                usize::MAX => v,
                                i => std::slice::from_ref(&v[i]),
                            };
                            if let Err(e) = sink.push(s, l, v) {
                                failed = Some(e);
                            }
                        });
                    }
                }
                Detail::Stacks => {
                    let width = head.sample_types.len();
                    sums.clear();
                    sums.resize(tables.stacks.len() * width, 0);
                    seen.clear();
                    seen.resize(tables.stacks.len(), false);
                    touched.clear();
                    for g in mine {
                        g.rows.for_each(|s, _, v| {
                            let Some(slot) =
                                sums.get_mut(s.index() * width..(s.index() + 1) * width)
                            else {
                                failed = Some(kiln_profile::Error::Invalid(
                                    "a row names a stack out of range".into(),
                                ));
                                return;
                            };
                            if !seen[s.index()] {
                                seen[s.index()] = true;
                                touched.push(s.0);
                            }
                            match pick(v) {
                                usize::MAX => {
                                    for (o, &x) in slot.iter_mut().zip(v) {
                                        *o = o.saturating_add(x);
                                    }
                                }
                                i => slot[0] = slot[0].saturating_add(v[i]),
                            }
                        });
                    }
                    for &s in &touched {
                        let i = s as usize * width;
                        if let Err(e) = sink.push(StackId(s), LabelSetId(0), &sums[i..i + width]) {
                            failed = Some(e);
                        }
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Per bucket start within the range, the total of `q`'s sample type
    /// (or each kind's default) for each value of `group_by`.
    pub fn totals(
        &self,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        group_by: Option<&str>,
        out: &mut BTreeMap<String, BTreeMap<i64, i64>>,
    ) {
        let ty = q.sample_type();
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let columns: Vec<Option<usize>> = self
            .headers
            .iter()
            .map(|h| match &ty {
                Some(t) => h.sample_type_index(t),
                None => h.default_type_index(),
            })
            .collect();
        for id in self.matching(q) {
            let s = &self.series[id as usize];
            let key = group_by
                .and_then(|g| s.labels.iter().find(|(k, _)| k == g))
                .map_or(String::new(), |(_, v)| v.clone());
            let line = out.entry(key).or_default();
            for (&t, groups) in s.buckets.minutes.range(lo..until_ms) {
                for g in groups {
                    if let Some(i) = columns[g.header as usize] {
                        let v = line.entry(t).or_default();
                        *v = v.saturating_add(g.rows.total(i));
                    }
                }
            }
        }
    }

    /// Profile type IDs (`name:sample:unit:period:unit`) held.
    pub fn profile_types(&self, out: &mut BTreeSet<String>) {
        for s in &self.series {
            let name = s
                .labels
                .iter()
                .find(|(k, _)| k == NAME_LABEL)
                .map_or("", |(_, v)| v.as_str());
            let headers: BTreeSet<u32> = s
                .buckets
                .minutes
                .values()
                .flatten()
                .map(|g| g.header)
                .collect();
            for h in headers {
                let p = &self.headers[h as usize];
                let (pt, pu) = p
                    .period_type
                    .map(|v| (p.str(v.ty), p.str(v.unit)))
                    .unwrap_or(("", ""));
                for i in 0..p.sample_types.len() {
                    let (t, u) = p.sample_type_names(i);
                    out.insert(format!("{name}:{t}:{u}:{pt}:{pu}"));
                }
            }
        }
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
        let tables = t.strings.iter().map(|s| s.len() + 24).sum::<usize>()
            + t.functions.len() * 32
            + t.locations
                .iter()
                .map(|l| 48 + l.lines.len() * 24)
                .sum::<usize>()
            + t.stacks.total_items() * 4
            + t.stacks.len() * 16
            + t.label_sets.total_items() * 32
            + t.label_sets.len() * 16;
        tables
            + self
                .series
                .iter()
                .map(|s| s.buckets.bytes() + 64)
                .sum::<usize>()
            + self.rollups.values().map(Buckets::bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
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
