//! `Profile::heap_bytes` tells what a decoded profile holds on the heap
//! (what the store's block cache counts against its bound): checked
//! against the bytes this thread's allocations actually hold, counted by
//! the binary's global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting the bytes each thread holds.
pub struct Counting;

fn add(n: isize) {
    // A thread being torn down has no counter left: not counted.
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

// SAFETY: every call is forwarded to `System` with the same arguments;
// the counting touches only a thread-local integer and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes a hash index asks beyond its buckets (its control group and
/// alignment): what a tiny profile's count may miss.
const SLACK: f64 = 256.0;

fn live() -> isize {
    LIVE.with(Cell::get)
}

#[test]
fn heap_bytes_is_what_the_profile_holds_before_and_after_shrinking() {
    for rel in [
        "pprof/go-cpu.pb.gz",
        "jfr/hot-jdk17.jfr",
        "folded/perf-hotc.folded",
    ] {
        let bytes = super::read(rel);
        let before = live();
        let mut p = kiln_profile::decode(&bytes, &kiln_profile::DecodeOptions::default()).unwrap();
        let held = (live() - before) as f64;
        let told = p.heap_bytes() as f64;
        assert!(
            (told - held).abs() <= (0.05 * held).max(SLACK),
            "{rel}: heap_bytes {told} vs {held} held"
        );
        p.shrink_to_fit();
        let shrunk = (live() - before) as f64;
        let told = p.heap_bytes() as f64;
        assert!(shrunk <= held, "{rel}: shrinking grew it");
        assert!(
            (told - shrunk).abs() <= (0.05 * shrunk).max(SLACK),
            "{rel}: heap_bytes {told} vs {shrunk} held after shrinking"
        );
        drop(p);
        assert!(live() - before <= 64, "{rel}: dropped whole");
    }
}
