//! Compaction: the blocks of one finished hour merged into one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::block::Level;
use crate::catalog::delete_block;
use crate::part::Part;
use crate::store::{Block, now_ms, read, write};
use crate::{Error, HOUR_MS, Store, block};

impl Store {
    /// Encodes `part` as the block `meta` names (off the async threads),
    /// fills in the meta and uploads it; gives both back.
    pub(crate) async fn write_block(
        &self,
        mut meta: block::Meta,
        part: Part,
    ) -> Result<(block::Meta, Part), Error> {
        let id = meta.id.clone();
        let (meta, files, part) = tokio::task::spawn_blocking(move || {
            let (files, kinds) = block::encode(&meta.id, &part)?;
            block::fill_meta(&mut meta, &part, kinds, &files);
            Ok::<_, Error>((meta, files, part))
        })
        .await
        .map_err(|e| Error::Block {
            block: id,
            reason: e.to_string(),
        })??;
        block::upload(&*self.storage, &meta, files).await?;
        Ok((meta, part))
    }

    /// Compacts this server's level-0 blocks of each tenant and hour that
    /// is over into one block per tenant and hour. Returns the new ids.
    pub async fn compact(&self) -> Result<Vec<String>, Error> {
        let _busy = self.busy.lock().await;
        let hour_over =
            (now_ms() - self.opts.flush_every.as_millis() as i64).div_euclid(HOUR_MS) * HOUR_MS;
        let mut groups: BTreeMap<(String, i64), Vec<Arc<Block>>> = BTreeMap::new();
        for b in read(&self.blocks).values() {
            let m = &b.meta;
            let hour = m.min_ms.div_euclid(HOUR_MS) * HOUR_MS;
            if m.server == self.server
                && m.level == 0
                && m.sums_of.is_empty()
                && m.max_ms < hour + HOUR_MS
                && hour + HOUR_MS <= hour_over
            {
                groups
                    .entry((m.tenant.clone(), hour))
                    .or_default()
                    .push(b.clone());
            }
        }
        let mut out = Vec::new();
        for ((tenant, hour), sources) in groups {
            if sources.len() < 2 {
                continue;
            }
            // Every row of the sources, from storage if the cache dropped
            // them; held until the compacted block replaces them.
            let want: Vec<(Arc<Block>, crate::cache::Want)> = sources
                .iter()
                .map(|s| (s.clone(), crate::cache::Want::level(Level::Full)))
                .collect();
            let pins = self.pin(&want).await?;
            // Merging the hour and encoding it are CPU work: off the async
            // threads.
            let part = tokio::task::spawn_blocking(move || {
                let mut part = Part::default();
                for (s, _) in pins.blocks() {
                    part.absorb(&read(&s.part))?;
                }
                part.seal();
                part.sum_all_hours();
                Ok::<_, Error>(part)
            })
            .await
            .map_err(|e| Error::Block {
                block: format!("compaction of {tenant} at {hour}"),
                reason: e.to_string(),
            })??;
            let mut meta = self.meta(
                self.block_id(hour),
                tenant.clone(),
                &part,
                sources.iter().map(|s| s.meta.wal_cut).max().unwrap_or(0),
            );
            meta.level = sources.iter().map(|s| s.meta.level).max().unwrap_or(0) + 1;
            meta.sources = sources.iter().map(|s| s.meta.id.clone()).collect();
            let (meta, part) = self.write_block(meta, part).await?;
            {
                let mut blocks = write(&self.blocks);
                for s in &sources {
                    blocks.remove(&s.meta.id);
                }
                blocks.insert(
                    meta.id.clone(),
                    Arc::new(Block::new(
                        meta.clone(),
                        part,
                        Level::Full,
                        Some(Instant::now()),
                    )),
                );
            }
            self.drop_over_cache();
            // The new block names its sources, so readers skip them even
            // if deleting them fails here.
            for s in &sources {
                if let Err(e) = delete_block(&*self.storage, &s.meta.tenant, &s.meta.id).await {
                    tracing::warn!(target: "kiln_store", "deleting compacted block: {e}");
                }
            }
            self.compactions.fetch_add(1, Ordering::Relaxed);
            out.push(meta.id);
        }
        Ok(out)
    }
}
