//! `kiln-agent` is the profiler a service embeds to profile itself: CPU
//! sampling through perf events, per-thread CPU timers or `setitimer`,
//! frame-pointer unwinding in an async-signal-safe handler, symbolization,
//! HTTP control endpoints, and sinks that ship pprof windows to a Kiln
//! server, a Pyroscope-compatible server, S3-compatible storage or a
//! directory.
//!
//! Not built yet: the samplers land with issue #3, control and sinks with
//! issue #4. This crate exports nothing until then, so nothing can depend on
//! behaviour that does not exist. It will never depend on `kiln-store` or
//! `kiln-server`: the agent stays light.
//!
//! All `unsafe` of the workspace will live in this crate's `sys` module.
