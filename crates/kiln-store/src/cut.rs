//! Cutting the head: the log starts a new segment, the old head is frozen
//! and written as one block per tenant, and the segments it covered are
//! removed once every block is in storage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::block::Level;
use crate::part::Part;
use crate::store::{Block, now_ms, read, write, write_durably};
use crate::{Error, Store, block};

impl Store {
    /// The meta of a level-0 block `id` of this server holding `part`;
    /// counts, kinds and files are filled in when it is encoded.
    pub(crate) fn meta(
        &self,
        id: String,
        tenant: String,
        part: &Part,
        wal_cut: u64,
    ) -> block::Meta {
        block::Meta {
            version: block::VERSION,
            id,
            tenant,
            server: self.server.clone(),
            created_ms: now_ms(),
            min_ms: part.min_ms,
            max_ms: part.max_ms,
            level: 0,
            sources: Vec::new(),
            sums_of: Vec::new(),
            sums_days: 0,
            sums_hours: 0,
            wal_cut,
            series: 0,
            rows: 0,
            profiles: 0,
            samples: 0,
            kinds: Vec::new(),
            files: BTreeMap::new(),
        }
    }

    pub(crate) fn block_id(&self, min_ms: i64) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{:013}-{}-{:013}-{n}", min_ms.max(0), self.server, now_ms())
    }

    /// Cuts the head: writes it as one block per tenant, then removes the
    /// log it covered. Returns the ids written. Heads cut earlier whose
    /// upload failed are uploaded first; while that fails the head is not
    /// cut again (so memory waiting for storage stays one cut), the error
    /// is returned and the next attempt waits out a backoff.
    pub async fn flush(&self) -> Result<Vec<String>, Error> {
        let r = self.cut_and_upload().await;
        let (head, pending) = self.measure_held();
        self.held.store(head + pending, Ordering::Relaxed);
        r
    }

    async fn cut_and_upload(&self) -> Result<Vec<String>, Error> {
        let _busy = self.busy.lock().await;
        let mut ids = self.upload_pending().await?;
        let (parts, cut) = {
            let _gate = self.gate.write().await;
            let cut = self.wal.rotate().await?;
            (std::mem::take(&mut *write(&self.head)), cut)
        };
        *self.last_cut.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        for (tenant, part) in parts {
            if part.profiles == 0 {
                continue;
            }
            let id = self.block_id(part.min_ms);
            let meta = self.meta(id, tenant, &part, cut);
            write(&self.frozen).push(Arc::new(Block::new(meta, part, Level::Full, None)));
        }
        if read(&self.frozen).is_empty() {
            // Nothing to write: the log below the cut holds nothing either.
            write_durably(&self.dir.join("flushed"), cut.to_string().as_bytes())?;
            self.wal.truncate_below(cut)?;
            self.flushes.fetch_add(1, Ordering::Relaxed);
            return Ok(ids);
        }
        ids.extend(self.upload_pending().await?);
        Ok(ids)
    }

    /// Writes every cut head waiting for storage; once all are in, records
    /// the newest cut as flushed and drops the log below it. On failure
    /// the heads stay queryable and in the log, and the next attempt is
    /// put off (1 s, doubling to 60 s).
    async fn upload_pending(&self) -> Result<Vec<String>, Error> {
        let pending: Vec<Arc<Block>> = read(&self.frozen).clone();
        let Some(cut) = pending.iter().map(|b| b.meta.wal_cut).max() else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        for b in &pending {
            // Encoding Parquet is CPU work: off the async threads.
            let block = b.clone();
            let encoded = tokio::task::spawn_blocking(move || {
                {
                    // Every hour summed: the block's hour sums are complete.
                    let mut p = write(&block.part);
                    p.seal();
                    p.sum_all_hours();
                }
                let mut meta = block.meta.clone();
                let part = read(&block.part);
                let (files, kinds) = block::encode(&meta.id, &part)?;
                block::fill_meta(&mut meta, &part, kinds, &files);
                Ok::<_, Error>((meta, files))
            })
            .await
            .unwrap_or_else(|e| {
                Err(Error::Block {
                    block: b.meta.id.clone(),
                    reason: format!("encoding: {e}"),
                })
            });
            let (meta, result) = match encoded {
                Ok((meta, files)) => {
                    let r = block::upload(&*self.storage, &meta, files).await;
                    (meta, r)
                }
                Err(e) => (b.meta.clone(), Err(e)),
            };
            if let Err(e) = result {
                self.flush_errors.fetch_add(1, Ordering::Relaxed);
                let mut retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
                let delay = retry.map_or(Duration::from_secs(1), |(_, d)| {
                    (d * 2).min(Duration::from_secs(60))
                });
                *retry = Some((Instant::now() + delay, delay));
                tracing::error!(
                    target: "kiln_store",
                    "writing block {}: {e} (next attempt in {}s)",
                    meta.id,
                    delay.as_secs()
                );
                return Err(e);
            }
            done.push((b.clone(), meta));
        }
        *self.retry.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Every cut head is in storage: the log below the cut can go.
        write_durably(&self.dir.join("flushed"), cut.to_string().as_bytes())?;
        {
            let mut blocks = write(&self.blocks);
            let mut frozen = write(&self.frozen);
            for (b, meta) in &done {
                let part = std::mem::take(&mut *write(&b.part));
                blocks.insert(
                    meta.id.clone(),
                    Arc::new(Block::new(
                        meta.clone(),
                        part,
                        Level::Full,
                        Some(Instant::now()),
                    )),
                );
                frozen.retain(|f| !Arc::ptr_eq(f, b));
            }
        }
        self.wal.truncate_below(cut)?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.drop_over_cache();
        Ok(done.into_iter().map(|(_, m)| m.id).collect())
    }
}
