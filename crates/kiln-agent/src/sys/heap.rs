//! The allocation sampler's hot path, behind [`crate::alloc::Profiled`]:
//! its `GlobalAlloc` forwards every call and, while an agent samples
//! allocations, counts each thread's bytes down to its next sample (drawn
//! from an exponential distribution, mean [`RATE`]). An allocation that
//! crosses it walks its stack, as the signal handler does, into the heap
//! ring for the sampler thread; its address goes into a table of live
//! sampled blocks, so a free looks at one slot and only a free of a
//! sampled block writes an event. Nothing here allocates or locks: the
//! thread-locals are const-initialised without destructors, the ring and
//! the filter are preallocated, and a flag stops the path from entering
//! itself.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use super::ring::RawSample;
use super::{FORKED, gettid, installed, push_here};
use crate::alloc::Profiled;

/// Mean bytes between samples; 0 when no agent samples allocations.
pub static RATE: AtomicU64 = AtomicU64::new(0);
/// Set once an allocation went through [`Profiled`]: it is the global
/// allocator.
pub static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Samples the hot path took.
pub static SAMPLED: AtomicU64 = AtomicU64::new(0);
/// Frees of sampled blocks the hot path reported.
pub static FREES: AtomicU64 = AtomicU64::new(0);

/// [`RawSample::kind`] of a sampled allocation.
pub const KIND_ALLOC: u8 = 1;
/// [`RawSample::kind`] of a free of a block the filter holds.
pub const KIND_FREE: u8 = 2;

/// Addresses of the sampled blocks alive: an open-addressing table the
/// allocation path inserts into (one compare-and-swap) and the sampler
/// thread removes from once it has seen the block's free. A free probes
/// it (one load when the block was not sampled: the table is sparse) and
/// writes an event only for an address it holds.
const TABLE: usize = 1 << 16;
/// Slots a probe looks at before giving up.
const PROBES: usize = 16;
/// A slot whose address was removed (probes go on past it).
const GONE: u64 = 1;
static LIVE: [AtomicU64; TABLE] = [const { AtomicU64::new(0) }; TABLE];
/// In front of the table: per hash of an address, how many live sampled
/// blocks may hash there (saturating at 255, which then stays). 16 KiB,
/// so a free of an unsampled block is one load of a hot cache line.
const HINTS: usize = 1 << 14;
static HINT: [AtomicU8; HINTS] = [const { AtomicU8::new(0) }; HINTS];
/// Addresses the table holds: 0 lets every free skip it.
static LIVE_TOTAL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Bytes this thread may still allocate before its next sample.
    static LEFT: Cell<i64> = const { Cell::new(0) };
    /// The thread's random state (0: not seeded yet).
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// Set while this thread records: an allocation from in there (there
    /// should be none) is not sampled.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

fn slot(addr: u64) -> usize {
    ((addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 16)) as usize
}

fn hint(addr: u64) -> &'static AtomicU8 {
    &HINT[((addr >> 4).wrapping_mul(0xC2B2_AE3D_27D4_EB4F) >> (64 - 14)) as usize]
}

fn hint_up(addr: u64) {
    let h = hint(addr);
    let _ = h.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        (v < u8::MAX).then(|| v + 1)
    });
}

fn hint_down(addr: u64) {
    let h = hint(addr);
    let _ = h.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        (v > 0 && v < u8::MAX).then(|| v - 1)
    });
}

