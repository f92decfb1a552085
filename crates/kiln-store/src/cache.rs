//! The block cache. Every known block keeps its index in memory (series,
//! labels, kinds: what plans a query; a service's whole days are read from
//! day-sum blocks, see `days`); its symbol tables, hour sums and
//! minute totals are loaded from storage when a query needs them
//! ([`Level`]), and so are the row groups of the series a query reads
//! (ranged reads of `samples.parquet`; a service's minutes at a range's
//! edge are read for that query alone, [`Edges`]); all pinned while the
//! query reads them, and dropped least recently read first once the
//! blocks hold more than `cache_bytes`. Only the upkeep's and the
//! queries' own paths load; nothing here touches the head.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use crate::block::{Level, ROLLUPS, TOTALS};
use crate::part::{Part, all_within, whole_hours};
use crate::store::{Block, read, write};
use crate::{BUCKET_MS, Error, Store, selector};

/// What a read needs of one block: a level, and, beyond it, the rows of
/// these series (sorted ids; their row groups of `samples.parquet`).
/// With `edges` (a service's merge over `[lo, until)` that the block
/// straddles), only their rows in the range's minutes outside its whole
/// hours are wanted, read for the query alone unless the block holds the
/// series' rows already: a 7-day range's first hour reads its last
/// minutes, not every instance's hour.
#[derive(Clone)]
pub(crate) struct Want {
    pub level: Level,
    pub series: Option<Vec<u32>>,
    pub edges: Option<Edges>,
}

/// A merge of one service (its rollup `key`) over the minutes `[lo,
/// until)`, which a block straddles.
#[derive(Clone)]
pub(crate) struct Edges {
    pub key: (String, String),
    pub lo: i64,
    pub until: i64,
}

impl Want {
    pub(crate) fn level(level: Level) -> Want {
        Want {
            level,
            series: None,
            edges: None,
        }
    }
}

/// The row groups (by `ranges`) holding any of `series` (sorted).
fn groups_of(ranges: &[(u32, u32)], series: &[u32]) -> Vec<usize> {
    ranges
        .iter()
        .enumerate()
        .filter(|&(_, &(lo, hi))| {
            let i = series.partition_point(|&s| s < lo);
            series.get(i).is_some_and(|&s| s <= hi)
        })
        .map(|(i, _)| i)
        .collect()
}

impl Block {
    /// Whether the block holds what `want` needs now.
    pub(crate) fn has(&self, want: &Want) -> bool {
        let level = self.level();
        if level < want.level {
            return false;
        }
        match &want.series {
            None => true,
            Some(_) if level == Level::Full => true,
            Some(ids) => self.ranges.get().is_some_and(|r| {
                let loaded = self.groups.lock().unwrap_or_else(|e| e.into_inner());
                groups_of(r, ids)
                    .into_iter()
                    .all(|g| loaded.get(g).copied().unwrap_or(false))
            }),
        }
    }
}

/// Blocks a query reads, each holding what it wants until this is
/// dropped; beside each, the part its edge minutes were read into, if
/// they were read for the query alone.
pub(crate) struct Pins {
    blocks: Vec<(Arc<Block>, Want)>,
    edges: Vec<Option<RwLock<Part>>>,
}

impl Pins {
    pub(crate) fn blocks(&self) -> &[(Arc<Block>, Want)] {
        &self.blocks
    }

