//! What can go wrong: starting the server ([`Error`]), and answering a
//! request (`ApiError`, the one place a store error becomes an HTTP status).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What can go wrong starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    /// The configuration file is wrong.
    #[error("configuration: {0}")]
    Config(String),
}

/// A refusal or failure, as JSON `{"error": ...}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError(
    pub(crate) StatusCode,
    pub(crate) String,
    pub(crate) Option<std::time::Duration>,
);

impl ApiError {
    pub(crate) fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(status, msg.into(), None)
    }

    pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, msg.into())
    }

    pub(crate) fn too_large(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg.into())
    }
}

impl From<kiln_store::Error> for ApiError {
    fn from(e: kiln_store::Error) -> ApiError {
        match e {
            kiln_store::Error::Query { .. } => ApiError::bad(e.to_string()),
            kiln_store::Error::TooLarge { .. } => ApiError::too_large(e.to_string()),
            kiln_store::Error::Profile(p) => ApiError::bad(p.to_string()),
            kiln_store::Error::Unavailable { retry_after, .. } => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
                Some(retry_after),
            ),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response();
        if let Some(after) = self.2 {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        r
    }
}
