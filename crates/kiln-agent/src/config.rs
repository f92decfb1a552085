//! Configuration: defaults in one place and the `KILN_*` environment table
//! that `Agent::from_env` and the docs share.

use std::time::Duration;

use crate::{Engine, Error};

/// Default CPU sampling rate.
pub const DEFAULT_CPU_HZ: u32 = 100;
/// Default length of a profile window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default deepest stack walked.
pub const DEFAULT_MAX_DEPTH: usize = 128;
/// How often new and exited threads are noticed.
pub const THREAD_SCAN_INTERVAL: Duration = Duration::from_millis(50);
/// How often the sample buffer is drained.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// Every environment variable `Agent::from_env` reads, with what it sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("KILN_SERVICE", "service name (`service_name` label)"),
    ("KILN_LABELS", "extra labels, `k=v,k=v`"),
    (
        "KILN_CPU_HZ",
        "CPU sampling rate in Hz; 0 turns CPU sampling off",
    ),
    ("KILN_ENGINE", "`auto`, `perf`, `ctimer` or `itimer`"),
    (
        "KILN_THREAD_STATS",
        "per-thread CPU, run delay and context switches each window (default true)",
    ),
    (
        "KILN_ALLOC_SAMPLE_BYTES",
        "mean bytes between allocation samples (default 524288); 0 turns them off",
    ),
    (
        "KILN_WALL_HZ",
        "wall-clock samples per second, every thread on or off CPU (default 0: off)",
    ),
    (
        "KILN_LOCK_SAMPLE_NS",
        "mean nanoseconds of lock waiting between samples (default 100000); 0 turns them off",
    ),
    (
        "KILN_TASK_STACK_EVERY",
        "every Nth operation of a task records its call site (default 100); 0 none",
    ),
    (
        "KILN_WATCHDOG",
        "deadline of tasks started without one, e.g. `5s` (default: none)",
    ),
    ("KILN_WINDOW", "profile window, e.g. `10s`, `500ms`, `1m`"),
    (
        "KILN_SERVER",
        "push profiles to this Kiln or Pyroscope server",
    ),
    ("KILN_DIR", "write profiles under this directory"),
    ("KILN_S3", "upload profiles to `s3://bucket/prefix`"),
    (
        "KILN_CONTROL",
        "serve the HTTP control endpoints on this address",
    ),
    (
        "KILN_CONTROL_TOKEN",
        "bearer token the control endpoints require",
    ),
    ("KILN_INSTANCE", "instance label (default: the host name)"),
    (
        "KILN_SERVER_TOKEN",
        "bearer token sent with every push to `KILN_SERVER`",
    ),
    (
        "KILN_TENANT",
        "tenant pushes are stored under (`X-Scope-OrgID`)",
    ),
];

/// Parses `10s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    let d = match &s[split..] {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// Parses `auto|perf|ctimer|itimer`.
pub fn parse_engine(s: &str) -> Option<Engine> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Engine::Auto,
        "perf" => Engine::Perf,
        "ctimer" => Engine::Ctimer,
        "itimer" => Engine::Itimer,
        _ => return None,
    })
}

/// Parses `k=v,k=v` (empty: no labels).
pub fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Reads variable `name`; `parse` turns it into a value or says why not.
pub fn env<T>(
    name: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, Error> {
    match std::env::var(name) {
        Ok(v) => parse(&v).map(Some).map_err(|reason| Error::Env {
            var: name,
            value: v,
            reason,
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::Env {
            var: name,
            value: v.to_string_lossy().into_owned(),
            reason: "not UTF-8".into(),
        }),
    }
}

/// The host name, for the `instance` label.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_engine("CTIMER"), Some(Engine::Ctimer));
        assert_eq!(parse_engine("x"), None);
        assert_eq!(
            parse_labels("a=1, b = 2"),
            Some(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(parse_labels("a"), None);
        assert_eq!(parse_labels(""), Some(vec![]));
    }
}
