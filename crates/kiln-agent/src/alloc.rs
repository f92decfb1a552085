//! Allocation profiling: [`Profiled`] wraps any global allocator (the
//! system's, jemalloc, mimalloc). Without a running agent, or with
//! `alloc_sample_bytes(0)`, it only forwards. With one, each thread counts
//! its bytes down to its next sample, drawn from an exponential
//! distribution of mean `alloc_sample_bytes` (default 512 KiB, as Go's
//! `MemProfileRate`); an allocation that crosses it is recorded with its
//! stack, its size and the weight that makes the estimate unbiased, Go's
//! `scaleHeapSample`: a block of `s` bytes is sampled with probability
//! `1 − e^(−s/R)`, so it counts `1 / (1 − e^(−s/R))` objects and `s` times
//! that many bytes. Sampled blocks stay in a live set until freed (on any
//! thread), so each window carries `memory:alloc_*` (allocated during it)
//! and `memory:inuse_*` (live at its end). `realloc` is a free and an
//! allocation; zeroed and aligned allocations are covered.
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: kiln_agent::alloc::Profiled<std::alloc::System> =
//!     kiln_agent::alloc::Profiled::new(std::alloc::System);
//! ```
//!
//! The hot path (in `sys::heap`) allocates nothing and takes no lock: an
//! unsampled allocation costs a thread-local subtraction, an unsampled
//! free one relaxed load (two when sampled blocks are alive). Memory: the
//! live set holds about `64 + 8 × depth` bytes per live sample (a 1 GiB
//! heap at the default rate: ~2,000 samples, ~1 MiB), at most
//! [`MAX_LIVE`] samples.

/// A global allocator that samples allocations for the running agent.
pub struct Profiled<A> {
    pub(crate) inner: A,
}

impl<A> Profiled<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        Profiled { inner }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

/// Default mean bytes between samples.
pub const DEFAULT_SAMPLE_BYTES: u64 = 512 * 1024;

/// Live samples the agent keeps at most; past it new samples still count
/// as allocated but are not tracked as live (counted in the status).
pub const MAX_LIVE: usize = 200_000;

/// Whether [`Profiled`] is the global allocator (an allocation went
/// through it).
pub fn installed() -> bool {
    crate::sys::heap::INSTALLED.load(std::sync::atomic::Ordering::Relaxed)
}
