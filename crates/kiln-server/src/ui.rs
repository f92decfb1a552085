//! The web UI: hand-written HTML, CSS and one JavaScript module under
//! `ui/` at the top of the repository, embedded in the binary — running it
//! needs no build step and no files beside the server.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../../ui/index.html");
const APP: &str = include_str!("../../../ui/app.js");
const STYLE: &str = include_str!("../../../ui/style.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Embedded: a new binary is a new UI, so always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/app.js`.
pub async fn app() -> Response {
    asset(APP, "text/javascript; charset=utf-8")
}

/// `GET /ui/style.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
