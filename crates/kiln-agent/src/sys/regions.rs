//! Readable memory regions from `/proc/self/maps`, published to signal
//! handlers without locks: two buffers, one current; a handler pins the
//! buffer it reads with a reader count, and the updater writes only the
//! other buffer once no handler holds it.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most regions a snapshot keeps (busy JVMs have ~10k mappings; Rust
/// services a few hundred).
pub const MAX_REGIONS: usize = 16384;

struct Buf {
    regions: UnsafeCell<Box<[(u64, u64)]>>,
    len: AtomicUsize,
    readers: AtomicUsize,
}

/// The published table.
pub struct Regions {
    bufs: [Buf; 2],
    current: AtomicUsize,
}

// SAFETY: a buffer is written only by the (single, `&mut`-serialised)
// updater while it is not current and has no readers; readers pin it first
// and re-check that it is current, so no read overlaps a write.
unsafe impl Sync for Regions {}

impl Default for Regions {
    fn default() -> Self {
        Self::new()
    }
}

impl Regions {
    /// Empty tables, allocated once.
    pub fn new() -> Self {
        let buf = || Buf {
            regions: UnsafeCell::new(vec![(0, 0); MAX_REGIONS].into_boxed_slice()),
            len: AtomicUsize::new(0),
            readers: AtomicUsize::new(0),
        };
        Regions {
            bufs: [buf(), buf()],
            current: AtomicUsize::new(0),
        }
    }

    /// The readable region holding `addr`, as `[start, end)`.
    /// Async-signal-safe: atomics and a binary search.
    pub fn find(&self, addr: u64) -> Option<(u64, u64)> {
        let b = self.current.load(Ordering::SeqCst);
        let buf = &self.bufs[b];
        buf.readers.fetch_add(1, Ordering::SeqCst);
        let result = if self.current.load(Ordering::SeqCst) == b {
            let len = buf.len.load(Ordering::SeqCst);
            // SAFETY: pinned and current, so the updater is not writing it.
            let regions = unsafe { &(&*buf.regions.get())[..len] };
            let i = regions.partition_point(|&(start, _)| start <= addr);
            (i > 0 && addr < regions[i - 1].1).then(|| regions[i - 1])
        } else {
            None
        };
        buf.readers.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Publishes `regions` (sorted, non-overlapping, merged where
    /// adjacent). Called by one thread at a time.
    pub fn publish(&self, regions: &[(u64, u64)]) {
        let next = 1 - self.current.load(Ordering::SeqCst);
        let buf = &self.bufs[next];
        while buf.readers.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        let n = regions.len().min(MAX_REGIONS);
        // SAFETY: `next` is not current and has no readers; a reader that
        // pins it now will find it not current and back off.
        unsafe { (&mut *buf.regions.get())[..n].copy_from_slice(&regions[..n]) };
        buf.len.store(n, Ordering::SeqCst);
        self.current.store(next, Ordering::SeqCst);
    }
}

/// Parses `/proc/self/maps` text into sorted readable regions, adjacent
/// ones merged.
pub fn parse_maps(text: &str) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !perms.starts_with('r') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_merges_and_finds() {
        let maps = "1000-2000 r-xp 0 0:0 0 /bin/x\n2000-3000 rw-p 0 0:0 0\n5000-6000 ---p 0 0:0 0\n7000-8000 rw-p 0 0:0 0 [stack]\n";
        let r = parse_maps(maps);
        assert_eq!(r, vec![(0x1000, 0x3000), (0x7000, 0x8000)]);
        let t = Regions::new();
        t.publish(&r);
        assert_eq!(t.find(0x2500), Some((0x1000, 0x3000)));
        assert_eq!(t.find(0x5500), None);
        assert_eq!(t.find(0x7fff), Some((0x7000, 0x8000)));
        assert_eq!(t.find(0x8000), None);
        t.publish(&[(0x9000, 0xa000)]);
        assert_eq!(t.find(0x2500), None);
        assert_eq!(t.find(0x9001), Some((0x9000, 0xa000)));
    }
}
