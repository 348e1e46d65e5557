//! The middleware that feeds [`crate::metrics::Metrics`] with every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;

/// Middleware: counts each request by its route template (not its raw path) and status, and
/// observes its latency.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics().observe_request(
        &route,
        response.status().as_str(),
        started.elapsed().as_secs_f64(),
    );
    response
}
