//! `kiln top`, `flamegraph`, `diff` and `convert` on real files.

use serde_json::Value;

use crate::{golden, kiln, kiln_ok, snapshot};

#[test]
fn help_is_stable() {
    snapshot("help.txt", &kiln_ok(["--help"]));
    snapshot("help-top.txt", &kiln_ok(["top", "--help"]));
}

#[test]
fn top_json_has_the_contract_shape_and_right_answer() {
    for (file, hot, ty) in [
        ("pprof/go-cpu.pb.gz", "main.spin", "cpu"),
        ("jfr/hot-jdk17.jfr", "Hot.spin", "cpu"),
        ("folded/perf-hotc.folded", "burn_a", "samples"),
    ] {
        let out = kiln_ok([
            "top".as_ref(),
            golden(file).as_os_str(),
            "--format".as_ref(),
            "json".as_ref(),
        ]);
        let j: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["type"], ty, "{file}");
        let rows = j["rows"].as_array().unwrap();
        assert_eq!(rows[0]["name"], hot, "{file}");
        let total = j["total"].as_i64().unwrap();
        assert!(total > 0);
        let selfs: Vec<i64> = rows.iter().map(|r| r["self"].as_i64().unwrap()).collect();
        assert!(
            selfs.windows(2).all(|w| w[0] >= w[1]),
            "rows sorted by self: {selfs:?}"
        );
        assert!(
            rows.iter()
                .all(|r| r["total"].as_i64().unwrap() >= r["self"].as_i64().unwrap())
        );
    }
}

#[test]
fn top_text_marks_pareto_and_groups_threads() {
    let out = kiln_ok([
        "top".as_ref(),
        golden("jfr/hot-jdk17.jfr").as_os_str(),
        "--group-by".as_ref(),
        "thread_pool".as_ref(),
    ]);
    assert!(out.starts_with("Type: cpu (nanoseconds)"), "{out}");
    assert!(out.lines().any(|l| l.contains("* Hot.spin")), "{out}");
    assert!(
        out.contains("By thread_pool:") && out.contains("locker-*"),
        "{out}"
    );
}

#[test]
fn top_other_types_filters_and_merges() {
    let jfr = golden("jfr/hot-jdk17.jfr");
    let out = kiln_ok([
        "top".as_ref(),
        jfr.as_os_str(),
        "--type".as_ref(),
        "alloc_space".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["rows"][0]["name"], "Hot.allocate");
    let out = kiln_ok([
        "top".as_ref(),
        jfr.as_os_str(),
        "--label".as_ref(),
        "thread_name=worker-1".as_ref(),
        "--focus".as_ref(),
        "burnB".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
    ]);
    let j: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Hot.burnB")
            && !names.contains(&"Hot.burnA")
            && !names.contains(&"Hot.main"),
        "{names:?}"
    );
    // The same file twice is twice the total.
    let one: Value = serde_json::from_str(&kiln_ok([
        "top".as_ref(),
        jfr.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]))
    .unwrap();
    let two: Value = serde_json::from_str(&kiln_ok([
        "top".as_ref(),
        jfr.as_os_str(),
        jfr.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ]))
    .unwrap();
    assert_eq!(
        two["total"].as_i64().unwrap(),
        2 * one["total"].as_i64().unwrap()
    );
}

#[test]
fn flamegraph_writes_an_svg_with_the_hot_frames() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("g.svg");
    kiln_ok([
        "flamegraph".as_ref(),
        golden("pprof/go-cpu.pb.gz").as_os_str(),
        "-o".as_ref(),
        svg.as_os_str(),
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml") && text.contains("<svg"),
        "not an SVG"
    );
    for f in ["main.burnA", "main.burnB", "main.spin"] {
        assert!(text.contains(f), "{f} missing from the SVG");
    }
}

#[test]
fn diff_reports_growth_normalised_and_draws() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.folded");
    let new = dir.path().join("new.folded");
    std::fs::write(&base, "main;handle;parse 50\nmain;handle;render 50\n").unwrap();
    std::fs::write(&new, "main;handle;parse 300\nmain;handle;render 100\n").unwrap();
    let svg = dir.path().join("d.svg");
    let out = kiln_ok([
        "diff".as_ref(),
        base.as_os_str(),
        new.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
        "-o".as_ref(),
        svg.as_os_str(),
    ]);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["functions"][0]["name"], "parse");
    assert!((j["functions"][0]["self_delta_pct"].as_f64().unwrap() - 25.0).abs() < 1e-9);
    assert!((j["functions"][1]["self_delta_pct"].as_f64().unwrap() + 25.0).abs() < 1e-9);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("parse"));
    let text = kiln_ok(["diff".as_ref(), base.as_os_str(), new.as_os_str()]);
    assert!(text.lines().nth(2).unwrap().contains("+25.00%"), "{text}");
}

#[test]
fn convert_round_trips_through_folded_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("x.folded");
    let pb = dir.path().join("x.pb.gz");
    let json = dir.path().join("x.json");
    kiln_ok([
        "convert".as_ref(),
        golden("folded/perf-hotc.folded").as_os_str(),
        "-o".as_ref(),
        pb.as_os_str(),
    ]);
    kiln_ok([
        "convert".as_ref(),
        pb.as_os_str(),
        "-o".as_ref(),
        folded.as_os_str(),
        "--to".as_ref(),
        "folded".as_ref(),
    ]);
    let original = std::fs::read_to_string(golden("folded/perf-hotc.folded")).unwrap();
    let back = std::fs::read_to_string(&folded).unwrap();
    // The thread prefix was read as a frame (no --thread-prefix): identical text.
    let mut a: Vec<&str> = original.lines().collect();
    a.sort();
    assert_eq!(a.join("\n") + "\n", back);
    kiln_ok([
        "convert".as_ref(),
        golden("jfr/hot-jdk17.jfr").as_os_str(),
        "-o".as_ref(),
        json.as_os_str(),
        "--to".as_ref(),
        "json".as_ref(),
    ]);
    let j: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(j["sample_types"][0][0], "cpu");
    assert!(
        j["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["labels"][0]["str"] == "worker-1")
    );
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"\xff\xfe\x00\x01 not a profile").unwrap();
    let truncated = dir.path().join("cut.jfr");
    let jfr = std::fs::read(golden("jfr/hot-jdk17.jfr")).unwrap();
    std::fs::write(&truncated, &jfr[..jfr.len() / 3]).unwrap();
    let missing = dir.path().join("missing.pb.gz");
    for (file, needle) in [
        (&garbage, "unrecognised format"),
        (&truncated, "JFR chunk 0"),
        (&missing, "cannot read"),
    ] {
        let out = kiln(["top".as_ref(), file.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&*file.display().to_string()) && err.contains(needle),
            "{err}"
        );
    }
    let out = kiln([
        "top".as_ref(),
        golden("jfr/hot-jdk17.jfr").as_os_str(),
        "--type".as_ref(),
        "wall".as_ref(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("no sample type \"wall\"") && err.contains("cpu/nanoseconds"),
        "{err}"
    );
    let out = kiln([
        "top".as_ref(),
        golden("jfr/hot-jdk17.jfr").as_os_str(),
        "--focus".as_ref(),
        "(".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad regular expression"));
}