/// Adds `addr` to the table; false when its probe run is full.
fn insert(addr: u64) -> bool {
    let start = slot(addr);
    for i in 0..PROBES {
        let s = &LIVE[(start + i) % TABLE];
        let v = s.load(Ordering::Relaxed);
        if (v == 0 || v == GONE)
            && s.compare_exchange(v, addr, Ordering::Release, Ordering::Relaxed)
                .is_ok()
        {
            hint_up(addr);
            LIVE_TOTAL.fetch_add(1, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// Takes `addr` out of the table if it is there; true for the one caller
/// that took it. A run's last slot is emptied; inside a run, probes must
/// go on past it, so it is marked [`GONE`].
#[inline]
pub fn take(addr: u64) -> bool {
    if hint(addr).load(Ordering::Relaxed) == 0 {
        return false;
    }
    let start = slot(addr);
    for i in 0..PROBES {
        let s = &LIVE[(start + i) % TABLE];
        match s.load(Ordering::Relaxed) {
            0 => return false,
            v if v == addr => {
                let next = LIVE[(start + i + 1) % TABLE].load(Ordering::Relaxed);
                let to = if next == 0 { 0 } else { GONE };
                let won = s
                    .compare_exchange(addr, to, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok();
                if won {
                    hint_down(addr);
                    LIVE_TOTAL.fetch_sub(1, Ordering::Relaxed);
                }
                return won;
            }
            _ => {}
        }
    }
    false
}

/// Forgets every live block (the agent stopped sampling: its live set
/// is gone).
pub fn clear() {
    for c in &LIVE {
        c.store(0, Ordering::Relaxed);
    }
    for h in &HINT {
        h.store(0, Ordering::Relaxed);
    }
    LIVE_TOTAL.store(0, Ordering::Relaxed);
}

#[inline]
fn on_alloc(addr: u64, size: usize) {
    let rate = RATE.load(Ordering::Relaxed);
    if rate == 0 {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        return;
    }
    let left = LEFT.with(|l| {
        let v = l.get().saturating_sub(size as i64);
        l.set(v);
        v
    });
    if left <= 0 {
        sample(addr, size, rate);
    }
}

#[inline]
fn on_free(addr: u64) {
    // The freeing thread takes the address out itself: the same address,
    // reused by unsampled blocks and freed again, is then not reported
    // twice.
    if LIVE_TOTAL.load(Ordering::Relaxed) == 0 || !take(addr) {
        return;
    }
    freed(addr);
}

/// The next countdown: exponential with mean `rate`, from the thread's
/// xorshift state (seeded from `seed` on first use).
fn next_countdown(rate: u64, seed: u64) -> (i64, bool) {
    RNG.with(|r| {
        let mut x = r.get();
        let fresh = x == 0;
        if fresh {
            x = (seed ^ u64::from(gettid()).rotate_left(32)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        // Uniform in (0, 1).
        let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() * rate as f64) as i64 + 1, fresh)
    })
}

#[cold]
#[inline(never)]
fn sample(addr: u64, size: usize, rate: u64) {
    if BUSY.with(|b| b.replace(true)) {
        return;
    }
    let (next, fresh) = next_countdown(rate, addr);
    LEFT.with(|l| l.set(next));
    // A thread's first countdown starts here: its allocations until now
    // were not counted, so this one is not a sample.
    if !fresh && !FORKED.load(Ordering::Relaxed) {
        record(addr, size, rate);
    }
    BUSY.with(|b| b.set(false));
}

#[inline(never)]
fn record(addr: u64, size: usize, rate: u64) {
    let Some(shared) = installed() else {
        return;
    };
    let pushed = push_here(shared, &shared.heap, |s: &mut RawSample| {
        s.kind = KIND_ALLOC;
        s.weight = 1;
        s.size = size as u64;
        s.addr = addr;
        s.rate = rate;
    });
    SAMPLED.fetch_add(1, Ordering::Relaxed);
    if pushed && !insert(addr) {
        // Untracked: its free will not be seen, so it must not count as
        // live. The sampler is told with a free of its own.
        freed(addr);
    }
}

#[cold]
#[inline(never)]
fn freed(addr: u64) {
    if FORKED.load(Ordering::Relaxed) {
        return;
    }
    let Some(shared) = installed() else {
        return;
    };
    FREES.fetch_add(1, Ordering::Relaxed);
    shared.heap.push(|s: &mut RawSample| {
        s.kind = KIND_FREE;
        s.addr = addr;
        s.depth = 0;
        s.size = 0;
    });
}

// SAFETY: every method forwards to the wrapped allocator with the caller's
// arguments and returns its result unchanged; the bookkeeping around it
// allocates nothing, takes no lock and cannot unwind.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Profiled<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the inner allocator's.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            on_alloc(p as u64, layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(p as u64, layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(ptr as u64);
        // SAFETY: as above.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let q = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !q.is_null() {
            // A free of the old block and an allocation of the new one.
            on_free(ptr as u64);
            on_alloc(q as u64, new_size);
        }
        q
    }
}
