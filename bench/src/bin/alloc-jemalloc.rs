//! The allocation benchmark (`bench/alloc.py`) on jemalloc
//! (tikv-jemallocator, built with its profiler): run with
//! `_RJEM_MALLOC_CONF=prof:true,lg_prof_sample:19` for jemalloc's own
//! heap profiler at a mean of 512 KiB, the peer; without, jemalloc alone.

#[path = "../alloc/work.rs"]
mod work;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let (rounds, pairs) = work::args();
    work::run(rounds, pairs);
}
