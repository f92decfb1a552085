//! A query's CPU work never holds small requests: on a runtime with one
//! async thread, `/ready` and a label list are answered while a flame
//! graph of a large profile is still being built. (Were the tree built on
//! the async thread, nothing else could run until it was done.)

use std::time::Duration;

use tower::ServiceExt;

fn get(uri: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap()
}

#[test]
fn small_requests_are_answered_while_a_large_query_runs() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let app = rt
        .block_on(kiln_server::App::open(kiln_server::Config::new(
            data.path(),
        )))
        .unwrap();
    // 300,000 distinct stacks: a flame graph of them is real work.
    let text: String = (0..300_000)
        .map(|i| format!("main;mod_{};fn_{};leaf_{i} 1\n", i % 97, i % 1009))
        .collect();
    let p = kiln_profile::decode(text.as_bytes(), &Default::default()).unwrap();
    let labels = vec![
        ("__name__".to_string(), "process_cpu".to_string()),
        ("service_name".to_string(), "big".to_string()),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    rt.block_on(app.store().ingest("", labels, now - 1_000, p))
        .unwrap();
    let router = app.router();
    let uri = "/api/v1/flamegraph?query=process_cpu%7Bservice_name%3D%22big%22%7D&from=now-1h&until=now&maxNodes=1000000";
    rt.block_on(async {
        // Once, so the merged profile is in the server's answer cache: the
        // second time, all the query does is build the tree.
        let r = router.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let big = tokio::spawn(router.clone().oneshot(get(uri)));
        // Let it start; its tree is built on a blocking thread.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for uri in ["/ready", "/api/v1/labels"] {
            let r = router.clone().oneshot(get(uri)).await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{uri}");
            assert!(
                !big.is_finished(),
                "the large query was done before {uri} was answered: \
                 it held the async thread, or it is too small to show anything"
            );
        }
        let r = big.await.unwrap().unwrap();
        assert_eq!(r.status().as_u16(), 200);
    });
}
