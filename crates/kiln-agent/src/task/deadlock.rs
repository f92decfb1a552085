//! Deadlocks among [`crate::sync`] locks: every second the sampler thread
//! reads which threads wait on which lock and which thread last took
//! each ([`crate::sys::contention::waits`]), follows waiter → holder →
//! the lock that holder waits on …, and a path that comes back to where
//! it started is a cycle. A cycle seen in two checks in a row with the
//! same waits (a deadlock does not move; a passing convoy does) is
//! reported once: every thread in it has its stack taken and becomes a
//! `"deadlock"` event naming the lock it waits for, the lock it holds and
//! the cycle's threads. Locks taken for reading (a `RwLock`'s readers)
//! and `lock_api` raw mutexes name no holder and close no cycle.
//!
//! A holder that is not itself waiting on a lock, while another thread
//! has waited on its lock for [`STALLED_AFTER`] (or the agent's
//! `.watchdog(d)` when set), and that made no CPU progress and no
//! context switch over that time (its `schedstat` and switch counts did
//! not move: blocked in a system call, or stopped), is stuck outside any
//! task: its stack is taken and it becomes a `"stuck"` event with the
//! lock it `holds` and no task.

use std::collections::{HashMap, HashSet};

pub(crate) use crate::sys::contention::{Wait, waits};

/// Longest cycle followed.
const MAX_CYCLE: usize = 64;
/// How long a holder must stall, with a thread waiting on its lock, to be
/// reported (without `.watchdog(d)`).
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// A holder's counters as first seen unchanged, and since when (ns).
type Stall = (crate::threads::Counts, u64);

/// The checks' memory: the last check's waits, and the cycles reported.
#[derive(Default)]
pub(crate) struct Detector {
    last: HashSet<(u32, u64)>,
    reported: HashSet<Vec<(u32, u64)>>,
    /// Holders of waited-on locks: their counters, unchanged since when.
    stalls: HashMap<u32, Stall>,
    /// (holder, the wait) already reported as stalled.
    stalled_reported: HashSet<(u32, u64)>,
}

/// A holder that made no progress while a thread waited on its lock.
#[derive(Clone, Debug)]
pub struct StallCapture {
    /// When it was found, ms since the epoch.
    pub time_ms: u64,
    /// The stalled holder.
    pub tid: u32,
    /// How long it made no progress, ns.
    pub stalled_ns: u64,
    /// The wait on its lock.
    pub wait: Wait,
    /// Its stack.
    pub ips: Vec<u64>,
}

/// A cycle's threads with their stacks, before symbolization.
#[derive(Clone, Debug)]
pub struct DeadlockCapture {
    /// When it was found, ms since the epoch.
    pub time_ms: u64,
    /// How long each thread had waited, ns, its wait, and its stack.
    pub threads: Vec<(u64, Wait, Vec<u64>)>,
}

impl Detector {
    /// The cycles found now that were there at the last check too and
    /// were not reported yet, each with its threads' stacks.
    pub(crate) fn check(&mut self, now_ns: u64, all: &[Wait]) -> Vec<DeadlockCapture> {
        let now: HashSet<(u32, u64)> = all.iter().map(|w| (w.tid, w.seq)).collect();
        let by_tid: HashMap<u32, Wait> = all.iter().map(|w| (w.tid, *w)).collect();
        let mut out = Vec::new();
        let mut seen_cycles = HashSet::new();
        for w in all {
            let Some(cycle) = cycle_from(w, &by_tid) else {
                continue;
            };
            let mut key: Vec<(u32, u64)> = cycle.iter().map(|c| (c.tid, c.seq)).collect();
            key.sort_unstable();
            if !seen_cycles.insert(key.clone())
                || self.reported.contains(&key)
                || !key.iter().all(|k| self.last.contains(k))
            {
                continue;
            }
            let Ok(shared) = crate::sys::shared() else {
                continue;
            };
            let threads = cycle
                .iter()
                .map(|c| {
                    let ips = crate::sys::thread_stack(
                        shared,
                        c.tid,
                        std::time::Duration::from_millis(200),
                    )
                    .map(|(ips, _)| ips)
                    .unwrap_or_default();
                    (now_ns.saturating_sub(c.since_ns), *c, ips)
                })
                .collect();
            self.reported.insert(key);
            out.push(DeadlockCapture {
                time_ms: crate::session::now_ms(),
                threads,
            });
        }
        // Cycles no longer there can be reported again if they come back.
        self.reported.retain(|k| k.iter().all(|e| now.contains(e)));
        self.last = now;
        out
    }

