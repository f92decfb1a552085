//! Helpers for Kiln's benchmarks: the scripts in `bench/` call the binaries
//! in `src/bin`, which build their inputs from real captures in `bench/data`
//! (the synthetic fleet drawn from them: [`fleet`]).
#![forbid(unsafe_code)]

pub mod fleet;
