//! `POST /v1/admin/reload`: load the current champion without dropping requests.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, ModelRef};

/// The outcome of a reload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadResponse {
    /// The model served before.
    pub previous: Option<ModelRef>,
    /// The model served now.
    pub current: ModelRef,
    /// Seconds the resolution, loading and warm-up took.
    pub seconds: f64,
}

/// Re-resolve the model source and swap the new model in.
///
/// Requests in progress finish on the model they started with; new requests get the new one.
/// When loading fails, the old model stays.
#[utoipa::path(
    post,
    path = "/v1/admin/reload",
    tag = "admin",
    responses(
        (status = 200, description = "Reloaded", body = ReloadResponse),
        (status = 401, description = "Missing or unknown admin key", body = ErrorBody),
        (status = 403, description = "An API key, not an admin key", body = ErrorBody),
        (status = 500, description = "Loading failed; the previous model stays", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn reload(State(state): State<AppState>) -> Result<Json<ReloadResponse>, ApiError> {
    let started = Instant::now();
    let previous = state.model().ok().map(|m| m.reference.clone());
    let current = state.load_model().await.map_err(|e| {
        tracing::error!(error = %e, "reload failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            format!("reload failed, the previous model stays: {e}"),
        )
    })?;
    Ok(Json(ReloadResponse {
        previous,
        current,
        seconds: started.elapsed().as_secs_f64(),
    }))
}
