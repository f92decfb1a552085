//! Reads: merging what a selector selects over the head, frozen heads and
//! blocks (loaded through the cache a step at a time, on blocking
//! threads); what this server has not flushed, for peers; when each
//! thread was seen; series totals,
//! label names and values, series and profile types (from the blocks'
//! indexes).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kiln_profile::{Merger, Profile};

use crate::cache::{Need, Pins, Want};
use crate::part::{Look, Part};
use crate::store::{Block, read, write};
use crate::{BUCKET_MS, Detail, Error, Observed, Read, Store, selector};

/// A read's query and range, owned, to take onto a blocking thread.
struct Ask {
    q: selector::Query,
    from_ms: i64,
    until_ms: i64,
    detail: Detail,
}

impl Ask {
    fn read(&self) -> Read<'_> {
        Read {
            q: &self.q,
            from_ms: self.from_ms,
            until_ms: self.until_ms,
            detail: self.detail,
        }
    }
}

/// A [`Store::observed`]'s question, owned, to take onto a blocking
/// thread.
struct LookAsk {
    q: selector::Query,
    from_ms: i64,
    until_ms: i64,
    by: String,
    keep: Vec<selector::Matcher>,
}

impl LookAsk {
    fn look(&self, p: &Part, out: &mut Observed) {
        p.observed(
            &Look {
                q: &self.q,
                from_ms: self.from_ms,
                until_ms: self.until_ms,
                by: &self.by,
                keep: &self.keep,
            },
            out,
        );
    }
}

/// What a read does with one stored part, adding to its state `S`.
type PerPart<S> = Arc<dyn Fn(&RwLock<Part>, &mut S) -> Result<(), Error> + Send + Sync>;

/// Runs `f` on a blocking thread: a query's CPU work stays off the async
/// threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Block {
            block: "a query".into(),
            reason: e.to_string(),
        })?
}

/// Blocks a read loads at once, and blocks loaded (waiting or being
/// read) at most: a query holds at most their sum beyond the cache.
const LOADS_AT_ONCE: usize = 4;
const LOADED_AHEAD: usize = 8;

/// Runs `f` over the blocks of `pinned`, in order, on a blocking thread;
/// each block is recounted after (a read may add to what it holds: whole
/// hours summed on first read, counted against the cache).
async fn read_pinned<S: Send + 'static>(
    pinned: Vec<Pins>,
    mut state: S,
    f: PerPart<S>,
) -> Result<S, Error> {
    blocking(move || {
        let t0 = std::time::Instant::now();
        let mut n = 0;
        for (b, want, edges) in pinned.iter().flat_map(Pins::parts) {
            n += 1;
            if let Some(edges) = edges {
                f(edges, &mut state)?;
                continue;
            }
            if !b.has(want) {
                return Err(Error::Block {
                    block: b.meta.id.clone(),
                    reason: "dropped from memory while pinned".into(),
                });
            }
            f(&b.part, &mut state)?;
            b.bytes
                .store(read(&b.part).bytes() as u64, Ordering::Relaxed);
        }
        tracing::debug!(target: "kiln_store", blocks = n,
            ms = t0.elapsed().as_millis() as u64, "read loaded blocks");
        Ok(state)
    })
    .await
}

