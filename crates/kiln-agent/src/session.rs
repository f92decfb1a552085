//! On-demand sessions: what the control endpoints started, what they are
//! doing, and how each ended. The sampler does the sampling; this is the
//! book-keeping the endpoints and `status()` read.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::ship::Delivery;

/// Sessions running at once, at most; one more is refused (429).
pub const MAX_SESSIONS: usize = 8;
/// Finished sessions remembered for `stop` and `status`.
const KEEP_FINISHED: usize = 32;
/// Longest session; one started without a duration ends after this.
pub const MAX_SESSION: Duration = Duration::from_secs(3600);

/// How a session ended: its profile and where it went.
#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    /// The session id.
    pub id: String,
    /// Samples in its profile.
    pub samples: u64,
    /// Size of its gzipped pprof.
    pub bytes: usize,
    /// Start (Unix ms).
    pub start_ms: u64,
    /// End (Unix ms).
    pub end_ms: u64,
    /// One entry per sink (empty when the session was not shipped).
    pub shipped: Vec<Delivery>,
    /// The profile itself (gzipped pprof), not serialized.
    #[serde(skip)]
    pub pprof: bytes::Bytes,
}

/// What the sampler answers a stop with.
#[derive(Debug)]
pub enum SessionOutcome {
    /// No running session has this id.
    Unknown,
    /// The session's report.
    Done(Box<SessionReport>),
}

/// One session as `status` shows it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The id.
    pub id: String,
    /// `cpu`.
    pub event: String,
    /// Sampling rate.
    pub hz: u32,
    /// Start (Unix ms).
    pub started_ms: u64,
    /// When it ends by itself (Unix ms).
    pub until_ms: u64,
    /// `running`, `stopping` or `done`.
    pub state: &'static str,
    /// Shipped to the sinks when it ends (false for `/debug/pprof/profile`).
    pub ship: bool,
    /// How it ended, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<SessionReport>,
}

/// The registry.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, SessionInfo>>,
    finished: Mutex<VecDeque<String>>,
    next: AtomicU64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Sessions {
    /// Registers a running session and returns its id, or `None` when
    /// [`MAX_SESSIONS`] already run.
    pub fn begin(&self, event: &str, hz: u32, duration: Duration, ship: bool) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.values().filter(|s| s.state != "done").count() >= MAX_SESSIONS {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Unique across restarts of the agent, short enough to type.
        let id = format!("{:x}-{n}", now_ms() % 0x1_0000_0000);
        let started = now_ms();
        map.insert(
            id.clone(),
            SessionInfo {
                id: id.clone(),
                event: event.to_string(),
                hz,
                started_ms: started,
                until_ms: started + duration.as_millis() as u64,
                state: "running",
                ship,
                report: None,
            },
        );
        Some(id)
    }

    /// Marks a session as being stopped; false if it is not running.
    pub fn stopping(&self, id: &str) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(id) {
            Some(s) if s.state == "running" => {
                s.state = "stopping";
                true
            }
            _ => false,
        }
    }

    /// Records how a session ended, forgetting the oldest finished ones.
    pub fn done(&self, report: &SessionReport) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get_mut(&report.id) {
            s.state = "done";
            let mut r = report.clone();
            // Keep the summary, not the profile.
            r.pprof = bytes::Bytes::new();
            s.report = Some(r);
        }
        let mut fin = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        fin.push_back(report.id.clone());
        while fin.len() > KEEP_FINISHED {
            if let Some(old) = fin.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// Forgets a session that never started.
    pub fn forget(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// One session.
    pub fn get(&self, id: &str) -> Option<SessionInfo> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every session known, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.started_ms, &a.id).cmp(&(b.started_ms, &b.id)));
        v
    }
}
