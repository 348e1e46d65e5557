//! Request ids, the concurrency limit (503 with `Retry-After` instead of an unbounded queue)
//! and the request timeout. Body and batch sizes are checked where bodies are read
//! ([`crate::input`]), image pixel counts from the header before decoding.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// The id of a request (a UUID), also sent back as `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Middleware: gives every request an id.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Middleware: at most `max_concurrency` requests at once; the next is answered 503
/// `overloaded` with `Retry-After: 1` at once.
pub async fn limit_concurrency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let _slot = state.try_admit()?;
    Ok(next.run(request).await)
}

/// Middleware: a request still running after `request_timeout_ms` is answered 503 `timeout`.
pub async fn timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    within(state.config().request_timeout_ms, request, next).await
}

/// Middleware: [`timeout`] with `study_timeout_ms`, for `/v1/predict/study`.
pub async fn study_timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    within(state.config().study_timeout_ms, request, next).await
}

async fn within(limit_ms: u64, request: Request, next: Next) -> Result<Response, ApiError> {
    let limit = Duration::from_millis(limit_ms);
    tokio::time::timeout(limit, next.run(request))
        .await
        .map_err(|_| {
            ApiError::unavailable(
                "timeout",
                format!("the request took longer than {} ms", limit.as_millis()),
                1,
            )
        })
}