    /// Holders not waiting themselves whose counters have not moved for
    /// `after` while a thread waited on their lock at least that long.
    pub(crate) fn stalled(
        &mut self,
        now_ns: u64,
        after: std::time::Duration,
        all: &[Wait],
    ) -> Vec<StallCapture> {
        let waiting: HashSet<u32> = all.iter().map(|w| w.tid).collect();
        let after_ns = after.as_nanos().min(u64::MAX as u128) as u64;
        let mut out = Vec::new();
        let mut held: HashMap<u32, Wait> = HashMap::new();
        for w in all {
            if w.holder != 0 && w.holder != w.tid && !waiting.contains(&w.holder) {
                // The longest wait on each holder's locks.
                let e = held.entry(w.holder).or_insert(*w);
                if w.since_ns < e.since_ns {
                    *e = *w;
                }
            }
        }
        self.stalls.retain(|h, _| held.contains_key(h));
        self.stalled_reported
            .retain(|(h, seq)| held.get(h).is_some_and(|w| w.seq == *seq));
        for (&h, w) in &held {
            let Some(counts) = crate::threads::read(h) else {
                continue;
            };
            let e = self.stalls.entry(h).or_insert((counts, now_ns));
            if e.0 != counts {
                *e = (counts, now_ns);
                continue;
            }
            let stalled = now_ns.saturating_sub(e.1);
            let waited = now_ns.saturating_sub(w.since_ns);
            if stalled < after_ns
                || waited < after_ns
                || self.stalled_reported.contains(&(h, w.seq))
            {
                continue;
            }
            let Ok(shared) = crate::sys::shared() else {
                continue;
            };
            let ips = crate::sys::thread_stack(shared, h, std::time::Duration::from_millis(200))
                .map(|(ips, _)| ips)
                .unwrap_or_default();
            self.stalled_reported.insert((h, w.seq));
            out.push(StallCapture {
                time_ms: crate::session::now_ms(),
                tid: h,
                stalled_ns: stalled,
                wait: *w,
                ips,
            });
        }
        out
    }
}

/// The cycle through `start`, if following holders from it comes back to
/// it: its waits, `start` first, each waiting on a lock the next holds.
fn cycle_from(start: &Wait, by_tid: &HashMap<u32, Wait>) -> Option<Vec<Wait>> {
    let mut path = vec![*start];
    let mut cur = *start;
    while path.len() <= MAX_CYCLE {
        if cur.holder == 0 || cur.holder == cur.tid {
            return None;
        }
        let next = by_tid.get(&cur.holder)?;
        if next.tid == start.tid {
            return Some(path);
        }
        if path.iter().any(|p| p.tid == next.tid) {
            return None;
        }
        path.push(*next);
        cur = *next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::contention::Site;

    fn w(tid: u32, holder: u32) -> Wait {
        Wait {
            tid,
            lock: tid as usize * 8,
            holder,
            site: Site::Anon,
            since_ns: 0,
            seq: u64::from(tid),
        }
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let ws = [w(1, 2), w(2, 3), w(3, 1), w(4, 1), w(5, 6)];
        let by: HashMap<u32, Wait> = ws.iter().map(|w| (w.tid, *w)).collect();
        let c = cycle_from(&ws[0], &by).unwrap();
        assert_eq!(c.iter().map(|w| w.tid).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(
            cycle_from(&ws[3], &by).is_none(),
            "4 waits on the cycle but is not in it"
        );
        assert!(cycle_from(&ws[4], &by).is_none(), "6 is not waiting");
    }
}
