//! The lock profiler's recording path, behind [`crate::sync`]: a lock
//! that could not be taken at once times its wait and calls
//! [`contended`]. Every wait goes into its lock's histogram (for the
//! p50/p99 in `/metrics`); a wait of `w` ns is sampled with probability
//! `1 − e^(−w/R)`, `R` the mean wait between samples ([`RATE`]), and a
//! sample walks the waiter's stack into the lock ring for the sampler
//! thread, which weighs it `1 / (1 − e^(−w/R))` contentions and `w` times
//! that many nanoseconds: the totals are unbiased whatever the mix of
//! short and long waits. Nothing here allocates or takes a lock: the
//! histograms are a fixed table, the ring is preallocated.

use std::cell::Cell;
use std::panic::Location;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::ring::RawSample;
use super::{FORKED, gettid, installed, push_here};

/// Mean nanoseconds of waiting between samples; 0 while no agent
/// profiles locks.
pub static RATE: AtomicU64 = AtomicU64::new(0);
/// Contended acquisitions seen while an agent ran.
pub static CONTENDED: AtomicU64 = AtomicU64::new(0);
/// Of those, the ones sampled.
pub static SAMPLED: AtomicU64 = AtomicU64::new(0);

/// [`RawSample::kind`] of a wait on a lock made with `named`.
pub const KIND_NAMED: u8 = 3;
/// Of a wait on a lock known by its creation site.
pub const KIND_AT: u8 = 4;
/// Of a wait on a lock that has neither (a `lock_api` raw mutex): its
/// label is the function that waited.
pub const KIND_ANON: u8 = 5;

/// What a lock is called in profiles and metrics.
#[derive(Clone, Copy, Debug)]
pub enum Site {
    /// The name given to `named`.
    Named(&'static str),
    /// Where it was created.
    At(&'static Location<'static>),
    /// Nothing known (a `lock_api` raw mutex, created in a `const`).
    Anon,
}

impl Site {
    /// The `lock` label; `None` for [`Site::Anon`] (the waiter's function
    /// names it).
    pub fn label(&self) -> Option<String> {
        match self {
            Site::Named(n) => Some((*n).to_string()),
            Site::At(l) => Some(format!("{}:{}", l.file(), l.line())),
            Site::Anon => None,
        }
    }

    /// The site as a kind, a pointer and a length, for a ring slot.
    fn raw(self) -> (u8, u64, u32) {
        match self {
            Site::Named(n) => (KIND_NAMED, n.as_ptr() as u64, n.len() as u32),
            Site::At(l) => (KIND_AT, l as *const Location<'static> as u64, 0),
            Site::Anon => (KIND_ANON, 0, 0),
        }
    }

    /// The site a ring slot or a histogram holds.
    pub(crate) fn from_raw(kind: u8, addr: u64, len: u32) -> Site {
        match kind {
            // SAFETY: only `raw` writes these fields, from a `&'static
            // str` (pointer and length) or a `&'static Location`; both
            // live for the whole program.
            KIND_NAMED if addr != 0 => Site::Named(unsafe {
                std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                    addr as *const u8,
                    len as usize,
                ))
            }),
            // SAFETY: as above.
            KIND_AT if addr != 0 => Site::At(unsafe { &*(addr as *const Location<'static>) }),
            _ => Site::Anon,
        }
    }
}

/// Locks whose waits the histograms hold; waits on further locks count
/// only in the profiles.
pub const MAX_SITES: usize = 128;
/// Histogram buckets: 8 per power of two, up to 2^40 ns (18 minutes);
/// a quantile read from them is within 6.25% of the truth.
const BUCKETS: usize = 8 * 38;

/// One lock's waits since the agent started.
struct Stats {
    /// The site's pointer, or 1 for every anonymous lock; 0: free.
    key: AtomicU64,
    kind: AtomicU8,
    len: AtomicU32,
    /// Set once `kind` and `len` are written.
    ready: AtomicU8,
    count: AtomicU64,
    sum_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

static STATS: [Stats; MAX_SITES] = [const {
    Stats {
        key: AtomicU64::new(0),
        kind: AtomicU8::new(0),
        len: AtomicU32::new(0),
        ready: AtomicU8::new(0),
        count: AtomicU64::new(0),
        sum_ns: AtomicU64::new(0),
        buckets: [const { AtomicU64::new(0) }; BUCKETS],
    }
}; MAX_SITES];

/// The bucket of a wait of `ns`.
fn bucket(ns: u64) -> usize {
    let v = ns.clamp(1, (1 << 40) - 1);
    if v < 8 {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros() as usize;
    8 * (octave - 2) + ((v >> (octave - 3)) & 7) as usize
}

/// The middle of bucket `b`, in ns.
fn bucket_mid(b: usize) -> f64 {
    if b < 8 {
        return b as f64;
    }
    let octave = b / 8 + 2;
    let sub = (b % 8) as u64;
    let lo = (8 + sub) << (octave - 3);
    lo as f64 + (1u64 << (octave - 3)) as f64 / 2.0
}

fn stats_for(site: Site) -> Option<&'static Stats> {
    let (kind, addr, len) = site.raw();
    let key = if kind == KIND_ANON { 1 } else { addr };
    let start = ((key >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as usize;
    for i in 0..MAX_SITES {
        let s = &STATS[(start + i) % MAX_SITES];
        match s.key.load(Ordering::Acquire) {
            k if k == key => return Some(s),
            0 => {
                match s
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        s.kind.store(kind, Ordering::Relaxed);
                        s.len.store(len, Ordering::Relaxed);
                        s.ready.store(1, Ordering::Release);
                        return Some(s);
                    }
                    Err(k) if k == key => return Some(s),
                    Err(_) => {}
                }
            }
            _ => {}
        }
    }
    None
}

/// One lock's waits, for `/metrics`.
#[derive(Clone, Debug)]
pub struct WaitStats {
    /// The lock's label (`None`: anonymous locks together).
    pub site: Site,
    /// Waits.
    pub count: u64,
    /// Nanoseconds waited in all.
    pub sum_ns: u64,
    /// Waits per bucket.
    buckets: Vec<u64>,
}

impl WaitStats {
    /// The wait at quantile `q` (0..=1), in ns; 0 without waits.
    pub fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_mid(b);
            }
        }
        bucket_mid(BUCKETS - 1)
    }

