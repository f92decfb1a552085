//! The signal path allocates nothing: a global allocator counts the
//! allocations of each thread, and a thread that takes ~1000 SIGPROFs while
//! computing (no allocation of its own) must see its count unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use serde_json::json;

use crate::{child_report, run_child, spin};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the thread-local
// counter is const-initialised and has no destructor, so touching it
// cannot allocate or recurse.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Child: this thread computes for a second under 1000 Hz sampling.
pub fn child_noalloc() {
    let agent = kiln_agent::Agent::builder().cpu_hz(1000).start().unwrap();
    // Let the sampler arm this thread's timer.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let samples0 = agent.status().samples;
    // Read the counter straight from the shared state: `status()` builds
    // strings, and this loop must allocate nothing of its own.
    let before = allocations();
    // Compute until ~1000 signals have landed (or 20 s pass on a machine
    // too loaded to give this thread the CPU), allocating nothing.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut x = 0u64;
    while std::time::Instant::now() < until
        && kiln_agent::testing::samples_written() < samples0 + 1000
    {
        x = x.wrapping_add(spin(1));
    }
    let after = allocations();
    std::hint::black_box(x);
    let samples = agent.status().samples - samples0;
    agent.stop().unwrap();
    println!(
        "KILN_REPORT {}",
        json!({"allocations": after - before, "samples": samples})
    );
}

#[test]
fn signal_handler_allocates_nothing() {
    let report = child_report(&run_child("noalloc", &[]));
    assert!(
        report["samples"].as_u64().unwrap() >= 300,
        "too few signals to prove anything: {report}"
    );
    assert_eq!(report["allocations"], 0, "{report}");
}

#[test]
fn record_allocates_nothing() {
    let tables = kiln_agent::testing::refresh_tables().unwrap();
    assert!(tables.rows > 0, "no unwind tables published: {tables:?}");
    // Leaves in code with CFI (this binary's `spin`, libc's `memcpy`) and
    // in none (0x1000): both walks, neither may allocate.
    let leaves = [
        spin as *const () as u64 + 4,
        libc::memcpy as *const () as u64,
        0x1000,
    ];
    let before = allocations();
    for i in 0..10_000 {
        kiln_agent::testing::record_here(leaves[i % leaves.len()]).unwrap();
    }
    assert_eq!(allocations(), before);
}
