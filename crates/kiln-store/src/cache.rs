//! The block cache. Every known block keeps its index in memory (series,
//! labels, kinds: what plans a query); its symbol tables, hour sums and
//! rows are loaded from storage when a query needs them ([`Level`]),
//! pinned while the query reads them, and dropped least recently read
//! first once the blocks hold more than `cache_bytes`. Only the upkeep's
//! and the queries' own paths load; nothing here touches the head.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::block::{Level, ROLLUPS, TOTALS};
use crate::part::{Part, whole_hours};
use crate::store::{Block, read, write};
use crate::{BUCKET_MS, Error, Store, selector};

/// Blocks a query reads, each held at (at least) its level until this is
/// dropped.
pub(crate) struct Pins(Vec<(Arc<Block>, Level)>);

impl Pins {
    pub(crate) fn blocks(&self) -> &[(Arc<Block>, Level)] {
        &self.0
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for (b, _) in &self.0 {
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
}

/// The level block `b` must be at for `q` over `[from_ms, until_ms)`, or
/// `None` if it holds no series `q` selects.
fn level_for(
    b: &Block,
    q: &selector::Query,
    from_ms: i64,
    until_ms: i64,
    need: Need,
) -> Option<Level> {
    if read(&b.part).matching(q).is_empty() {
        return None;
    }
    if need == Need::Totals && b.meta.files.contains_key(TOTALS) {
        return Some(Level::Hours);
    }
    if need == Need::Merge
        && b.meta.files.contains_key(ROLLUPS)
        && Part::rollup_key_for(q).is_some()
    {
        // Every minute of the block lies in a whole hour of the range: the
        // service's hour sums answer it.
        let (first, end) = whole_hours(from_ms.div_euclid(BUCKET_MS) * BUCKET_MS, until_ms);
        if b.meta.min_ms >= first && b.meta.max_ms < end {
            return Some(Level::Hours);
        }
    }
    Some(Level::Full)
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
    ) -> Vec<(Arc<Block>, Level)> {
        let mut out: Vec<(Arc<Block>, Level)> = read(&self.frozen)
            .iter()
            .filter(|b| b.meta.tenant == tenant && only(b, true))
            .map(|b| (b.clone(), Level::Full))
            .collect();
        let blocks: Vec<Arc<Block>> = read(&self.blocks)
            .values()
            .filter(|b| b.overlaps(tenant, from_ms, until_ms) && only(b, false))
            .cloned()
            .collect();
        for b in blocks {
            if let Some(l) = level_for(&b, q, from_ms, until_ms, need) {
                out.push((b, l));
            }
        }
        out
    }

    /// Pins every block of `want` and loads those not at their level yet
    /// (four at a time).
    pub(crate) async fn pin(&self, want: &[(Arc<Block>, Level)]) -> Result<Pins, Error> {
        for (b, _) in want {
            b.pins.fetch_add(1, Ordering::AcqRel);
        }
        let pins = Pins(want.to_vec());
        let loads = want.iter().cloned().map(|(b, level)| async move {
            b.used.store(
                self.clock.fetch_add(1, Ordering::Relaxed) + 1,
                Ordering::Relaxed,
            );
            // Under the block's lock: a drop checks the pins under it too.
            let _one = b.loading.lock().await;
            if b.level() >= level {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let part = crate::block::read(&*self.storage, &b.meta, level).await?;
            b.bytes.store(part.bytes() as u64, Ordering::Relaxed);
            *write(&b.part) = part;
            b.level.store(level as u8, Ordering::Release);
            self.cache_loads.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Error>(())
        });
        let done: Vec<Result<(), Error>> = futures::stream::iter(loads)
            .buffer_unordered(4)
            .collect()
            .await;
        done.into_iter().collect::<Result<(), Error>>()?;
        Ok(pins)
    }

    /// Bytes the blocks hold beyond their indexes.
    pub(crate) fn cached_bytes(&self) -> u64 {
        read(&self.blocks)
            .values()
            .map(|b| b.bytes.load(Ordering::Relaxed))
            .sum()
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
            b.level.store(Level::Index as u8, Ordering::Release);
            total = total.saturating_sub(b.bytes.swap(0, Ordering::Relaxed));
            self.cache_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}
