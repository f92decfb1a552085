//! Day sums: each server writes, per tenant and UTC day, one day-sum block
//! holding every service's sum of that day over its own blocks that lie
//! within it (`Meta::sums_of` names them), so a query of a service over
//! whole hours reads one sum per day instead of one per hour and block.
//! A day is summed once its blocks are final (their hours over by
//! `flush_every`, so compacted) — a finished day once, and the current day
//! as it goes: its sum is written again as its hours are done, from the
//! earlier sum and the blocks added since. Written again too when the
//! day's blocks change (a late block, a compaction), the older one then
//! deleted. Once every day is, each week over is summed from its days'
//! sums (`sums_days` 7), and then each quarter of a day (six hours from
//! 00:00 UTC, `sums_hours` 6) over with two or more blocks, from its
//! blocks: a range that starts inside a day reads at most three quarter
//! sums and five hours of it. Queries use a sum only while every block it
//! stands for is known and lies within their range (`day_plan`), longer
//! spans first; otherwise they read those blocks' hour sums, so a stale
//! or half-written one is never counted.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::block::{HOUR_TOTALS, Level, ROLLUPS, span_start};
use crate::cache::Want;
use crate::catalog::delete_block;
use crate::part::{Part, all_within};
use crate::store::{Block, now_ms, read, write};
use crate::{BUCKET_MS, DAY_MS, Error, HOUR_MS, Store, selector};

/// The first millisecond of the UTC day holding `ms`.
fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// The end of the hour holding `ms`.
fn hour_end(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS
}

/// Days in a week sum (weeks counted from the epoch).
const WEEK_DAYS: u32 = 7;

/// Hours in a quarter-day sum.
const QUARTER_HOURS: u32 = 6;

/// One day, week or quarter of a day of one tenant to sum: its blocks
/// (or day sums), and the sum block that summed an earlier set of them,
/// if any.
struct SumJob {
    tenant: String,
    start: i64,
    /// Its span: `hours` when not 0 (a quarter), else `days`.
    days: u32,
    hours: u32,
    sources: Vec<Arc<Block>>,
    old: Option<Arc<Block>>,
}

impl SumJob {
    fn len(&self) -> i64 {
        if self.hours > 0 {
            i64::from(self.hours) * HOUR_MS
        } else {
            i64::from(self.days) * DAY_MS
        }
    }
}

impl Store {
    /// Writes the sum block of one tenant's day (or, once every day is
    /// summed, week, then quarter of a day) whose final blocks (or day
    /// sums) are not summed as
    /// they are now. Returns its id, or `None` if
    /// every day and week is summed. The upkeep calls it once a tick.
    pub async fn sum_a_day(&self) -> Result<Option<String>, Error> {
        let _busy = self.busy.lock().await;
        let Some(job) = self.day_to_sum() else {
            return Ok(None);
        };
        // An earlier sum of a subset of these blocks is read in place of
        // that subset (the current day's sum grows an hour at a time);
        // one written before day sums kept their hour totals is not.
        let earlier = job.old.as_ref().filter(|o| {
            o.meta.files.contains_key(HOUR_TOTALS)
                && o.meta
                    .sums_of
                    .iter()
                    .all(|id| job.sources.iter().any(|s| &s.meta.id == id))
        });
        let want: Vec<(Arc<Block>, Want)> = earlier
            .into_iter()
            .chain(
                job.sources
                    .iter()
                    .filter(|s| earlier.is_none_or(|o| !o.meta.sums_of.contains(&s.meta.id))),
            )
            .map(|s| (s.clone(), Want::level(Level::Hours)))
            .collect();
        // Summed a step of blocks at a time, as a query reads them.
        let (start, len) = (job.start, job.len());
        let mut part = self
            .over_blocks(
                want,
                Part::default(),
                Arc::new(move |p, part| part.absorb_sums(&read(p), start, len)),
            )
            .await?;
        part.seal();
        part.pack_sums();
        let mut meta = self.meta(
            self.block_id(job.start),
            job.tenant.clone(),
            &part,
            job.sources
                .iter()
                .map(|s| s.meta.wal_cut)
                .max()
                .unwrap_or(0),
        );
        // Never level 0: compaction only merges level-0 blocks.
        meta.level = job.sources.iter().map(|s| s.meta.level).max().unwrap_or(0) + 1;
        meta.sums_of = job.sources.iter().map(|s| s.meta.id.clone()).collect();
        meta.sums_days = job.days;
        meta.sums_hours = job.hours;
        let (meta, part) = self.write_block(meta, part).await?;
        let id = meta.id.clone();
        {
            let mut blocks = write(&self.blocks);
            if let Some(old) = &job.old {
                blocks.remove(&old.meta.id);
            }
            let block = Block::new(meta, part, Level::Full, Some(Instant::now()));
            blocks.insert(id.clone(), Arc::new(block));
        }
        self.drop_over_cache();
        if let Some(old) = &job.old
            && let Err(e) = delete_block(&*self.storage, &old.meta.tenant, &old.meta.id).await
        {
            tracing::warn!(target: "kiln_store", "deleting an older sum: {e}");
        }
        self.days_summed.fetch_add(1, Ordering::Relaxed);
        Ok(Some(id))
    }

