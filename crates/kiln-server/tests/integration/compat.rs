//! Existing clients push unchanged: the `pyroscope` crate (Connect push,
//! gzip), JFR from a JVM through `/ingest?format=jfr` (raw and multipart),
//! folded and lines through `/ingest`; and several instances merge exactly.

use std::time::Duration;

use base64::Engine as _;
use kiln_profile::DecodeOptions;
use kiln_profile::push::PushRequest;

use crate::{Server, golden};

#[inline(never)]
fn busy_leaf(n: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// This thread's CPU time so far, from the kernel's schedstat.
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn pyroscope_crate_pushes_and_reads_back() {
    let server = Server::start();
    let agent = pyroscope::pyroscope::PyroscopeAgentBuilder::new(
        &server.url,
        "pyro-app",
        100,
        "pyroscope-rs",
        "test",
        pyroscope::backend::pprof::pprof_backend(
            pyroscope::backend::pprof::PprofConfig::default(),
            pyroscope::backend::BackendConfig::default(),
        ),
    )
    .tags(vec![("region", "eu-west-1")])
    .build()
    .unwrap();
    let running = agent.start().unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let mut x = 0u64;
    let cpu_before = thread_cpu_ns();
    while std::time::Instant::now() < until {
        x = x.wrapping_add(busy_leaf(1_000_000));
    }
    let busy_cpu = thread_cpu_ns() - cpu_before;
    std::hint::black_box(x);
    let ready = running.stop().unwrap();
    ready.shutdown();

    let (code, names) = server.get("/pyroscope/label-values", &[("label", "service_name")]);
    assert_eq!(code, 200);
    assert_eq!(names, serde_json::json!(["pyro-app"]));
    let (_, regions) = server.get("/api/v1/label-values", &[("name", "region")]);
    assert_eq!(regions, serde_json::json!(["eu-west-1"]));
    let p = server
        .pprof(r#"process_cpu{service_name="pyro-app"}"#)
        .expect("the pushed profile reads back");
    let ty = p.default_type_index().unwrap();
    let top = kiln_profile::top(&p, ty).unwrap();
    // The loop's own frame carries the CPU time this thread spent in it (its
    // leaf may be an inlined helper). The backend samples the whole process,
    // where other tests run beside this one, so the truth is this thread's
    // own clock, not a share of the total.
    let busy = top
        .rows
        .iter()
        .filter(|r| r.name.contains("busy_leaf"))
        .map(|r| r.total)
        .max()
        .unwrap_or(0);
    let busy_cpu = busy_cpu as i64;
    assert!(
        busy * 10 > busy_cpu * 7 && busy * 10 < busy_cpu * 13,
        "busy_leaf {busy} ns sampled, {busy_cpu} ns on the thread's clock, of {} in all",
        top.total
    );
    // And through Pyroscope's own render API.
    let (code, fb) = server.get(
        "/pyroscope/render",
        &[
            (
                "query",
                r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="pyro-app"}"#,
            ),
            ("from", "now-1h"),
            ("until", "now"),
        ],
    );
    assert_eq!(code, 200, "{fb}");
    let names = fb["flamebearer"]["names"].as_array().unwrap();
    assert!(
        names
            .iter()
            .any(|n| n.as_str().unwrap().contains("busy_leaf"))
    );
    assert!(fb["flamebearer"]["numTicks"].as_i64().unwrap() > 0);
}

#[test]
fn jfr_from_the_jdk_ingests_raw_and_multipart() {
    let server = Server::start();
    let jfr = golden("jfr/hot-jdk17.jfr");
    let c = server.client();
    let r = c
        .post(format!("{}/ingest", server.url))
        .query(&[("name", "hot{env=raw}"), ("format", "jfr")])
        .body(jfr.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let form = reqwest::blocking::multipart::Form::new().part(
        "jfr",
        reqwest::blocking::multipart::Part::bytes(jfr.clone()).file_name("jfr"),
    );
    let r = c
        .post(format!("{}/ingest", server.url))
        .query(&[("name", "hot{env=multipart}"), ("format", "jfr")])
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let original = kiln_profile::decode(&jfr, &DecodeOptions::default()).unwrap();
    for env in ["raw", "multipart"] {
        for (ty, name) in [
            ("cpu", "process_cpu"),
            ("alloc_space", "memory"),
            ("delay", "mutex"),
        ] {
            let p = server
                .pprof(&format!(r#"{name}{{service_name="hot", env="{env}"}}"#))
                .unwrap_or_else(|| panic!("{env} {name}"));
            let i = p.sample_type_index(ty).unwrap();
            let j = original.sample_type_index(ty).unwrap();
            assert_eq!(p.total(i), original.total(j), "{env} {ty}");
        }
    }
    let (_, types) = server.get("/api/v1/profile-types", &[]);
    let types: Vec<&str> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        types
            .iter()
            .any(|t| t.starts_with("memory:alloc_space:bytes")),
        "{types:?}"
    );
}

#[test]
fn folded_and_lines_ingest_with_sample_rate() {
    let server = Server::start();
    let c = server.client();
    let send = |name: &str, format: &str, body: &str| {
        let r = c
            .post(format!("{}/ingest", server.url))
            .query(&[("name", name), ("format", format), ("sampleRate", "100")])
            .body(body.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    };
    send("app.cpu{host=a}", "folded", "main;work 30\nmain;idle 10\n");
    send(
        "app.cpu{host=b}",
        "lines",
        "main;work\nmain;work\nmain;idle\n",
    );
    let (_, top) = server.get(
        "/api/v1/top",
        &[
            (
                "query",
                r#"process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="app"}"#,
            ),
            ("from", "now-1h"),
        ],
    );
    // 100 Hz: each sample is 10 ms.
    assert_eq!(top["total"], (30 + 10 + 2 + 1) * 10_000_000i64, "{top}");
    assert_eq!(top["rows"][0]["name"], "work");
    assert_eq!(top["rows"][0]["pareto"], true);
}

#[test]
fn three_instances_merge_to_exactly_three_times_one() {
    let server = Server::start();
    let pprof = golden("pprof/go-cpu.pb.gz");
    let one = kiln_profile::decode(&pprof, &DecodeOptions::default()).unwrap();
    let c = server.client();
    for instance in ["i-1", "i-2", "i-3"] {
        let req = kiln_profile::push::request_for(
            &one,
            &[
                ("service_name".into(), "go-app".into()),
                ("instance".into(), instance.into()),
            ],
        );
        let r = c
            .post(format!("{}{}", server.url, kiln_profile::push::PUSH_PATH))
            .header("content-type", "application/proto")
            .body(req.to_bytes())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    }
    let merged = server
        .pprof(r#"process_cpu{service_name="go-app"}"#)
        .unwrap();
    for i in 0..one.sample_types.len() {
        let (t, u) = one.sample_type_names(i);
        let j = merged.sample_type_index(&format!("{t}:{u}")).unwrap();
        assert_eq!(merged.total(j), 3 * one.total(i), "{t}");
    }
    let single = server
        .pprof(r#"process_cpu{service_name="go-app", instance="i-2"}"#)
        .unwrap();
    assert_eq!(single.total(0), one.total(0));
    // Instances by label: three values.
    let (_, v) = server.get(
        "/pyroscope/label-values",
        &[
            ("label", "instance"),
            ("query", r#"process_cpu{service_name="go-app"}"#),
        ],
    );
    assert_eq!(v, serde_json::json!(["i-1", "i-2", "i-3"]));
    // The Connect JSON encoding lands too.
    let raw = kiln_profile::pprof::encode_gzip(&one);
    let body = serde_json::json!({"series": [{
        "labels": [{"name": "service_name", "value": "go-json"}, {"name": "__name__", "value": "process_cpu"}],
        "samples": [{"rawProfile": base64::engine::general_purpose::STANDARD.encode(&raw)}]
    }]});
    let r = c
        .post(format!("{}{}", server.url, kiln_profile::push::PUSH_PATH))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    assert_eq!(
        server
            .pprof(r#"process_cpu{service_name="go-json"}"#)
            .unwrap()
            .total(0),
        one.total(0)
    );
    // An empty request is a valid request with nothing in it.
    assert!(PushRequest::from_bytes(&[]).unwrap().series.is_empty());
}
