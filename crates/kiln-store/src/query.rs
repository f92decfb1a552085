//! Reads: merging what a selector selects over blocks, frozen heads and
//! the head; what this server has not flushed, for peers; series totals,
//! label names and values, series and profile types.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, RwLock};

use kiln_profile::{Merger, Profile};

use crate::part::Part;
use crate::store::{Block, read, write};
use crate::{Detail, Error, Read, Store, selector};

impl Store {
    /// The blocks and cut heads of `tenant` over the range.
    pub(crate) fn stored_parts(
        &self,
        tenant: &str,
        from_ms: i64,
        until_ms: i64,
    ) -> Vec<Arc<Block>> {
        let mut out: Vec<Arc<Block>> = read(&self.frozen)
            .iter()
            .filter(|b| b.meta.tenant == tenant)
            .cloned()
            .collect();
        out.extend(
            read(&self.blocks)
                .values()
                .filter(|b| b.overlaps(tenant, from_ms, until_ms))
                .cloned(),
        );
        out
    }

    /// Every profile of tenant `tenant` matching `q` within
    /// `[from_ms, until_ms)`, reduced to the query's sample type (when it
    /// names one) and merged, keeping `detail`; `None` when nothing
    /// matches.
    pub fn select(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
    ) -> Result<Option<Profile>, Error> {
        let mut m = Merger::new();
        let at = Read {
            q,
            from_ms,
            until_ms,
            detail,
        };
        self.head_into(tenant, &at, &mut m)?;
        for b in self.stored_parts(tenant, from_ms, until_ms) {
            read_part(&b.part, &at, &mut m)?;
        }
        Ok((m.inputs() > 0).then(|| m.finish()))
    }

    pub(crate) fn head_into(&self, tenant: &str, at: &Read, m: &mut Merger) -> Result<(), Error> {
        // Fold what the range's buckets still hold unfolded, once, so this
        // and later queries read one sorted run per bucket.
        if let Some(p) = write(&self.head).get_mut(tenant) {
            p.prepare(at.q, at.from_ms, at.until_ms);
        }
        if let Some(p) = read(&self.head).get(tenant) {
            p.read_into(at, m)?;
        }
        Ok(())
    }

    /// What only this server holds — its head, heads being cut, and blocks
    /// it flushed within `peer_grace` whose ids are not in `known` — of
    /// `q` over the range, merged: the answer to a peer's query.
    pub fn select_head(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
        known: &HashSet<String>,
    ) -> Result<Option<Profile>, Error> {
        let mut m = Merger::new();
        let at = Read {
            q,
            from_ms,
            until_ms,
            detail,
        };
        self.head_into(tenant, &at, &mut m)?;
        let recent: Vec<Arc<Block>> = read(&self.frozen)
            .iter()
            .filter(|b| b.meta.tenant == tenant && !known.contains(&b.meta.id))
            .cloned()
            .chain(
                read(&self.blocks)
                    .values()
                    .filter(|b| {
                        b.overlaps(tenant, from_ms, until_ms)
                            && !known.contains(&b.meta.id)
                            && b.flushed_at
                                .is_some_and(|t| t.elapsed() < self.opts.peer_grace)
                    })
                    .cloned(),
            )
            .collect();
        for b in recent {
            read_part(&b.part, &at, &mut m)?;
        }
        Ok((m.inputs() > 0).then(|| m.finish()))
    }

    /// Per bucket (start ms) within the range, the total of the query's
    /// sample type, for each value of `group_by` (or one line, `""`).
    pub fn series_totals(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        group_by: Option<&str>,
    ) -> BTreeMap<String, BTreeMap<i64, i64>> {
        let mut out = BTreeMap::new();
        if let Some(p) = read(&self.head).get(tenant) {
            p.totals(q, from_ms, until_ms, group_by, &mut out);
        }
        for b in self.stored_parts(tenant, from_ms, until_ms) {
            read(&b.part).totals(q, from_ms, until_ms, group_by, &mut out);
        }
        out
    }

    /// Calls `f` with every part of `tenant`: head, cut heads, blocks.
    pub(crate) fn each_part(&self, tenant: &str, mut f: impl FnMut(&Part)) {
        if let Some(p) = read(&self.head).get(tenant) {
            f(p);
        }
        for b in self.stored_parts(tenant, i64::MIN / 2, i64::MAX / 2) {
            f(&read(&b.part));
        }
    }

    /// Label names of tenant `tenant`'s series, sorted.
    pub fn label_names(&self, tenant: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| out.extend(p.index.keys().cloned()));
        out.into_iter().collect()
    }

    /// Values of label `name` among tenant `tenant`'s series (those matching
    /// `q`, when given), sorted.
    pub fn label_values(
        &self,
        tenant: &str,
        name: &str,
        q: Option<&selector::Query>,
    ) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| {
            let Some(values) = p.index.get(name) else {
                return;
            };
            match q {
                None => out.extend(values.keys().cloned()),
                Some(q) => {
                    let ok: BTreeSet<u32> = p.matching(q).into_iter().collect();
                    out.extend(
                        values
                            .iter()
                            .filter(|(_, ids)| ids.iter().any(|i| ok.contains(i)))
                            .map(|(v, _)| v.clone()),
                    );
                }
            }
        });
        out.into_iter().collect()
    }

    /// The label sets of tenant `tenant`'s series matching `q`.
    pub fn series(&self, tenant: &str, q: &selector::Query) -> Vec<Vec<(String, String)>> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| {
            out.extend(
                p.matching(q)
                    .into_iter()
                    .map(|id| p.series[id as usize].labels.clone()),
            )
        });
        out.into_iter().collect()
    }

    /// Profile type IDs (`name:sample:unit:period:unit`) of tenant `tenant`.
    pub fn profile_types(&self, tenant: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        self.each_part(tenant, |p| p.profile_types(&mut out));
        out.into_iter().collect()
    }
}

/// Adds what `q` selects of one stored part to `m`.
pub(crate) fn read_part(part: &RwLock<Part>, at: &Read, m: &mut Merger) -> Result<(), Error> {
    write(part).prepare(at.q, at.from_ms, at.until_ms);
    read(part).read_into(at, m)
}
