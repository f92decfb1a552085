//! Garbage, truncated and hostile bodies get a 4xx that says why, memory
//! stays bounded (a zip bomb is refused at the decompression cap), and the
//! server keeps serving.

use crate::{Server, golden};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    kiln_profile::compress::gzip(bytes)
}

#[test]
fn hostile_bodies_are_refused_and_the_server_keeps_serving() {
    let server = Server::start();
    let c = server.client();
    let push = |body: Vec<u8>, ct: &str, enc: Option<&str>| {
        let mut r = c
            .post(format!("{}{}", server.url, kiln_profile::push::PUSH_PATH))
            .header("content-type", ct)
            .body(body);
        if let Some(e) = enc {
            r = r.header("content-encoding", e);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let pprof = golden("pprof/go-cpu.pb.gz");
    let raw = kiln_profile::compress::gunzip(&pprof, 1 << 30).unwrap();
    let one = kiln_profile::decode(&pprof, &Default::default()).unwrap();
    let labels = vec![("service_name".to_string(), "h".to_string())];
    let good = kiln_profile::push::request_for(&one, &labels).to_bytes();

    // Garbage protobuf, garbage JSON, a truncated request.
    let (code, msg) = push(b"\xff\xff\xff\xff".to_vec(), "application/proto", None);
    assert_eq!(code, 400, "{msg}");
    let (code, msg) = push(b"{not json".to_vec(), "application/json", None);
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("JSON"), "{msg}");
    for cut in [1, good.len() / 3, good.len() - 1] {
        let (code, msg) = push(good[..cut].to_vec(), "application/proto", None);
        assert_eq!(code, 400, "cut at {cut}: {msg}");
    }
    // A valid request whose profile is truncated pprof.
    let req = kiln_profile::push::PushRequest::single(
        "process_cpu",
        &labels,
        raw[..raw.len() / 2].to_vec(),
        String::new(),
    );
    let (code, msg) = push(req.to_bytes(), "application/proto", None);
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("series 0"), "{msg}");
    // No service_name.
    let req = kiln_profile::push::request_for(&one, &[("x".into(), "y".into())]);
    let (code, msg) = push(req.to_bytes(), "application/proto", None);
    assert_eq!((code, msg.contains("service_name")), (400, true), "{msg}");
    // A good series and a bad one in one request: refused whole, and the
    // good one is not stored either (the total checked at the end counts
    // one good push only), so the client's corrected retry duplicates
    // nothing.
    let mut mixed = kiln_profile::push::request_for(&one, &labels);
    mixed.series.extend(req.series.clone());
    let (code, msg) = push(mixed.to_bytes(), "application/proto", None);
    assert_eq!((code, msg.contains("service_name")), (400, true), "{msg}");
    // Too many labels, too long a label.
    let many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("l{i}"), "v".into()))
        .chain(labels.clone())
        .collect();
    let (code, msg) = push(
        kiln_profile::push::request_for(&one, &many).to_bytes(),
        "application/proto",
        None,
    );
    assert_eq!(code, 400, "{msg}");
    let long = vec![("service_name".to_string(), "x".repeat(5000))];
    let (code, _) = push(
        kiln_profile::push::request_for(&one, &long).to_bytes(),
        "application/proto",
        None,
    );
    assert_eq!(code, 400);
    // A zip bomb: 256 MiB of zeros in under 3 MB (twice the 128 MiB cap),
    // as the body and as the profile inside a valid request: refused at
    // the cap (413), never inflated whole.
    let bomb = gzip(&vec![0u8; 256 << 20]);
    assert!(bomb.len() < 3 << 20, "{}", bomb.len());
    let (code, msg) = push(bomb.clone(), "application/proto", Some("gzip"));
    assert_eq!(code, 413, "{msg}");
    let req = kiln_profile::push::PushRequest::single("process_cpu", &labels, bomb, String::new());
    let (code, msg) = push(req.to_bytes(), "application/proto", None);
    assert_eq!(code, 413, "{msg}");
    // A body over the size limit is answered 413 from its Content-Length,
    // before it is read; the server may close the connection while the
    // client is still sending, which the client sees as a reset.
    let r = c
        .post(format!("{}{}", server.url, kiln_profile::push::PUSH_PATH))
        .header("content-type", "application/proto")
        .body(vec![0u8; 17 << 20])
        .send();
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }
    assert!(server.alive());
    // A bad tenant.
    let r = c
        .post(format!("{}{}", server.url, kiln_profile::push::PUSH_PATH))
        .header("content-type", "application/proto")
        .header("x-scope-orgid", "../etc")
        .body(good.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Legacy ingest: bad name, bad format, bad sampleRate, garbage JFR.
    let ingest = |params: &[(&str, &str)], body: Vec<u8>| {
        let r = c
            .post(format!("{}/ingest", server.url))
            .query(params)
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    for (params, word) in [
        (vec![("format", "folded")], "name"),
        (vec![("name", "x{a}"), ("format", "folded")], "k=v"),
        (vec![("name", "x"), ("format", "zip")], "format"),
        (vec![("name", "x"), ("format", "trie")], "trie"),
        (vec![("name", "x"), ("sampleRate", "0")], "sampleRate"),
        (vec![("name", "x"), ("from", "yesterday")], "from"),
        (vec![("name", "x"), ("format", "jfr")], "jfr"),
    ] {
        let (code, msg) = ingest(&params, b"FLR\0garbage".to_vec());
        assert_eq!(code, 400, "{params:?}: {msg}");
        assert!(msg.contains(word), "{params:?}: {msg}");
    }
    let (code, msg) = ingest(
        &[("name", "x"), ("format", "folded")],
        b"\xff\xfe not text".to_vec(),
    );
    assert_eq!(code, 400, "{msg}");
    // An empty body holds no samples: a clear 400, not a panic.
    for format in ["folded", "lines"] {
        let (code, msg) = ingest(&[("name", "x"), ("format", format)], Vec::new());
        assert_eq!(code, 400, "{format}: {msg}");
        assert!(msg.contains("no samples"), "{format}: {msg}");
    }

    // Queries: bad selector, bad time, until before from.
    for (params, word) in [
        (vec![("query", "cpu{a=}")], "query"),
        (vec![("query", "cpu"), ("from", "soon")], "from"),
        (
            vec![("query", "cpu"), ("from", "now"), ("until", "now-1h")],
            "until",
        ),
        (vec![("query", "cpu"), ("maxNodes", "-1")], "maxNodes"),
    ] {
        let (code, body) = server.get("/pyroscope/render", &params);
        assert_eq!(code, 400, "{params:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains(word), "{body}");
    }

    // Through all of it the server kept serving, and stored the good one.
    assert!(server.alive());
    let (code, msg) = push(good, "application/proto", None);
    assert_eq!(code, 200, "{msg}");
    assert_eq!(
        server
            .pprof(r#"process_cpu{service_name="h"}"#)
            .unwrap()
            .total(0),
        one.total(0)
    );
    let (_, m) = (
        0,
        c.get(format!("{}/metrics", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap(),
    );
    assert!(m.contains("kiln_server_ingest_errors_total"), "{m}");
}

/// Every input in `fuzz/regressions/ingest` (the `ingest` fuzz target's
/// format: route, flags, query, body) goes through the real router; none
/// may get a 500 (a handler's panic is answered 500), and the server
/// still answers after them all. Fails if there is nothing to replay.
#[test]
fn fuzz_regressions_of_every_endpoint_get_no_500() {
    use tower::ServiceExt;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/ingest");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let app = rt
        .block_on(kiln_server::App::open(kiln_server::Config::new(
            data.path(),
        )))
        .unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let req = kiln_server::testing::request_from_bytes(&bytes);
        let what = format!("{} {}", req.method(), req.uri());
        let r = rt.block_on(app.router().oneshot(req)).unwrap();
        assert_ne!(
            r.status().as_u16(),
            500,
            "{} ({what}) got a 500",
            path.display()
        );
        seen += 1;
    }
    assert!(seen > 0, "{} holds no input", dir.display());
    let ready = axum::http::Request::get("/ready")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = rt.block_on(app.router().oneshot(ready)).unwrap();
    assert_eq!(r.status().as_u16(), 200);
    eprintln!("{seen} ingest regressions replayed");
}
