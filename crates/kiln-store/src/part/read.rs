//! Reads of a part: which series a selector matches, which minute and
//! hour groups cover a range, and the rows merged into an answer, totals
//! and profile types.

use std::collections::{BTreeMap, BTreeSet};

use kiln_profile::{LabelSetId, Merger, StackId};

use super::{Group, Part, SeriesId, one_type};
use crate::{BUCKET_MS, Detail, Error, NAME_LABEL, Read, selector};

impl Part {
    /// The rollup that answers `q` exactly: `q` names a profile and
    /// selects by `service_name="…"` alone.
    pub(crate) fn rollup_key_for(q: &selector::Query) -> Option<(String, String)> {
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

    /// Readies every bucket a read of `q` over the range touches: folds
    /// its minutes and, with `sum_hours`, sums the whole hours not summed
    /// yet (reads are right either way; these make them, and later ones,
    /// cheaper).
    pub fn prepare(&mut self, q: &selector::Query, from_ms: i64, until_ms: i64, sum_hours: bool) {
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        if let Some(r) = Part::rollup_key_for(q).and_then(|k| self.rollups.get_mut(&k)) {
            r.prepare(lo, until_ms, sum_hours);
            return;
        }
        for id in self.matching(q) {
            self.series[id as usize]
                .buckets
                .prepare(lo, until_ms, sum_hours);
        }
    }

    /// The groups `q` reads over the range.
    fn groups<'a>(&'a self, q: &selector::Query, from_ms: i64, until_ms: i64) -> Vec<&'a Group> {
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let mut out = Vec::new();
        match Part::rollup_key_for(q).and_then(|k| self.rollups.get(&k)) {
            Some(r) if self.rollup_minutes => r.read(lo, until_ms, &mut out),
            Some(r) if super::all_within(self.min_ms, self.max_ms, lo, until_ms) => {
                // Every row is in range: all of the rollup's sums.
                out.extend(r.hours.values().flatten());
            }
            Some(r) => {
                // Hour sums from the rollup; the minutes at the edges from
                // the service's series (the rollup keeps no minutes).
                let (first, end) = super::whole_hours(lo, until_ms);
                let ids = self.matching(q);
                let edges = |a: i64, b: i64, out: &mut Vec<&'a Group>| {
                    for &id in &ids {
                        self.series[id as usize].buckets.minutes_in(a, b, out);
                    }
                };
                if first >= end {
                    edges(lo, until_ms, &mut out);
                } else {
                    edges(lo, first, &mut out);
                    out.extend(r.hours.range(first..end).flat_map(|(_, g)| g.iter()));
                    edges(end, until_ms, &mut out);
                }
            }
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

    /// Per kind, the column of `q`'s sample type (or the kind's default).
    fn columns_of(&self, q: &selector::Query) -> Vec<Option<usize>> {
        let ty = q.sample_type();
        self.headers
            .iter()
            .map(|h| match &ty {
                Some(t) => h.sample_type_index(t),
                None => h.default_type_index(),
            })
            .collect()
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
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let columns = self.columns_of(q);
        for id in self.matching(q) {
            let s = &self.series[id as usize];
            let key = group_by
                .and_then(|g| s.labels.iter().find(|(k, _)| k == g))
                .map_or(String::new(), |(_, v)| v.clone());
            let line = out.entry(key).or_default();
            if !s.totals.is_empty() {
                // A block's minute totals (its rows may be read only in
                // part, or not at all).
                let first = s.totals.partition_point(|t| t.minute < lo);
                for t in s.totals[first..].iter().take_while(|t| t.minute < until_ms) {
                    if let Some(i) = columns[t.header as usize] {
                        let v = line.entry(t.minute).or_default();
                        *v = v.saturating_add(t.values[i]);
                    }
                }
                continue;
            }
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

    /// The totals of the rollup `q` reads, per whole hour of `[from_ms,
    /// until_ms)` a day sum here holds (every hour it holds, when all of
    /// its rows lie in the range, as they do when the sum stands in for
    /// its blocks: [`super::all_within`]), into `out[""]` keyed by the
    /// hour's start: a timeline over days reads a day's 24 totals, not its
    /// blocks.
    pub fn rollup_hour_totals(
        &self,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        out: &mut BTreeMap<String, BTreeMap<i64, i64>>,
    ) {
        let Some(r) = Part::rollup_key_for(q).and_then(|k| self.rollups.get(&k)) else {
            return;
        };
        let columns = self.columns_of(q);
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let (first, end) = if super::all_within(self.min_ms, self.max_ms, lo, until_ms) {
            (i64::MIN, i64::MAX)
        } else {
            super::whole_hours(lo, until_ms)
        };
        let line = out.entry(String::new()).or_default();
        for (&h, totals) in r.hour_totals.range(first..end) {
            for (k, values) in totals {
                if let Some(&v) = columns[*k as usize].and_then(|i| values.get(i)) {
                    let t = line.entry(h).or_default();
                    *t = t.saturating_add(v);
                }
            }
        }
    }

    /// The time each minute of `[from_ms, until_ms)` holds data of the
    /// series matching `q` (of the query's sample type): per minute, the
    /// earliest start and the latest end of the profiles filed under it
    /// (ns; a window that starts in a minute is filed there whole); the
    /// whole minute where only a block's minute totals are known. What a
    /// gauge's mean over a range divides by.
    pub fn coverage(
        &self,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        out: &mut BTreeMap<i64, (i64, i64)>,
    ) {
        let ty = q.sample_type();
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let held: Vec<bool> = self
            .headers
            .iter()
            .map(|h| match &ty {
                Some(t) => h.sample_type_index(t).is_some(),
                None => true,
            })
            .collect();
        let ns = 1_000_000i64;
        let mut widen = |minute: i64, start: i64, end: i64| {
            let e = out.entry(minute).or_insert((start, end));
            *e = (e.0.min(start), e.1.max(end));
        };
        for id in self.matching(q) {
            let s = &self.series[id as usize];
            if !s.totals.is_empty() {
                let first = s.totals.partition_point(|t| t.minute < lo);
                for t in s.totals[first..].iter().take_while(|t| t.minute < until_ms) {
                    if held[t.header as usize] {
                        widen(t.minute, t.minute * ns, (t.minute + BUCKET_MS) * ns);
                    }
                }
                continue;
            }
            for (&t, groups) in s.buckets.minutes.range(lo..until_ms) {
                for g in groups.iter().filter(|g| held[g.header as usize]) {
                    if g.start_ns == 0 || g.end_ns <= g.start_ns {
                        widen(t, t * ns, (t + BUCKET_MS) * ns);
                    } else {
                        widen(t, g.start_ns, g.end_ns);
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
            for h in s.kinds_held() {
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
}