    /// Sums every day and week there is to sum ([`Store::sum_a_day`]
    /// until none is left); returns the ids written.
    pub async fn sum_days(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        while let Some(id) = self.sum_a_day().await? {
            out.push(id);
        }
        Ok(out)
    }

    /// The first day whose final blocks (their hours over by
    /// `flush_every`) are not summed as they are now — a finished day, or
    /// the current one once two or more of its blocks are final — and,
    /// once every day is, the first week over whose day sums are not;
    /// then the first quarter of a day over whose two or more blocks are
    /// not.
    fn day_to_sum(&self) -> Option<SumJob> {
        let over =
            (now_ms() - self.opts.flush_every.as_millis() as i64).div_euclid(HOUR_MS) * HOUR_MS;
        let blocks = read(&self.blocks);
        type Key = (String, i64);
        let mut days: BTreeMap<Key, Vec<Arc<Block>>> = BTreeMap::new();
        let quarter = i64::from(QUARTER_HOURS) * HOUR_MS;
        let mut quarters: BTreeMap<Key, Vec<Arc<Block>>> = BTreeMap::new();
        // The newest sum of each day, week and quarter.
        let mut summed: BTreeMap<Key, Arc<Block>> = BTreeMap::new();
        let mut weeks_summed: BTreeMap<Key, Arc<Block>> = BTreeMap::new();
        let mut quarters_summed: BTreeMap<Key, Arc<Block>> = BTreeMap::new();
        for b in blocks.values().filter(|b| b.meta.server == self.server) {
            let m = &b.meta;
            let day = day_of(m.min_ms);
            if !m.sums_of.is_empty() {
                let (start, _) = m.sum_span();
                let into = if m.sums_hours > 0 {
                    &mut quarters_summed
                } else if m.sums_days > 1 {
                    &mut weeks_summed
                } else {
                    &mut summed
                };
                let key = (m.tenant.clone(), start);
                if into
                    .get(&key)
                    .is_none_or(|o| o.meta.created_ms <= m.created_ms)
                {
                    into.insert(key, b.clone());
                }
            } else if m.max_ms < day + DAY_MS
                && hour_end(m.max_ms) <= over
                && m.files.contains_key(ROLLUPS)
            {
                days.entry((m.tenant.clone(), day))
                    .or_default()
                    .push(b.clone());
                let q = m.min_ms.div_euclid(quarter) * quarter;
                if m.max_ms < q + quarter {
                    quarters
                        .entry((m.tenant.clone(), q))
                        .or_default()
                        .push(b.clone());
                }
            }
        }
        let job = |key: Key,
                   (days, hours): (u32, u32),
                   sources: Vec<Arc<Block>>,
                   old: Option<Arc<Block>>| {
            let ids: Vec<&String> = sources.iter().map(|s| &s.meta.id).collect();
            let same = old
                .as_ref()
                .is_some_and(|o| o.meta.sums_of.iter().collect::<Vec<_>>() == ids);
            (!same).then(|| SumJob {
                tenant: key.0,
                start: key.1,
                days,
                hours,
                sources,
                old,
            })
        };
        let day_job = days.into_iter().find_map(|(key, sources)| {
            // A day not over is summed once it saves a read.
            if key.1 + DAY_MS > over && sources.len() < 2 {
                return None;
            }
            let old = summed.get(&key).cloned();
            job(key, (1, 0), sources, old)
        });
        if day_job.is_some() {
            return day_job;
        }
        // Weeks over, from their days' sums (once every day is summed).
        let week = i64::from(WEEK_DAYS) * DAY_MS;
        let mut weeks: BTreeMap<Key, Vec<Arc<Block>>> = BTreeMap::new();
        for ((tenant, _), b) in summed {
            let start = span_start(b.meta.min_ms, WEEK_DAYS);
            if start + week <= over && b.meta.files.contains_key(HOUR_TOTALS) {
                weeks.entry((tenant, start)).or_default().push(b);
            }
        }
        let week_job = weeks.into_iter().find_map(|(key, sources)| {
            if sources.len() < 2 {
                return None;
            }
            let old = weeks_summed.remove(&key);
            job(key, (WEEK_DAYS, 0), sources, old)
        });
        if week_job.is_some() {
            return week_job;
        }
        // Quarters over of two blocks or more: what a range starting
        // inside a day reads in place of up to 18 hourly blocks.
        quarters.into_iter().find_map(|(key, sources)| {
            if key.1 + quarter > over || sources.len() < 2 {
                return None;
            }
            let old = quarters_summed.remove(&key);
            job(key, (0, QUARTER_HOURS), sources, old)
        })
    }

