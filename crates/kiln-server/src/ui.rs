//! The web UI: hand-written HTML, CSS and JavaScript modules under `ui/` at
//! the top of the repository, embedded in the binary — running it needs no
//! build step and no files beside the server.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../../ui/index.html");

/// Every file served under `/ui/`: name, body, content type.
const FILES: &[(&str, &str, &str)] = &[
    ("app.js", include_str!("../../../ui/app.js"), JS),
    ("util.js", include_str!("../../../ui/util.js"), JS),
    ("flame.js", include_str!("../../../ui/flame.js"), JS),
    ("glue.js", include_str!("../../../ui/glue.js"), JS),
    ("timeline.js", include_str!("../../../ui/timeline.js"), JS),
    ("export.js", include_str!("../../../ui/export.js"), JS),
    ("lanes.js", include_str!("../../../ui/lanes.js"), JS),
    ("tasks.js", include_str!("../../../ui/tasks.js"), JS),
    (
        "style.css",
        include_str!("../../../ui/style.css"),
        "text/css; charset=utf-8",
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

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

/// `GET /ui/{file}`: a script or the style sheet; 404 for anything else.
pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some(&(_, body, ty)) => asset(body, ty),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::FILES;

    /// Every module a script imports is served.
    #[test]
    fn every_imported_module_is_served() {
        for (name, body, _) in FILES {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let Some(path) = line.split('"').nth(1) else {
                    continue;
                };
                let file = path.trim_start_matches("./");
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {path}, which is not served"
                );
            }
        }
    }
}
