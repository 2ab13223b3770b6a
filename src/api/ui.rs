//! The web view at `/ui`: a static page (HTML, one script, one stylesheet, compiled into the
//! binary) that holds no data. The script reads a bearer token from the URL fragment (which a
//! browser never sends to a server) and reads everything it shows from the ordinary API with
//! it, so the page sees exactly what that token may see and nothing is rendered on the server.
//!
//! # Guarantees
//! - The three assets are the only paths served without a token ([`is_open`]); they carry no
//!   object, event or secret.
//! - Every asset goes out with a Content-Security-Policy that allows scripts, styles and
//!   connections only from the page's own origin (no inline script, no external fetch), and
//!   forbids framing; the script builds the DOM with text nodes only (no `innerHTML`).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// What every asset of the page is served with.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The paths of the page's assets: served without a token (they hold no data).
pub fn is_open(path: &str) -> bool {
    matches!(path, "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = || async { asset("text/html; charset=utf-8", PAGE) };
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_never_parses_html_from_data() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "app.js uses {sink}");
        }
        assert!(
            !PAGE.contains("<script>"),
            "inline script would need 'unsafe-inline'"
        );
    }

    #[test]
    fn only_the_assets_are_open() {
        assert!(is_open("/ui") && is_open("/ui/app.js"));
        assert!(!is_open("/ui/data") && !is_open("/uix") && !is_open("/apis/tend.dev/v1"));
    }
}
