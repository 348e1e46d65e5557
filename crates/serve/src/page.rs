//! `GET /`: a small page for a person (HTML, CSS and JavaScript embedded in the binary; no
//! build step, nothing loaded from elsewhere).

use axum::response::Html;

/// The page.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
