//! What the agent's truth tests share: reading back the profiles an
//! agent wrote to a directory, and asking `go tool pprof` to read one.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The files under `dir` of profile `name` (`mutex`, `wall`, `memory`…).
pub fn files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let needle = format!("/{name}/");
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(&needle) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The profiles under `dir` of profile `name`, decoded.
pub fn profiles(dir: &Path, name: &str) -> Vec<kiln_profile::Profile> {
    files(dir, name)
        .iter()
        .map(|p| kiln_profile::decode(&std::fs::read(p).unwrap(), &Default::default()).unwrap())
        .collect()
}

/// What `go tool pprof -top ARGS FILE` prints; fails the test if it
/// cannot read the file.
pub fn go_top(file: &Path, args: &[&str]) -> String {
    let go = std::process::Command::new("go")
        .args(["tool", "pprof", "-top"])
        .args(args)
        .arg(file)
        .output()
        .expect("`go` must be installed (scripts/test installs golang-go)");
    assert!(
        go.status.success(),
        "go tool pprof: {}",
        String::from_utf8_lossy(&go.stderr)
    );
    String::from_utf8_lossy(&go.stdout).into_owned()
}

/// The value of sample type `ty` of the samples of `p` labelled `key`
/// = `value`.
pub fn labelled(p: &kiln_profile::Profile, ty: &str, key: &str, value: &str) -> i64 {
    let i = p.sample_type_index(ty).expect(ty);
    let n = p.sample_types.len();
    p.samples
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            p.labels(s.labels)
                .iter()
                .any(|l| p.str(l.key) == key && p.str(l.str) == value)
        })
        .map(|(k, _)| p.values[k * n + i])
        .sum()
}