    /// The blocks sum block `b` stands in for — its own, and those of the
    /// day sums a week sum names — with those day sums; `None` if one is
    /// not known, or if a sum nests deeper than a week's day sums (a
    /// `meta.json` that says otherwise is not trusted).
    fn stood_in_for<'a>(
        blocks: &'a BTreeMap<String, Arc<Block>>,
        b: &Block,
        out: &mut Vec<&'a Arc<Block>>,
    ) -> Option<()> {
        for id in &b.meta.sums_of {
            let s = blocks.get(id)?;
            out.push(s);
            for id in &s.meta.sums_of {
                let leaf = blocks.get(id)?;
                if !leaf.meta.sums_of.is_empty() {
                    return None;
                }
                out.push(leaf);
            }
        }
        Some(())
    }

    /// For a read of one service over `[from_ms, until_ms)`: the sum
    /// blocks of `tenant` to read in place of the blocks they stand for,
    /// and those blocks (week sums first, then day sums, the newest of a
    /// span first; one whose blocks are not all known, or that `only`
    /// refuses, is not used). A sum stands in when every block it stands
    /// for lies within the range's minutes (its rows all read, each
    /// block's hour sums would answer it whole: [`all_within`]).
    pub(crate) fn day_plan(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        only: &dyn Fn(&Block, bool) -> bool,
    ) -> (Vec<Arc<Block>>, HashSet<String>) {
        let mut days = Vec::new();
        let mut replaced = HashSet::new();
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let blocks = read(&self.blocks);
        let mut sums: Vec<&Arc<Block>> = blocks
            .values()
            .filter(|b| {
                !b.meta.sums_of.is_empty()
                    && b.meta.tenant == tenant
                    && all_within(b.meta.min_ms, b.meta.max_ms, lo, until_ms)
                    && only(b, false)
            })
            .collect();
        // Longer spans first (weeks, days, quarters), the newest sum of a
        // span first.
        sums.sort_by_key(|b| std::cmp::Reverse((b.meta.sum_span().1, b.meta.created_ms)));
        for d in sums {
            if replaced.contains(&d.meta.id) {
                continue;
            }
            let mut sources = Vec::new();
            if Self::stood_in_for(&blocks, d, &mut sources).is_none() {
                continue;
            }
            let within = |s: &Block| all_within(s.meta.min_ms, s.meta.max_ms, lo, until_ms);
            if sources
                .iter()
                .any(|s| replaced.contains(&s.meta.id) || !within(s) || !only(s, false))
            {
                continue;
            }
            let matched = sources
                .iter()
                .any(|s| s.meta.sums_of.is_empty() && !read(&s.part).matching(q).is_empty());
            replaced.extend(sources.iter().map(|s| s.meta.id.clone()));
            if matched {
                days.push(d.clone());
            }
        }
        (days, replaced)
    }
}
