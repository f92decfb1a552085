//! A client of Pyroscope's Connect push API (`POST
//! URL/push.v1.PusherService/Push`, binary protobuf), which Kiln and
//! Grafana Pyroscope servers both take. The agent's push sink and `kiln
//! push` use it; retrying and queueing are the caller's.

use std::time::Duration;

use kiln_profile::push::{PUSH_PATH, PushRequest};

use crate::Error;
use crate::ship::error_chain;

/// Why a push failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushError {
    /// What went wrong, with its causes and the server's answer.
    pub message: String,
    /// A network error, a timeout, a 5xx, 408 or 429: worth retrying. A
    /// 4xx otherwise means the request itself is refused.
    pub retryable: bool,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PushError {}

/// A push client for one server.
#[derive(Clone, Debug)]
pub struct PushClient {
    client: reqwest::Client,
    endpoint: String,
    tenant: Option<String>,
    token: Option<String>,
}

impl PushClient {
    /// A client of the server at `url` (`http://host:port`, or with a path
    /// prefix), each request limited to `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<PushClient, Error> {
        let base = url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "push URL {url:?}: expected http://host:port or https://host:port"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("push URL {url:?}: {e}")))?;
        Ok(PushClient {
            client,
            endpoint: format!("{base}{PUSH_PATH}"),
            tenant: None,
            token: None,
        })
    }

    /// Sends `X-Scope-OrgID: tenant` with every push.
    pub fn tenant(mut self, tenant: Option<String>) -> Self {
        self.tenant = tenant;
        self
    }

    /// Sends `Authorization: Bearer token` with every push.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The full URL pushed to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Pushes one request.
    pub async fn push(&self, req: &PushRequest) -> Result<(), PushError> {
        let mut r = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/proto")
            .header("connect-protocol-version", "1")
            .body(req.to_bytes());
        if let Some(t) = &self.tenant {
            r = r.header("x-scope-orgid", t);
        }
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.map_err(|e| PushError {
            message: format!("{}: {}", self.endpoint, error_chain(&e)),
            retryable: true,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(PushError {
            message: format!("{}: HTTP {status}: {}", self.endpoint, text.trim()),
            retryable: status.is_server_error() || matches!(status.as_u16(), 408 | 429),
        })
    }
}
