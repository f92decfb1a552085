//! `kiln push` against a receiver of Pyroscope's Connect push API: a JFR
//! lands as one series per kind with the labels given, a Go pprof as
//! `process_cpu`; a refused push and an unreachable server are errors that
//! say why.

use std::sync::{Arc, Mutex};

use kiln_profile::DecodeOptions;
use kiln_profile::push::PushRequest;

use crate::{golden, kiln, kiln_ok};

/// Each push: the tenant header and the decoded request.
type Got = Arc<Mutex<Vec<(Option<String>, PushRequest)>>>;

/// A receiver on a free port answering `status` to every push.
fn receiver(rt: &tokio::runtime::Runtime, status: u16) -> (String, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        kiln_profile::push::PUSH_PATH,
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    let tenant = headers
                        .get("x-scope-orgid")
                        .map(|v| v.to_str().unwrap().to_string());
                    g.lock()
                        .unwrap()
                        .push((tenant, PushRequest::from_bytes(&body).unwrap()));
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        "refused: labels",
                    )
                }
            },
        ),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

fn label<'a>(s: &'a kiln_profile::push::RawProfileSeries, k: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|l| l.name == k)
        .map(|l| l.value.as_str())
}

#[test]
fn push_splits_by_kind_with_labels() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, got) = receiver(&rt, 200);
    let jfr = golden("jfr/hot-jdk17.jfr");
    let go = golden("pprof/go-cpu.pb.gz");
    let out = kiln_ok([
        "push".as_ref(),
        jfr.as_os_str(),
        go.as_os_str(),
        "--server".as_ref(),
        url.as_ref(),
        "--service".as_ref(),
        "hot".as_ref(),
        "--label".as_ref(),
        "region=eu-west-1".as_ref(),
        "--tenant".as_ref(),
        "team-a".as_ref(),
    ]);
    assert!(out.contains("pushed process_cpu"), "{out}");
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2, "one request per file");
    for (tenant, _) in got.iter() {
        assert_eq!(tenant.as_deref(), Some("team-a"));
    }
    let jfr_names: Vec<&str> = got[0]
        .1
        .series
        .iter()
        .map(|s| label(s, "__name__").unwrap())
        .collect();
    assert!(jfr_names.contains(&"process_cpu"), "{jfr_names:?}");
    assert!(jfr_names.contains(&"memory"), "{jfr_names:?}");
    assert!(jfr_names.contains(&"mutex"), "{jfr_names:?}");
    let original =
        kiln_profile::decode(&std::fs::read(&jfr).unwrap(), &DecodeOptions::default()).unwrap();
    for s in &got[0].1.series {
        assert_eq!(label(s, "service_name"), Some("hot"));
        assert_eq!(label(s, "region"), Some("eu-west-1"));
        let p = kiln_profile::decode(&s.samples[0].raw_profile, &DecodeOptions::default()).unwrap();
        p.validate().unwrap();
        // Each series holds exactly the types of its kind, totals intact.
        for i in 0..p.sample_types.len() {
            let (ty, unit) = p.sample_type_names(i);
            assert_eq!(
                kiln_profile::push::profile_name(ty),
                label(s, "__name__").unwrap()
            );
            let j = original.sample_type_index(&format!("{ty}:{unit}")).unwrap();
            assert_eq!(p.total(i), original.total(j), "{ty}");
        }
    }
    let go_series = &got[1].1.series;
    assert_eq!(go_series.len(), 1);
    assert_eq!(label(&go_series[0], "__name__"), Some("process_cpu"));
}

#[test]
fn push_errors_say_why() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, _) = receiver(&rt, 400);
    let go = golden("pprof/go-cpu.pb.gz");
    let args = |server: &str, label: &str| {
        vec![
            "push".to_string(),
            go.display().to_string(),
            "--server".into(),
            server.into(),
            "--service".into(),
            "svc".into(),
            "--label".into(),
            label.into(),
        ]
    };
    let out = kiln(args(&url, "a=b"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("400") && err.contains("refused: labels"),
        "{err}"
    );

    // Nothing listens on port 1.
    let out = kiln(args("http://127.0.0.1:1", "a=b"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("127.0.0.1:1") && err.contains("onnect"),
        "{err}"
    );

    let out = kiln(args("ftp://x", "a=b"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://"));
    let out = kiln(args(&url, "novalue"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
}
