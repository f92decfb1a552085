//! Integration tests of `kiln-server`: a real server on a loopback port,
//! real clients (the published `pyroscope` crate, JFR from the JDK, plain
//! HTTP with hostile bodies).

mod compat;
mod hostile;
mod otlp;
mod prompt;
mod tenants;
mod threads;

use std::time::Duration;

use kiln_profile::DecodeOptions;

/// A server on a free port over a temporary store; lives as long as this.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    /// Starts one with the default configuration.
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// Starts one with this configuration file's text.
    pub fn start_with(toml: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = kiln_server::Config::new(dir.path())
            .apply_toml(toml)
            .unwrap();
        let app = rt.block_on(kiln_server::App::open(config)).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, app.router()).await });
        Server {
            url,
            _dir: dir,
            _rt: rt,
        }
    }

    /// A blocking client.
    pub fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// GET `path` with `params`; status and JSON body.
    pub fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let r = self
            .client()
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// The merged pprof of a query over all time, decoded.
    pub fn pprof(&self, query: &str) -> Option<kiln_profile::Profile> {
        let r = self
            .client()
            .get(format!("{}/api/v1/pprof", self.url))
            .query(&[("query", query), ("from", "0"), ("until", "now")])
            .send()
            .unwrap();
        if r.status().as_u16() == 404 {
            return None;
        }
        assert_eq!(r.status().as_u16(), 200);
        let p = kiln_profile::decode(&r.bytes().unwrap(), &DecodeOptions::default()).unwrap();
        p.validate().unwrap();
        Some(p)
    }

    /// The server still answers.
    pub fn alive(&self) -> bool {
        self.client()
            .get(format!("{}/ready", self.url))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }
}

/// A golden file of `kiln-profile`.
pub fn golden(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-profile/tests/data")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("golden file {}: {e}", p.display()))
}
