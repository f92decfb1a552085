//! What the agent reports about itself: the counters its threads share
//! (samples, drops, windows, errors) and the [`Status`] snapshot built from
//! them, as `Agent::status()` and `/debug/kiln/status` serve it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use serde::Serialize;

use crate::{Engine, SessionInfo, SinkStatus, sys};

/// Counters shared by the agent's threads, read by [`Agent::status`].
#[derive(Default, Debug)]
pub struct Counters {
    pub(crate) threads: AtomicU64,
    pub(crate) arm_failures: AtomicU64,
    pub(crate) windows_written: AtomicU64,
    pub(crate) windows_dropped: AtomicU64,
    pub(crate) unknown_frames: AtomicU64,
    pub(crate) symbol_bytes: AtomicU64,
    /// Allocation samples not tracked as live: the live set was full.
    pub(crate) live_full: AtomicU64,
    /// Wall samples whose thread did not answer for its stack.
    pub(crate) wall_missed: AtomicU64,
    /// Threads whose engine went silent and was armed again.
    pub(crate) rearmed: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) last_file: Mutex<Option<PathBuf>>,
    pub(crate) unwind: Mutex<sys::UnwindStatus>,
}

impl Counters {
    pub(crate) fn set_unwind(&self, status: sys::UnwindStatus) {
        *self.unwind.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Keeps `e` as the last error (`/status`), and logs it unless it
    /// repeats the last: an error met every window (a library whose debug
    /// information cannot be read) is said once, not every 10 s into the
    /// host's log.
    pub(crate) fn set_error(&self, e: String) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_deref() != Some(e.as_str()) {
            tracing::warn!(target: "kiln_agent", "{e}");
        }
        *last = Some(e);
    }
}

/// A snapshot of what the agent is doing.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The engine in use (`None` when CPU sampling is off).
    pub engine: Option<Engine>,
    /// Why this engine: which better ones were refused, and how.
    pub engine_reason: String,
    /// Sampling rate in Hz.
    pub cpu_hz: u32,
    /// Sampling and shipping run.
    pub active: bool,
    /// This is a forked child of the process that started the agent: it
    /// does not sample.
    pub forked_child: bool,
    /// Threads being sampled.
    pub threads: u64,
    /// Samples taken.
    pub samples: u64,
    /// Samples dropped because the buffer was full.
    pub dropped: u64,
    /// Samples kept with the leaf frame only (stack not yet mapped).
    pub leaf_only: u64,
    /// Signals ignored (agent stopping, or forked child).
    pub ignored_signals: u64,
    /// Threads whose timer could not be armed.
    pub arm_failures: u64,
    /// Threads whose engine stopped firing (its signal lost) and was armed
    /// again by the sampler's check every second.
    pub rearmed: u64,
    /// Profiles delivered, summed over the sinks.
    pub windows_written: u64,
    /// Windows dropped because the writer fell behind.
    pub windows_dropped: u64,
    /// Addresses that could not be symbolized.
    pub unknown_frames: u64,
    /// Bytes the symbolizer holds between windows (its cache of resolved
    /// addresses, their names, one unit index per object), roughly.
    pub symbol_bytes: u64,
    /// Allocation sampling: on or off and why, samples, live blocks.
    pub alloc: AllocStatus,
    /// Lock profiling: on or off and why, waits seen and sampled.
    pub lock: LockStatus,
    /// Wall-clock sampling: its rate (0: off) and samples lost.
    pub wall: WallStatus,
    /// The newest error, if any.
    pub last_error: Option<String>,
    /// The newest file written.
    pub last_file: Option<PathBuf>,
    /// Each sink's health: queued, sent, failed, dropped, last error.
    pub sinks: Vec<SinkStatus>,
    /// On-demand sessions, running and recently finished.
    pub sessions: Vec<SessionInfo>,
    /// Addresses the control endpoints listen on.
    pub control: Vec<String>,
    /// The CFI tables the stack walk reads: objects, rows, bytes.
    pub unwind: sys::UnwindStatus,
}

/// What allocation sampling is doing.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct AllocStatus {
    /// Allocations are being sampled.
    pub on: bool,
    /// Why not, when off.
    pub reason: String,
    /// Mean bytes between samples.
    pub sample_bytes: u64,
    /// Allocations sampled since the process started.
    pub sampled: u64,
    /// Frees of sampled blocks seen.
    pub frees: u64,
    /// Samples and frees lost because the heap buffer was full.
    pub dropped: u64,
    /// Samples not tracked as live because the live set was full.
    pub live_full: u64,
}

/// What lock profiling is doing.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct LockStatus {
    /// Waits on [`crate::sync`] locks are being sampled.
    pub on: bool,
    /// Why not, when off.
    pub reason: String,
    /// Mean nanoseconds of waiting between samples.
    pub sample_ns: u64,
    /// Contended acquisitions seen while an agent ran.
    pub contended: u64,
    /// Of those, the ones sampled.
    pub sampled: u64,
    /// Samples lost because the lock buffer was full.
    pub dropped: u64,
}

/// What wall-clock sampling is doing.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct WallStatus {
    /// Samples per second of the continuous profile (0: off; sessions
    /// may still sample).
    pub hz: u32,
    /// Samples whose thread did not answer for its stack in time (it
    /// blocks SIGVTALRM, or exited): dropped.
    pub missed: u64,
}
