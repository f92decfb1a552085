//! Integration tests of the `kiln` binary: real files in, real tools
//! (`go tool pprof`) reading what it writes.

mod alerts;
mod cluster;
mod files;
mod gopprof;
mod heap;
mod push;
mod server;
mod storage_faults;
mod tasks;
mod ui;

use std::path::{Path, PathBuf};

/// Allocations of every test here are the agent's to sample (the heap
/// tests); without a running agent it only forwards.
#[global_allocator]
static ALLOC: kiln_agent::alloc::Profiled<std::alloc::System> =
    kiln_agent::alloc::Profiled::new(std::alloc::System);

/// One agent per process: the tests that start one take turns.
pub static ONE_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());
use std::process::{Command, Output};

/// A golden input of `kiln-profile`.
pub fn golden(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-profile/tests/data")
        .join(rel);
    assert!(p.exists(), "golden file {} is missing", p.display());
    p
}

/// Runs `kiln` with `args`.
pub fn kiln<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln")
}

/// Runs `kiln` and requires success; returns stdout.
pub fn kiln_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares with a snapshot under `tests/data`; `KILN_BLESS=1` rewrites it.
pub fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    if std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "snapshot {} is missing ({e}); KILN_BLESS=1 creates it",
            path.display()
        )
    });
    assert_eq!(
        expected,
        actual,
        "snapshot {} differs; KILN_BLESS=1 if intended",
        path.display()
    );
}
