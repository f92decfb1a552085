//! The view of the bucket: listing complete blocks, deleting one, loading
//! the view at start (each block's index only: the cache loads the rest
//! on demand), and refreshing the set of blocks (this server's and its
//! peers') that queries read.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::block::Level;
use crate::store::{Block, read, write};
use crate::{Error, Store, block};

/// Every complete block's meta in `storage`, those replaced by a
/// compaction left out.
pub(crate) async fn list_metas(storage: &dyn ObjectStore) -> Result<Vec<block::Meta>, Error> {
    let root = ObjPath::from(block::ROOT);
    let objects: Vec<_> =
        storage
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| Error::Block {
                block: block::ROOT.into(),
                reason: e.to_string(),
            })?;
    let mut metas = Vec::new();
    for o in objects {
        if o.location.filename() == Some("meta.json") {
            match block::read_meta(storage, &o.location).await {
                Ok(m) => metas.push(m),
                Err(e) => tracing::warn!(target: "kiln_store", "skipping a block: {e}"),
            }
        }
    }
    let replaced: HashSet<String> = metas.iter().flat_map(|m| m.sources.clone()).collect();
    metas.retain(|m| !replaced.contains(&m.id));
    Ok(metas)
}

/// Deletes every object of block `id` of `tenant`.
pub(crate) async fn delete_block(
    storage: &dyn ObjectStore,
    tenant: &str,
    id: &str,
) -> Result<(), Error> {
    let prefix = ObjPath::from(format!("{}/{id}", block::tenant_dir(tenant)));
    let objects: Vec<_> = storage
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Error::Block {
            block: id.into(),
            reason: e.to_string(),
        })?;
    // meta.json first: a half-deleted block is then an incomplete one.
    let mut paths: Vec<ObjPath> = objects.into_iter().map(|o| o.location).collect();
    paths.sort_by_key(|p| p.filename() != Some("meta.json"));
    for p in paths {
        storage.delete(&p).await.map_err(|e| Error::Block {
            block: id.into(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

impl Store {
    /// Ids of the blocks this server knows that another server wrote.
    pub fn peer_blocks(&self) -> HashSet<String> {
        read(&self.blocks)
            .values()
            .filter(|b| b.meta.server != self.server)
            .map(|b| b.meta.id.clone())
            .collect()
    }

    /// Looks at storage again: loads blocks other servers wrote since,
    /// forgets theirs that are gone (and those a compaction replaced).
    pub async fn refresh(&self) -> Result<(), Error> {
        let _busy = self.busy.lock().await;
        self.refresh_locked().await
    }

    pub(crate) async fn refresh_locked(&self) -> Result<(), Error> {
        if !self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let metas = list_metas(&*self.storage).await?;
        let present: HashSet<String> = metas.iter().map(|m| m.id.clone()).collect();
        let known: HashSet<String> = read(&self.blocks).keys().cloned().collect();
        let new: Vec<block::Meta> = metas
            .into_iter()
            .filter(|m| !known.contains(&m.id) && m.server != self.server)
            .collect();
        self.index_blocks(new).await?;
        write(&self.blocks).retain(|id, b| {
            let keep = b.meta.server == self.server || present.contains(id);
            if !keep {
                self.found.fetch_add(1, Ordering::Relaxed);
            }
            keep
        });
        *self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// Lists the blocks in storage and reads each one's index (series and
    /// labels; the cache loads symbols and rows when a query needs them),
    /// so queries see the whole history. Blocks this server left behind
    /// in a cut that did not complete are deleted: the log replayed at
    /// open holds their records. Does nothing once done. The server calls
    /// it in the background right after [`Store::open_lazy`], taking
    /// pushes meanwhile.
    pub async fn load_blocks(&self) -> Result<(), Error> {
        let _busy = self.busy.lock().await;
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let known: HashSet<String> = read(&self.blocks).keys().cloned().collect();
        let mut keep = Vec::new();
        for meta in list_metas(&*self.storage).await? {
            if known.contains(&meta.id) {
                continue;
            }
            if meta.server == self.server && meta.wal_cut > self.replayed_from {
                tracing::info!(target: "kiln_store", "removing unfinished block {}", meta.id);
                delete_block(&*self.storage, &meta.tenant, &meta.id).await?;
                continue;
            }
            keep.push(meta);
        }
        let n = keep.len();
        self.index_blocks(keep).await?;
        self.loaded.store(true, Ordering::Release);
        *self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        tracing::info!(target: "kiln_store", "{n} blocks in storage known");
        Ok(())
    }

    /// Reads the index of each block of `metas` (eight at a time) and adds
    /// it to the view.
    async fn index_blocks(&self, metas: Vec<block::Meta>) -> Result<(), Error> {
        let storage = self.storage.clone();
        let mut reads = futures::stream::iter(metas.into_iter().map(|meta| {
            let storage = storage.clone();
            async move {
                let part = block::read(&*storage, &meta, Level::Index).await?;
                Ok::<_, Error>((meta, part))
            }
        }))
        .buffer_unordered(8);
        while let Some(r) = reads.next().await {
            let (meta, part) = r?;
            self.found.fetch_add(1, Ordering::Relaxed);
            write(&self.blocks).insert(
                meta.id.clone(),
                Arc::new(Block::new(meta, part, Level::Index, None)),
            );
        }
        Ok(())
    }

    /// [`Store::refresh`] if the last look is older than `refresh_every`.
    pub async fn refresh_if_stale(&self) -> Result<(), Error> {
        let stale = self
            .last_refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|t| t.elapsed() >= self.opts.refresh_every);
        if stale { self.refresh().await } else { Ok(()) }
    }
}
