//! The dashboard's stylesheet and script, embedded in the binary and served
//! under names that carry a hash of their content, so a browser may keep
//! them for a year and still never runs an old script with a new page.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::PageError;
use crate::api::ApiError;

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// `ui.<hash>.css` and `ui.<hash>.js`, computed once.
fn names() -> &'static (String, String) {
    static NAMES: OnceLock<(String, String)> = OnceLock::new();
    NAMES.get_or_init(|| (named("ui", "css", CSS), named("ui", "js", JS)))
}

fn named(stem: &str, ext: &str, content: &str) -> String {
    let hash = Sha256::digest(content.as_bytes());
    let short: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{stem}.{short}.{ext}")
}

/// The stylesheet's URL.
pub(super) fn css_url() -> String {
    format!("/ui/assets/{}", names().0)
}

/// The script's URL.
pub(super) fn js_url() -> String {
    format!("/ui/assets/{}", names().1)
}

/// `GET /ui/assets/{name}`: the stylesheet or the script, cached for a year.
pub(super) async fn serve(Path(name): Path<String>) -> Response {
    let (css, js) = names();
    let (body, kind) = if name == *css {
        (CSS, "text/css; charset=utf-8")
    } else if name == *js {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return PageError(ApiError::NotFound(format!("no asset `{name}`"))).into_response();
    };
    let mut response = ([(header::CONTENT_TYPE, kind)], body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}
