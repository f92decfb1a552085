//! Whole hours of the head summed ahead of queries, so a long range reads
//! one sum per hour.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Store;
use crate::store::{Block, now_ms, read, write};

impl Store {
    /// Sums one whole hour of a service's rollup that is over and not
    /// summed yet, in a block or in the head (there once no rows arrived
    /// for it for `quiet_before_sum`): what a query over that hour would
    /// otherwise do first, for seconds. The minutes are copied under the
    /// lock and summed without it, so ingest and queries go on meanwhile.
    /// Returns whether there was one. The server calls it from its
    /// upkeep, off the async threads.
    pub fn sum_an_hour(&self) -> bool {
        let before = now_ms();
        let blocks: Vec<Arc<Block>> = read(&self.blocks).values().cloned().collect();
        for b in blocks {
            let job = read(&b.part).unsummed_hour(before, Duration::ZERO);
            if let Some(job) = job {
                let sum = job.sum();
                if write(&b.part).put_hour(job, sum) {
                    self.hours_summed.fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        let tenants: Vec<String> = read(&self.head).keys().cloned().collect();
        for t in tenants {
            let job = read(&self.head)
                .get(&t)
                .and_then(|p| p.unsummed_hour(before, self.opts.quiet_before_sum));
            if let Some(job) = job {
                let sum = job.sum();
                if let Some(p) = write(&self.head).get_mut(&t)
                    && p.put_hour(job, sum)
                {
                    self.hours_summed.fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        false
    }
}
