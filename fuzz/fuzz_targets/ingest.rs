#![no_main]
//! Every endpoint of the server, end to end and in process: arbitrary
//! bytes become a request (route, content type, gzip claim, query string,
//! body: `kiln_server::testing::request_from_bytes`) sent through the real
//! router to a real store in a temporary directory. No answer may be a
//! 500 (the server answers a handler's panic with 500), and the server
//! keeps answering. Crashes go to `regressions/ingest/`, which the
//! server's tests replay.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Harness {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = kiln_server::Config::new(dir.path());
        // Small limits, so inputs reach them quickly.
        config.limits.max_body = 1 << 20;
        config.limits.max_decompressed = 4 << 20;
        let app = rt.block_on(kiln_server::App::open(config)).unwrap();
        let router = app.router();
        // The app (its store and upkeep) lives as long as the fuzzer.
        std::mem::forget(app);
        Harness {
            rt,
            router,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let req = kiln_server::testing::request_from_bytes(data);
    let what = format!("{} {}", req.method(), req.uri());
    let r = h.rt.block_on(h.router.clone().oneshot(req)).unwrap();
    assert_ne!(r.status().as_u16(), 500, "{what}");
});
