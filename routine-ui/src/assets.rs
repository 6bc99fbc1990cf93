//! The scripts the pages load, embedded in the binary (`assets/` says
//! where they come from). Their names carry their versions, so that they can
//! be cached for good.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// htmx: the live parts of a page swap in server-rendered HTML.
pub(crate) const HTMX: &str = "/assets/htmx-2.0.11.min.js";
/// htmx's server-sent events extension.
pub(crate) const HTMX_SSE: &str = "/assets/htmx-ext-sse-2.2.4.min.js";

const FILES: &[(&str, &str)] = &[
    (HTMX, include_str!("../assets/htmx-2.0.11.min.js")),
    (
        HTMX_SSE,
        include_str!("../assets/htmx-ext-sse-2.2.4.min.js"),
    ),
];

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let path = format!("/assets/{name}");
    match FILES.iter().find(|(served, _)| *served == path) {
        Some((_, text)) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *text,
        )
            .into_response(),
        // Plain text: a script tag shows no page.
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}
