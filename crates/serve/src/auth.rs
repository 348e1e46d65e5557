//! API keys: `X-API-Key: KEY` or `Authorization: Bearer KEY`. Prediction routes take an API
//! key, admin routes an admin key; both are required unless authentication is turned off.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::ApiKeys;
use crate::error::ApiError;
use crate::state::AppState;

/// The key a request presents, if any.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn check(keys: &ApiKeys, headers: &HeaderMap) -> Result<(), ApiError> {
    match presented_key(headers) {
        None => Err(unauthorized(
            "an API key is required: send `X-API-Key: KEY` or `Authorization: Bearer KEY`",
        )),
        Some(key) if keys.contains(key) => Ok(()),
        Some(_) => Err(unauthorized("the API key is not valid")),
    }
}

/// Middleware for prediction routes.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = state.config();
    if config.auth {
        check(&config.api_keys, request.headers())?;
    }
    Ok(next.run(request).await)
}

/// Middleware for admin routes: an API key that is not an admin key gets 403.
pub async fn require_admin_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = state.config();
    if config.auth {
        if let Some(key) = presented_key(request.headers())
            && config.api_keys.contains(key)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs an admin key, not an API key",
            ));
        }
        check(&config.admin_keys, request.headers())?;
    }
    Ok(next.run(request).await)
}
