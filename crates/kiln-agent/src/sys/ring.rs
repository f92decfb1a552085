//! The sample buffer between signal handlers (many writers) and the
//! aggregation thread (one reader): fixed slots claimed with one atomic
//! compare-and-swap, never a lock, never an allocation. A writer that finds
//! its slot still full drops the sample and counts it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// Deepest stack a slot holds.
pub const MAX_DEPTH: usize = 128;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const FULL: u8 = 2;

/// One sample as the handler wrote it.
#[derive(Clone, Copy)]
pub struct RawSample {
    /// Thread id of the sampled thread.
    pub tid: u32,
    /// Frames written to `ips`.
    pub depth: u16,
    /// The walk stopped at `max_depth`.
    pub truncated: bool,
    /// Sampling periods this sample stands for: 1, plus the expirations a
    /// POSIX timer reports as overrun (CPU timers fire on scheduler ticks,
    /// so at rates above the tick rate one signal covers several periods).
    pub weight: u32,
    /// `ips[0]` is the interrupted instruction; the rest are return addresses.
    pub ips: [u64; MAX_DEPTH],
}

struct Slot {
    state: AtomicU8,
    sample: UnsafeCell<RawSample>,
}

/// The buffer.
pub struct Ring {
    slots: Box<[Slot]>,
    head: AtomicUsize,
    /// Samples dropped because their slot was full.
    pub dropped: AtomicU64,
    /// Samples written.
    pub written: AtomicU64,
}

// SAFETY: a slot's `sample` is written only by the writer that moved its
// state EMPTY→WRITING, and read only by the reader after seeing FULL (with
// Acquire/Release ordering), so no two threads touch one sample at once.
unsafe impl Sync for Ring {}

impl Ring {
    /// A buffer of `capacity` slots (allocated here, once).
    pub fn new(capacity: usize) -> Self {
        let slots = (0..capacity.max(1))
            .map(|_| Slot {
                state: AtomicU8::new(EMPTY),
                sample: UnsafeCell::new(RawSample {
                    tid: 0,
                    depth: 0,
                    truncated: false,
                    weight: 1,
                    ips: [0; MAX_DEPTH],
                }),
            })
            .collect();
        Ring {
            slots,
            head: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Claims a slot and lets `fill` write the sample into it. Async-signal-safe:
    /// atomics only. Returns false (and counts a drop) when the slot is busy.
    #[inline]
    pub fn push(&self, fill: impl FnOnce(&mut RawSample)) -> bool {
        let i = self.head.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[i];
        if slot
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // SAFETY: this writer owns the slot (it moved it to WRITING) until the
        // Release store below; the reader does not look at WRITING slots.
        fill(unsafe { &mut *slot.sample.get() });
        slot.state.store(FULL, Ordering::Release);
        self.written.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Hands every full slot to `take` and empties it. Only one thread may
    /// drain at a time (the aggregation thread).
    pub fn drain(&self, mut take: impl FnMut(&RawSample)) -> usize {
        let mut n = 0;
        for slot in self.slots.iter() {
            if slot.state.load(Ordering::Acquire) == FULL {
                // SAFETY: FULL slots belong to the single reader until it
                // stores EMPTY; writers only claim EMPTY slots.
                take(unsafe { &*slot.sample.get() });
                slot.state.store(EMPTY, Ordering::Release);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ring_drops_and_counts() {
        let r = Ring::new(2);
        assert!(r.push(|s| s.tid = 1));
        assert!(r.push(|s| s.tid = 2));
        assert!(!r.push(|s| s.tid = 3));
        assert_eq!(r.dropped.load(Ordering::Relaxed), 1);
        let mut seen = Vec::new();
        assert_eq!(r.drain(|s| seen.push(s.tid)), 2);
        seen.sort();
        assert_eq!(seen, [1, 2]);
        assert!(r.push(|s| s.tid = 4));
        assert_eq!(r.drain(|_| {}), 1);
    }
}
