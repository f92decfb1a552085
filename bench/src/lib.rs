//! Helpers for Kiln's benchmarks: the scripts in `bench/` call the binaries
//! in `src/bin`, which build their inputs from real captures in `bench/data`.
#![forbid(unsafe_code)]
