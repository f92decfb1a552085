//! `go tool pprof` reads what `kiln convert --to pprof` writes and agrees
//! with `kiln top`. Needs Go (`scripts/test` installs Debian's golang-go); a
//! machine without it fails this test rather than skipping it.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::{golden, kiln_ok};

/// `flat%` per function from `go tool pprof -top`.
fn go_top(file: &std::path::Path, sample_index: &str) -> BTreeMap<String, f64> {
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-nodecount=1000",
            "-nodefraction=0",
            "-edgefraction=0",
            &format!("-sample_index={sample_index}"),
        ])
        .arg(file)
        .output()
        .expect("`go` must be installed for this test: run scripts/test, which installs golang-go");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in stdout.lines() {
        if line.trim_start().starts_with("flat") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() >= 6 && cols[0] != "0" {
            let pct: f64 = cols[1].trim_end_matches('%').parse().unwrap();
            rows.insert(cols[5..].join(" "), pct);
        }
    }
    assert!(!rows.is_empty(), "no rows in:\n{stdout}");
    rows
}

fn kiln_top(file: &std::path::Path, ty: &str) -> BTreeMap<String, f64> {
    let out = kiln_ok([
        "top".as_ref(),
        file.as_os_str(),
        "-n".as_ref(),
        "0".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--type".as_ref(),
        ty.as_ref(),
    ]);
    let j: Value = serde_json::from_str(&out).unwrap();
    let total = j["total"].as_f64().unwrap();
    j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["self"].as_i64().unwrap() != 0)
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                100.0 * r["self"].as_f64().unwrap() / total,
            )
        })
        .collect()
}

#[test]
fn go_tool_pprof_reads_kiln_output_and_agrees_with_kiln_top() {
    let dir = tempfile::tempdir().unwrap();
    for (input, ty) in [
        ("jfr/hot-jdk17.jfr", "cpu"),
        ("jfr/hot-jdk17.jfr", "alloc_space"),
        ("folded/perf-hotc.folded", "samples"),
        ("pprof/go-cpu.pb.gz", "cpu"),
    ] {
        let out = dir
            .path()
            .join(format!("{}-{ty}.pb.gz", input.replace('/', "_")));
        kiln_ok([
            "convert".as_ref(),
            golden(input).as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--to".as_ref(),
            "pprof".as_ref(),
        ]);
        let go = go_top(&out, ty);
        let ours = kiln_top(&out, ty);
        assert_eq!(
            go.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{input} {ty}: functions differ"
        );
        for (name, pct) in &ours {
            assert!(
                (go[name] - pct).abs() < 0.01,
                "{input} {ty}: {name} is {pct:.2}% in kiln, {:.2}% in go",
                go[name]
            );
        }
    }
}
