//! The allocation benchmark (`bench/alloc.py`) on the system allocator,
//! unprofiled: the baseline.

#[path = "../alloc/work.rs"]
mod work;

fn main() {
    let (rounds, pairs) = work::args();
    work::run(rounds, pairs);
}
