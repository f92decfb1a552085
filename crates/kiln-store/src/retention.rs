//! Retention: blocks past their tenant's retention deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::catalog::delete_block;
use crate::store::{Block, now_ms, read, write};
use crate::{Error, Store};

impl Store {
    /// Deletes this server's blocks whose newest data is older than their
    /// tenant's retention. Returns how many went.
    pub async fn expire(&self) -> Result<usize, Error> {
        let _busy = self.busy.lock().await;
        let now = now_ms();
        let keep = |tenant: &str| {
            self.opts
                .retention
                .get(tenant)
                .or_else(|| self.opts.retention.get(""))
                .map(|d| d.as_millis() as i64)
        };
        let old: Vec<Arc<Block>> = read(&self.blocks)
            .values()
            .filter(|b| {
                b.meta.server == self.server
                    && keep(&b.meta.tenant).is_some_and(|k| b.meta.max_ms < now - k)
            })
            .cloned()
            .collect();
        for b in &old {
            delete_block(&*self.storage, &b.meta.tenant, &b.meta.id).await?;
            write(&self.blocks).remove(&b.meta.id);
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        Ok(old.len())
    }
}