    /// Each block, what it is wanted for, and the part its edges were
    /// read into for the query alone, if they were (then that part is
    /// what the query reads of the block).
    pub(crate) fn parts(
        &self,
    ) -> impl Iterator<Item = (&Arc<Block>, &Want, Option<&RwLock<Part>>)> {
        self.blocks
            .iter()
            .zip(&self.edges)
            .map(|((b, w), e)| (b, w, e.as_ref()))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for (b, _) in &self.blocks {
            b.pins.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a read needs of a block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// A merge (flame graph, table, pprof): hour sums do when they cover it.
    Merge,
    /// Per-minute totals (a timeline): the minute totals, or every row
    /// of a block written before it had them.
    Totals,
    /// When each thread was seen ([`Store::observed`]): the rows of the
    /// series themselves, never a service's hour sums.
    Observe,
}

/// What block `b` must hold for `q` over `[from_ms, until_ms)`, or
/// `None` if it holds no series `q` selects.
fn want_for(
    b: &Block,
    q: &selector::Query,
    from_ms: i64,
    until_ms: i64,
    need: Need,
) -> Option<Want> {
    let mut ids = read(&b.part).matching(q);
    if ids.is_empty() {
        return None;
    }
    if need == Need::Totals && b.meta.files.contains_key(TOTALS) {
        return Some(Want::level(Level::Totals));
    }
    if !b.meta.files.contains_key(ROLLUPS) {
        // Written before blocks carried sums and totals: all of it.
        return Some(Want::level(Level::Full));
    }
    if need == Need::Merge
        && Part::rollup_key_for(q).is_some()
        && all_within(
            b.meta.min_ms,
            b.meta.max_ms,
            from_ms.div_euclid(BUCKET_MS) * BUCKET_MS,
            until_ms,
        )
    {
        // Every minute of the block is in the range: the service's hour
        // sums answer it.
        return Some(Want::level(Level::Hours));
    }
    ids.sort_unstable();
    let edges = Part::rollup_key_for(q)
        .filter(|_| need == Need::Merge)
        .map(|key| Edges {
            key,
            lo: from_ms.div_euclid(BUCKET_MS) * BUCKET_MS,
            until: until_ms,
        });
    Some(Want {
        level: Level::Hours,
        series: Some(ids),
        edges,
    })
}

impl Store {
    /// Waits until the blocks in storage at the start are known
    /// ([`Store::load_blocks`]); past `load_wait`, [`Error::Unavailable`]:
    /// an answer without them would be silently partial.
    pub async fn wait_loaded(&self) -> Result<(), Error> {
        let start = Instant::now();
        while !self.loaded.load(Ordering::Acquire) {
            if start.elapsed() >= self.opts.load_wait {
                return Err(Error::Unavailable {
                    reason: "the server is still reading the list of blocks in storage".into(),
                    retry_after: Duration::from_secs(1),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The cut heads and blocks of `tenant` that `q` reads over the
    /// range and `only` keeps (told whether the block is a cut head), with
    /// the level each needs.
    pub(crate) fn plan(
        &self,
        tenant: &str,
        q: &selector::Query,
        from_ms: i64,
        until_ms: i64,
        need: Need,
        only: impl Fn(&Block, bool) -> bool,
    ) -> Vec<(Arc<Block>, Want)> {
        let mut out: Vec<(Arc<Block>, Want)> = read(&self.frozen)
            .iter()
            .filter(|b| b.meta.tenant == tenant && only(b, true))
            .map(|b| (b.clone(), Want::level(Level::Full)))
            .collect();
        // A service's days whose blocks lie within the range's whole
        // hours (past days, and the current one so far): one day sum
        // each, in place of the day's blocks.
        let (days, replaced) = if need == Need::Merge && Part::rollup_key_for(q).is_some() {
            self.day_plan(tenant, q, from_ms, until_ms, &only)
        } else {
            Default::default()
        };
        out.extend(days.into_iter().map(|d| (d, Want::level(Level::Hours))));
        let blocks: Vec<Arc<Block>> = read(&self.blocks)
            .values()
            .filter(|b| {
                b.overlaps(tenant, from_ms, until_ms)
                    && !replaced.contains(&b.meta.id)
                    && only(b, false)
            })
            .cloned()
            .collect();
        for b in blocks {
            if let Some(w) = want_for(&b, q, from_ms, until_ms, need) {
                out.push((b, w));
            }
        }
        out
    }

    /// Pins every block of `want` and loads what each lacks (four at a
    /// time): its level, then the row groups of the series it wants.
    pub(crate) async fn pin(&self, want: &[(Arc<Block>, Want)]) -> Result<Pins, Error> {
        for (b, _) in want {
            b.pins.fetch_add(1, Ordering::AcqRel);
        }
        let mut pins = Pins {
            blocks: want.to_vec(),
            edges: Vec::new(),
        };
        let loads = want.iter().cloned().map(|(b, w)| async move {
            b.used.store(
                self.clock.fetch_add(1, Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            // Under the block's lock: a drop checks the pins under it too.
            let _one = b.loading.lock().await;
            if b.has(&w) {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            let t0 = Instant::now();
            if b.level() < w.level {
                let part = crate::block::read(&*self.storage, &b.meta, w.level).await?;
                b.bytes.store(part.bytes() as u64, Ordering::Relaxed);
                *write(&b.part) = part;
                b.level.store(w.level as u8, Ordering::Release);
                self.cache_loads.fetch_add(1, Ordering::Relaxed);
            }
            let mut edge = None;
            if let Some(ids) = &w.series
                && !b.has(&w)
            {
                edge = match &w.edges {
                    Some(e) => Some(self.read_edges(&b, ids, e).await?),
                    None => {
                        self.load_groups(&b, ids).await?;
                        None
                    }
                };
            }
            tracing::debug!(target: "kiln_store", block = %b.meta.id, level = w.level as u8,
                series = w.series.as_ref().map_or(0, Vec::len), edges = edge.is_some(),
                ms = t0.elapsed().as_millis() as u64, "loaded");
            Ok::<_, Error>(edge.map(RwLock::new))
        });
        pins.edges = futures::stream::iter(loads)
            .buffered(4)
            .try_collect()
            .await?;
        Ok(pins)
    }

    /// The row groups of `b`'s `series` as far as their rows lie in the
    /// minutes of `[lo, until)` outside its whole hours, read into a part
    /// of their own beside the block's symbols and those hours' sums
    /// ([`Part::edge_copy`]), for one query: the block keeps nothing of
    /// them, and what it held is unchanged.
    async fn read_edges(&self, b: &Arc<Block>, series: &[u32], e: &Edges) -> Result<Part, Error> {
        let ranges = self.group_ranges(b).await?;
        let (lo, until) = (e.lo, e.until);
        let (first, end) = whole_hours(lo, until);
        let keep = move |m: i64| m >= lo && m < until && !(m >= first && m < end);
        let rows = crate::block::read_groups(
            self.storage.clone(),
            &b.meta,
            groups_of(&ranges, series),
            Some(Box::new(keep)),
        )
        .await?;
        let (block, key) = (b.clone(), e.key.clone());
        tokio::task::spawn_blocking(move || {
            let mut edge = read(&block.part).edge_copy(&key, first, end);
            crate::block::put_samples(&block.meta.id, &mut edge, &rows)?;
            edge.seal();
            Ok::<_, Error>(edge)
        })
        .await
        .map_err(|e| Error::Block {
            block: b.meta.id.clone(),
            reason: e.to_string(),
        })?
    }

    /// The first and last series of each row group of `b`'s
    /// `samples.parquet`: read from its footer once.
    async fn group_ranges(&self, b: &Arc<Block>) -> Result<Vec<(u32, u32)>, Error> {
        Ok(match b.ranges.get() {
            Some(r) => r.clone(),
            None => {
                let r = crate::block::group_ranges(self.storage.clone(), &b.meta).await?;
                b.ranges.get_or_init(|| r).clone()
            }
        })
    }

    /// Reads into `b` (held under its loading lock) the row groups of
    /// `series` it lacks, by ranged reads of `samples.parquet`.
    async fn load_groups(&self, b: &Arc<Block>, series: &[u32]) -> Result<(), Error> {
        let ranges = self.group_ranges(b).await?;
        let missing: Vec<usize> = {
            let mut loaded = b.groups.lock().unwrap_or_else(|e| e.into_inner());
            loaded.resize(ranges.len(), false);
            groups_of(&ranges, series)
                .into_iter()
                .filter(|&g| !loaded[g])
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let rows =
            crate::block::read_groups(self.storage.clone(), &b.meta, missing.clone(), None).await?;
        let block = b.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let mut part = write(&block.part);
            crate::block::put_samples(&block.meta.id, &mut part, &rows)?;
            part.seal();
            Ok::<_, Error>(part.bytes())
        })
        .await
        .map_err(|e| Error::Block {
            block: b.meta.id.clone(),
            reason: e.to_string(),
        })??;
        b.bytes.store(bytes as u64, Ordering::Relaxed);
        let mut loaded = b.groups.lock().unwrap_or_else(|e| e.into_inner());
        for g in missing {
            loaded[g] = true;
        }
        self.cache_loads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops blocks back to their index, least recently read first, until
    /// they hold at most `cache_bytes` (blocks a query is reading stay).
    pub(crate) fn drop_over_cache(&self) {
        let cap = self.opts.cache_bytes as u64;
        let mut held: Vec<Arc<Block>> = read(&self.blocks)
            .values()
            .filter(|b| b.level() > Level::Index)
            .cloned()
            .collect();
        let mut total: u64 = held.iter().map(|b| b.bytes.load(Ordering::Relaxed)).sum();
        if total <= cap {
            return;
        }
        held.sort_by_key(|b| b.used.load(Ordering::Relaxed));
        for b in held {
            if total <= cap {
                break;
            }
            let Ok(_one) = b.loading.try_lock() else {
                continue;
            };
            if b.pins.load(Ordering::Acquire) > 0 {
                continue;
            }
            write(&b.part).evict();
            b.groups.lock().unwrap_or_else(|e| e.into_inner()).clear();
            b.level.store(Level::Index as u8, Ordering::Release);
            total = total.saturating_sub(b.bytes.swap(0, Ordering::Relaxed));
            self.cache_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}