impl Store {
    /// Runs `f` over every block of `plan` (a query's, or a day's to
    /// sum: `Store::sum_a_day`): first the blocks already in memory, then
    /// each other one as soon as it is loaded (and pinned), in the order
    /// loads end (a slow one, a range's edge read from rows, holds no
    /// other back), [`LOADS_AT_ONCE`] loading while others are read and
    /// at most [`LOADED_AHEAD`] loaded; each is released once read. So a
    /// query over more history than the cache holds stays within the
    /// cache and those few blocks, and storage and decoding overlap the
    /// merge from its first block.
    pub(crate) async fn over_blocks<S: Send + 'static>(
        &self,
        plan: Vec<(Arc<Block>, Want)>,
        state: S,
        f: PerPart<S>,
    ) -> Result<S, Error> {
        let (ready, rest): (Vec<_>, Vec<_>) = plan.into_iter().partition(|(b, w)| b.has(w));
        let mut waiting: VecDeque<Pins> = VecDeque::new();
        if !ready.is_empty() {
            waiting.push_back(self.pin(&ready).await?);
        }
        let mut loads = futures::stream::iter(rest)
            .map(|one| async move { self.pin(std::slice::from_ref(&one)).await })
            .buffer_unordered(LOADS_AT_ONCE);
        let mut loads_done = false;
        let mut state = Some(state);
        let mut reading = None;
        // Blocks pinned for the read under way.
        let mut read_n = 0;
        loop {
            if reading.is_none() && !waiting.is_empty() {
                let pinned: Vec<Pins> = waiting.drain(..).collect();
                read_n = pinned.iter().map(|p| p.blocks().len()).sum();
                let s = state.take().expect("the state is back once a read ends");
                reading = Some(Box::pin(read_pinned(pinned, s, f.clone())));
            }
            let Some(r) = reading.as_mut() else {
                if loads_done {
                    break;
                }
                // Nothing to read yet: wait for the next load.
                match loads.next().await {
                    Some(p) => waiting.push_back(p?),
                    None => loads_done = true,
                }
                continue;
            };
            tokio::select! {
                l = loads.next(), if !loads_done && waiting.len() + read_n < LOADED_AHEAD => match l {
                    Some(p) => waiting.push_back(p?),
                    None => loads_done = true,
                },
                done = r => {
                    state = Some(done?);
                    (reading, read_n) = (None, 0);
                    self.drop_over_cache();
                }
            }
        }
        Ok(state.expect("the state is back once every read ended"))
    }

    /// Every profile of tenant `tenant` matching `q` within
    /// `[from_ms, until_ms)`, reduced to the query's sample type (when it
    /// names one) and merged, keeping `detail`; `None` when nothing
    /// matches. Blocks not in memory are read from storage; the merge
    /// runs on blocking threads.
    pub async fn select(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
    ) -> Result<Option<Profile>, Error> {
        self.wait_loaded().await?;
        let t0 = std::time::Instant::now();
        let plan = self.plan(tenant, q, from_ms, until_ms, Need::Merge, |_, _| true);
        tracing::debug!(target: "kiln_store", blocks = plan.len(), "planned a merge");
        let out = self.merge(tenant, q, from_ms, until_ms, detail, plan).await;
        tracing::debug!(target: "kiln_store", ms = t0.elapsed().as_millis() as u64, "merged");
        out
    }

    /// The head of `tenant` and the parts of `plan`, merged.
    async fn merge(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
        plan: Vec<(Arc<Block>, Want)>,
    ) -> Result<Option<Profile>, Error> {
        let ask = Arc::new(Ask {
            q: q.clone(),
            from_ms,
            until_ms,
            detail,
        });
        let (me, t, a) = (self.clone(), tenant.to_string(), ask.clone());
        let m = blocking(move || {
            let mut m = Merger::new();
            me.head_into(&t, &a.read(), &mut m)?;
            Ok(m)
        })
        .await?;
        let a = ask.clone();
        let m = self
            .over_blocks(plan, m, Arc::new(move |p, m| read_part(p, &a.read(), m)))
            .await?;
        blocking(move || Ok((m.inputs() > 0).then(|| m.finish()))).await
    }

    pub(crate) fn head_into(&self, tenant: &str, at: &Read, m: &mut Merger) -> Result<(), Error> {
        // Fold what the range's buckets still hold unfolded (the open
        // minute's tail: rows are folded as they come, and a minute left
        // behind is packed), so this and later queries read one sorted run
        // per bucket. Whole hours are not summed here, under the lock
        // ingest takes: that is seconds for a busy hour; the upkeep sums
        // them off the lock ([`Store::sum_an_hour`]) and until then the
        // hour's minutes are read.
        if let Some(p) = write(&self.head).get_mut(tenant) {
            p.prepare(at.q, at.from_ms, at.until_ms, false);
        }
        if let Some(p) = read(&self.head).get(tenant) {
            p.read_into(at, m)?;
        }
        Ok(())
    }

    /// What only this server holds — its head, heads being cut, and blocks
    /// it flushed within `peer_grace` whose ids are not in `known` — of
    /// `q` over the range, merged: the answer to a peer's query.
    pub async fn select_head(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        detail: Detail,
        known: &HashSet<String>,
    ) -> Result<Option<Profile>, Error> {
        let grace = self.opts.peer_grace;
        let plan = self.plan(tenant, q, from_ms, until_ms, Need::Merge, |b, frozen| {
            !known.contains(&b.meta.id)
                && (frozen || b.flushed_at.is_some_and(|t| t.elapsed() < grace))
        });
        self.merge(tenant, q, from_ms, until_ms, detail, plan).await
    }

    /// When each group of sample label `by` (grouped as
    /// [`kiln_profile::group_by_label`] groups it) was seen in what `q`
    /// selects over `[from_ms, until_ms)`: the spans of the series'
    /// minutes holding a nonzero row of it that passes the sample matchers
    /// `keep` — the same rows [`Store::select`] merges, so a group's value
    /// over its time seen is its rate while it ran.
    pub async fn observed(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        by: &str,
        keep: &[selector::Matcher],
    ) -> Result<Observed, Error> {
        self.wait_loaded().await?;
        let plan = self.plan(tenant, q, from_ms, until_ms, Need::Observe, |_, _| true);
        self.observe(tenant, q, from_ms, until_ms, by, keep, plan)
            .await
    }

    /// [`Store::observed`] of what only this server holds, as
    /// [`Store::select_head`] answers it: the answer to a peer.
    #[allow(clippy::too_many_arguments)]
    pub async fn observed_head(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        by: &str,
        keep: &[selector::Matcher],
        known: &HashSet<String>,
    ) -> Result<Observed, Error> {
        let grace = self.opts.peer_grace;
        let plan = self.plan(tenant, q, from_ms, until_ms, Need::Observe, |b, frozen| {
            !known.contains(&b.meta.id)
                && (frozen || b.flushed_at.is_some_and(|t| t.elapsed() < grace))
        });
        self.observe(tenant, q, from_ms, until_ms, by, keep, plan)
            .await
    }

    /// The head of `tenant` and the parts of `plan`, looked at for
    /// [`Store::observed`].
    #[allow(clippy::too_many_arguments)]
    async fn observe(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        by: &str,
        keep: &[selector::Matcher],
        plan: Vec<(Arc<Block>, Want)>,
    ) -> Result<Observed, Error> {
        let ask = Arc::new(LookAsk {
            q: q.clone(),
            from_ms,
            until_ms,
            by: by.to_string(),
            keep: keep.to_vec(),
        });
        let (me, t, a) = (self.clone(), tenant.to_string(), ask.clone());
        let out = blocking(move || {
            let mut out = Observed::default();
            if let Some(p) = read(&me.head).get(&t) {
                a.look(p, &mut out);
            }
            Ok(out)
        })
        .await?;
        self.over_blocks(
            plan,
            out,
            Arc::new(move |p, out| {
                ask.look(&read(p), out);
                Ok(())
            }),
        )
        .await
    }

    /// How long data of the series matching `q` came in each minute of
    /// `[from_ms, until_ms)` (minute start in ms → ns): the span its
    /// profiles cover ([`Part::coverage`]) up to the minute — windows of
    /// one or many instances, at any offset, filling a minute count as
    /// that minute. A gauge's mean divides by this, so a range with gaps,
    /// or a minute an instance started in, means what was held while data
    /// came.
    pub async fn coverage(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<BTreeMap<i64, i64>, Error> {
        self.wait_loaded().await?;
        let (me, t, q2) = (self.clone(), tenant.to_string(), q.clone());
        let out = blocking(move || {
            let mut out = BTreeMap::new();
            if let Some(p) = read(&me.head).get(&t) {
                p.coverage(&q2, from_ms, until_ms, &mut out);
            }
            Ok(out)
        })
        .await?;
        let q = q.clone();
        let plan = self.plan(tenant, &q, from_ms, until_ms, Need::Totals, |_, _| true);
        let out = self
            .over_blocks(
                plan,
                out,
                Arc::new(move |p, out| {
                    read(p).coverage(&q, from_ms, until_ms, out);
                    Ok(())
                }),
            )
            .await?;
        let minute = BUCKET_MS * 1_000_000;
        Ok(out
            .into_iter()
            .map(|(m, (a, b))| (m, b.saturating_sub(a).clamp(0, minute)))
            .collect())
    }

    /// Per bucket (start ms) within the range, the total of the query's
    /// sample type, for each value of `group_by` (or one line, `""`).
    pub async fn series_totals(
        self: &Arc<Self>,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        group_by: Option<&str>,
    ) -> Result<BTreeMap<String, BTreeMap<i64, i64>>, Error> {
        self.wait_loaded().await?;
        let (q, g) = (q.clone(), group_by.map(str::to_string));
        let (me, t, q2, g2) = (self.clone(), tenant.to_string(), q.clone(), g.clone());
        let out = blocking(move || {
            let mut out = BTreeMap::new();
            if let Some(p) = read(&me.head).get(&t) {
                p.totals(&q2, from_ms, until_ms, g2.as_deref(), &mut out);
            }
            Ok(out)
        })
        .await?;
        // A service's days within the range's whole hours: the day sums'
        // hour totals, in place of the minute totals of their blocks, once
        // the range holds a whole day (the caller's steps are then hours
        // or longer: `Store::totals_step`).
        let hourly = Store::totals_step(from_ms, until_ms) >= crate::HOUR_MS;
        let (days, replaced) = if g.is_none() && hourly && Part::rollup_key_for(&q).is_some() {
            // Day sums written before they kept hour totals are passed by.
            let with_hours = |b: &Block, _| {
                b.meta.sums_of.is_empty() || b.meta.files.contains_key(crate::block::HOUR_TOTALS)
            };
            self.day_plan(tenant, &q, from_ms, until_ms, &with_hours)
        } else {
            Default::default()
        };
        let days: Vec<_> = days
            .into_iter()
            .map(|d| (d, Want::level(crate::block::Level::Totals)))
            .collect();
        let q1 = q.clone();
        let out = self
            .over_blocks(
                days,
                out,
                Arc::new(move |p, out| {
                    read(p).rollup_hour_totals(&q1, from_ms, until_ms, out);
                    Ok(())
                }),
            )
            .await?;
        let plan = self.plan(tenant, &q, from_ms, until_ms, Need::Totals, |b, _| {
            !replaced.contains(&b.meta.id)
        });
        self.over_blocks(
            plan,
            out,
            Arc::new(move |p, out| {
                read(p).totals(&q, from_ms, until_ms, g.as_deref(), out);
                Ok(())
            }),
        )
        .await
    }

    /// The step a timeline of `[from_ms, until_ms)` is drawn in: the
    /// shortest of 1 and 5 minutes, a quarter hour, 1 and 6 hours and a
    /// day that gives at most 1,500 points — and at least an hour once the
    /// range holds a whole day, whose totals may come from its day sum.
    pub fn totals_step(from_ms: i64, until_ms: i64) -> i64 {
        const STEPS: [i64; 6] = [1, 5, 15, 60, 360, 1440];
        let span = until_ms.saturating_sub(from_ms).max(0);
        let lo = from_ms.div_euclid(BUCKET_MS) * BUCKET_MS;
        let day = crate::DAY_MS;
        let whole_day = (lo + day - 1).div_euclid(day) * day + day <= until_ms;
        STEPS
            .iter()
            .map(|m| m * BUCKET_MS)
            .filter(|&s| !whole_day || s >= crate::HOUR_MS)
            .find(|&s| span / s <= 1500)
            .unwrap_or(day)
    }

    /// Calls `f` with every part of `tenant`: head, cut heads, blocks.
    pub(crate) fn each_part(&self, tenant: &str, mut f: impl FnMut(&Part)) {
        if let Some(p) = read(&self.head).get(tenant) {
            f(p);
        }
        for b in read(&self.frozen)
            .iter()
            .filter(|b| b.meta.tenant == tenant)
        {
            f(&read(&b.part));
        }
        let blocks: Vec<Arc<Block>> = read(&self.blocks)
            .values()
            .filter(|b| b.meta.tenant == tenant)
            .cloned()
            .collect();
        for b in blocks {
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
    // A stored part takes no ingest: its hours are summed here if the
    // upkeep has not yet (blocks written before they carried their sums).
    write(part).prepare(at.q, at.from_ms, at.until_ms, true);
    read(part).read_into(at, m)
}

#[cfg(test)]
mod step_tests {
    use crate::{BUCKET_MS, DAY_MS, HOUR_MS, Store};

    #[test]
    fn timeline_steps_keep_points_few_and_hours_once_a_day_is_whole() {
        let t0 = 20_000 * DAY_MS + 7 * HOUR_MS + 13 * BUCKET_MS;
        assert_eq!(Store::totals_step(t0, t0 + HOUR_MS), BUCKET_MS);
        assert_eq!(
            Store::totals_step(t0, t0 + DAY_MS),
            BUCKET_MS,
            "1,440 minutes"
        );
        assert_eq!(
            Store::totals_step(t0, t0 + 2 * DAY_MS),
            HOUR_MS,
            "holds a whole day"
        );
        assert_eq!(
            Store::totals_step(t0, t0 + 3 * HOUR_MS + DAY_MS),
            5 * BUCKET_MS
        );
        assert_eq!(
            Store::totals_step(t0, t0 + 30 * DAY_MS),
            HOUR_MS,
            "720 hours"
        );
        assert_eq!(Store::totals_step(t0, t0 + 400 * DAY_MS), DAY_MS);
        assert_eq!(Store::totals_step(t0, t0), BUCKET_MS);
    }
}
