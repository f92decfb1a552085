//! The sample buffer between signal handlers (many writers) and the
//! aggregation thread (one reader): a bounded queue of fixed slots, each
//! with a sequence number (Vyukov's design). A writer claims the next slot
//! with one compare-and-swap, never a lock, never an allocation; when the
//! queue is full it drops the sample and counts it. The reader visits only
//! the slots written since its last visit.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Deepest stack a slot holds.
pub const MAX_DEPTH: usize = 128;

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
    /// 0 for a CPU sample; in the heap ring, [`super::heap::KIND_ALLOC`]
    /// or [`super::heap::KIND_FREE`].
    pub kind: u8,
    /// A sampled allocation's size, address, and the mean bytes between
    /// samples in force when it was taken; a free's address.
    pub size: u64,
    /// See `size`.
    pub addr: u64,
    /// See `size`.
    pub rate: u64,
    /// The task running on the thread when the sample was taken (0:
    /// none), [`crate::task`]'s id.
    pub task: u32,
    /// The root `tracing` span entered on the thread (0: none),
    /// [`crate::task`]'s number for it.
    pub span: u32,
    /// `ips[0]` is the interrupted instruction; the rest are return addresses.
    pub ips: [u64; MAX_DEPTH],
}

struct Slot {
    /// `pos` when free for the writer of position `pos`; `pos + 1` once
    /// that writer is done; `pos + capacity` after the reader took it.
    seq: AtomicUsize,
    sample: UnsafeCell<RawSample>,
}

/// The buffer.
pub struct Ring {
    slots: Box<[Slot]>,
    head: AtomicUsize,
    /// The reader's next position; only the single reader moves it.
    tail: AtomicUsize,
    /// Samples dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Samples written.
    pub written: AtomicU64,
}

// SAFETY: a slot's `sample` is written only by the writer whose CAS on
// `head` claimed its position, and read only by the reader after seeing
// that writer's Release store of `seq`; the reader hands the slot back with
// a Release store. No two threads touch one sample at once.
unsafe impl Sync for Ring {}

impl Ring {
    /// A buffer of `capacity` slots (allocated here, once).
    pub fn new(capacity: usize) -> Self {
        let slots = (0..capacity.max(2))
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                sample: UnsafeCell::new(RawSample {
                    tid: 0,
                    depth: 0,
                    truncated: false,
                    weight: 1,
                    kind: 0,
                    size: 0,
                    addr: 0,
                    rate: 0,
                    task: 0,
                    span: 0,
                    ips: [0; MAX_DEPTH],
                }),
            })
            .collect();
        Ring {
            slots,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// Claims a slot and lets `fill` write the sample into it.
    /// Async-signal-safe: atomics only, lock-free. Returns false (and
    /// counts a drop) when the buffer is full.
    #[inline]
    pub fn push(&self, fill: impl FnOnce(&mut RawSample)) -> bool {
        let n = self.slots.len();
        let mut pos = self.head.load(Ordering::Relaxed);
        let slot = loop {
            let slot = &self.slots[pos % n];
            let seq = slot.seq.load(Ordering::Acquire);
            if seq == pos {
                match self.head.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break slot,
                    Err(now) => pos = now,
                }
            } else if seq < pos {
                // The reader has not freed this slot from the last lap.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            } else {
                pos = self.head.load(Ordering::Relaxed);
            }
        };
        // SAFETY: the CAS gave this writer position `pos`; the reader does
        // not read the slot until `seq` becomes `pos + 1` below.
        fill(unsafe { &mut *slot.sample.get() });
        slot.seq.store(pos + 1, Ordering::Release);
        self.written.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Hands every sample written since the last call to `take`, in order,
    /// stopping at a slot still being written. Only one thread may drain
    /// (the aggregation thread).
    pub fn drain(&self, mut take: impl FnMut(&RawSample)) -> usize {
        let n = self.slots.len();
        let mut pos = self.tail.load(Ordering::Relaxed);
        let mut count = 0;
        loop {
            let slot = &self.slots[pos % n];
            if slot.seq.load(Ordering::Acquire) != pos + 1 {
                break;
            }
            // SAFETY: `seq == pos + 1` means its writer finished (Acquire
            // pairs with its Release); writers cannot claim it again until
            // the store below.
            take(unsafe { &*slot.sample.get() });
            slot.seq.store(pos + n, Ordering::Release);
            pos += 1;
            count += 1;
        }
        self.tail.store(pos, Ordering::Relaxed);
        count
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

    #[test]
    fn concurrent_writers_lose_nothing_but_counted_drops() {
        let r = std::sync::Arc::new(Ring::new(64));
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        r.push(|s| {
                            s.tid = t;
                            s.depth = (i % 7) as u16;
                        });
                    }
                })
            })
            .collect();
        let mut read = 0u64;
        let mut per_writer = [0u64; 4];
        while writers.iter().any(|w| !w.is_finished()) {
            read += r.drain(|s| per_writer[s.tid as usize] += 1) as u64;
        }
        read += r.drain(|s| per_writer[s.tid as usize] += 1) as u64;
        let written = r.written.load(Ordering::Relaxed);
        assert_eq!(read, written);
        assert_eq!(written + r.dropped.load(Ordering::Relaxed), 80_000);
        assert_eq!(per_writer.iter().sum::<u64>(), written);
    }
}