    /// Adds `other`'s waits (two locks with one label).
    pub fn merge(&mut self, other: &WaitStats) {
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }
}

/// Every lock's waits since the agent started.
pub fn wait_stats() -> Vec<WaitStats> {
    STATS
        .iter()
        .filter(|s| s.ready.load(Ordering::Acquire) == 1)
        .map(|s| WaitStats {
            site: Site::from_raw(
                s.kind.load(Ordering::Relaxed),
                s.key.load(Ordering::Relaxed),
                s.len.load(Ordering::Relaxed),
            ),
            count: s.count.load(Ordering::Relaxed),
            sum_ns: s.sum_ns.load(Ordering::Relaxed),
            buckets: s
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        })
        .collect()
}

thread_local! {
    /// The thread's random state (0: not seeded yet).
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// The thread's id, once asked (0: not yet).
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// Threads waiting on a lock now, by thread id (0: a free slot): the wall
/// sampler calls their state `lock`. Past [`MAX_WAITING`] at once, the
/// rest are not marked.
static WAITING: [AtomicU32; MAX_WAITING] = [const { AtomicU32::new(0) }; MAX_WAITING];
/// Threads marked waiting at most at once.
pub const MAX_WAITING: usize = 512;

/// What each waiting slot's thread waits on, for the deadlock check: the
/// lock's address, the thread that last took it, the lock's site (as
/// [`Site::raw`] writes it), when the wait began (monotonic ns) and a
/// sequence number telling this wait from the slot's next.
struct WaitOn {
    lock: std::sync::atomic::AtomicUsize,
    holder: AtomicU32,
    site_kind: AtomicU8,
    site_addr: AtomicU64,
    site_len: AtomicU32,
    since_ns: AtomicU64,
    seq: AtomicU64,
}

static WAIT_ON: [WaitOn; MAX_WAITING] = [const {
    WaitOn {
        lock: std::sync::atomic::AtomicUsize::new(0),
        holder: AtomicU32::new(0),
        site_kind: AtomicU8::new(0),
        site_addr: AtomicU64::new(0),
        site_len: AtomicU32::new(0),
        since_ns: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    }
}; MAX_WAITING];

/// This thread's id, read once and kept.
#[inline]
pub fn my_tid() -> u32 {
    TID.try_with(|t| {
        if t.get() == 0 {
            t.set(gettid());
        }
        t.get()
    })
    .unwrap_or_else(|_| gettid())
}

/// Marks this thread as waiting on the lock at `lock` (0: unknown), last
/// taken by thread `holder` (0: unknown), known as `site`; the slot to
/// clear, if any.
pub fn begin_wait_on(lock: usize, holder: u32, site: Site) -> Option<usize> {
    if RATE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let tid = my_tid();
    let start = (tid as usize).wrapping_mul(0x9E37_79B9) % MAX_WAITING;
    let slot = (0..MAX_WAITING)
        .map(|i| (start + i) % MAX_WAITING)
        .find(|&i| {
            WAITING[i]
                .compare_exchange(0, tid, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })?;
    let w = &WAIT_ON[slot];
    let (kind, addr, len) = site.raw();
    w.lock.store(lock, Ordering::Relaxed);
    w.holder.store(holder, Ordering::Relaxed);
    w.site_kind.store(kind, Ordering::Relaxed);
    w.site_addr.store(addr, Ordering::Relaxed);
    w.site_len.store(len, Ordering::Relaxed);
    w.since_ns.store(super::monotonic_ns(), Ordering::Relaxed);
    // The slot is this thread's until it ends the wait: its own count
    // tells this wait from the slot's next, with no shared counter.
    w.seq
        .store(w.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
    Some(slot)
}

/// One thread waiting on a lock, as [`waits`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// The waiting thread.
    pub tid: u32,
    /// The lock's address (0: unknown).
    pub lock: usize,
    /// The thread that last took the lock (0: unknown); in a deadlock, its
    /// holder.
    pub holder: u32,
    /// The lock's site.
    pub site: Site,
    /// When the wait began, monotonic ns.
    pub since_ns: u64,
    /// This wait's number.
    pub seq: u64,
}

/// Every thread waiting on a lock now, with what it waits on.
pub fn waits() -> Vec<Wait> {
    let mut out = Vec::new();
    for (i, t) in WAITING.iter().enumerate() {
        let tid = t.load(Ordering::Relaxed);
        if tid == 0 {
            continue;
        }
        let w = &WAIT_ON[i];
        let seq = w.seq.load(Ordering::Acquire);
        let wait = Wait {
            tid,
            lock: w.lock.load(Ordering::Relaxed),
            holder: w.holder.load(Ordering::Relaxed),
            site: Site::from_raw(
                w.site_kind.load(Ordering::Relaxed),
                w.site_addr.load(Ordering::Relaxed),
                w.site_len.load(Ordering::Relaxed),
            ),
            since_ns: w.since_ns.load(Ordering::Relaxed),
            seq,
        };
        // Still that wait (not ended and begun again meanwhile).
        if t.load(Ordering::Relaxed) == tid && w.seq.load(Ordering::Acquire) == seq {
            out.push(wait);
        }
    }
    out
}

/// This thread took the lock it waited on.
pub fn end_wait(slot: Option<usize>) {
    if let Some(i) = slot {
        WAITING[i].store(0, Ordering::Relaxed);
    }
}

/// The threads waiting on a lock now.
pub fn waiting() -> Vec<u32> {
    WAITING
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .filter(|&t| t != 0)
        .collect()
}

/// Uniform in (0, 1), from the thread's xorshift state.
fn uniform() -> f64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            x = (u64::from(gettid()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (r as *const Cell<u64> as u64))
                | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    })
}

/// A lock at `site` was waited on for `wait_ns` before it was taken.
#[cold]
#[inline(never)]
pub fn contended(site: Site, wait_ns: u64) {
    let rate = RATE.load(Ordering::Relaxed);
    if rate == 0 || FORKED.load(Ordering::Relaxed) {
        return;
    }
    CONTENDED.fetch_add(1, Ordering::Relaxed);
    if let Some(s) = stats_for(site) {
        s.count.fetch_add(1, Ordering::Relaxed);
        s.sum_ns.fetch_add(wait_ns, Ordering::Relaxed);
        s.buckets[bucket(wait_ns)].fetch_add(1, Ordering::Relaxed);
    }
    let p = 1.0 - (-(wait_ns as f64) / rate as f64).exp();
    if uniform() >= p {
        return;
    }
    record(site, wait_ns, rate);
}

#[inline(never)]
fn record(site: Site, wait_ns: u64, rate: u64) {
    let Some(shared) = installed() else {
        return;
    };
    let (kind, addr, len) = site.raw();
    push_here(shared, &shared.locks, |s: &mut RawSample| {
        s.kind = kind;
        s.weight = len;
        s.size = wait_ns;
        s.addr = addr;
        s.rate = rate;
    });
    SAMPLED.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values() {
        for v in [
            1u64,
            7,
            8,
            9,
            15,
            16,
            17,
            1000,
            123_456,
            1 << 30,
            (1 << 40) - 1,
        ] {
            let b = bucket(v);
            let mid = bucket_mid(b);
            assert!(
                (mid - v as f64).abs() <= v as f64 * 0.0625 + 0.5,
                "{v}: bucket {b} mid {mid}"
            );
            assert!(b < BUCKETS);
        }
    }
}
