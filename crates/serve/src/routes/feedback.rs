//! `POST /v1/feedback`: the true label of an earlier prediction or study, for monitoring.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::input::json_body;
use crate::prediction_log::FeedbackTarget;
use crate::state::AppState;

/// Longest request id accepted.
const MAX_ID_LEN: usize = 128;

/// The true label of a prediction or a study.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The `request_id` of the prediction (for a batch, the entry's id), or the `study_id` of
    /// a study (`/v1/predict/study`).
    pub request_id: String,
    /// The true class name (one of the model's classes).
    pub label: String,
}

/// What a feedback id named.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackKind {
    /// A single-image prediction, a batch entry or a study's slice.
    Prediction,
    /// A study.
    Study,
}

/// Feedback stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackResponse {
    /// The prediction's or study's id.
    pub request_id: String,
    /// The stored label.
    pub label: String,
    /// Whether the id named a prediction or a study.
    pub kind: FeedbackKind,
}

/// Record the true label of an earlier prediction or study.
///
/// A second feedback for the same id replaces the first.
#[utoipa::path(
    post,
    path = "/v1/feedback",
    tag = "monitoring",
    request_body(content = FeedbackRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = FeedbackResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No prediction or study has that id", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not one of the model's classes", body = ErrorBody),
        (status = 503, description = "Overloaded, timed out or not ready", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn feedback(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<FeedbackResponse>, ApiError> {
    let body: FeedbackRequest = json_body(request, state.config().max_body_bytes).await?;
    if body.request_id.is_empty() || body.request_id.len() > MAX_ID_LEN {
        return Err(ApiError::bad_request(
            "invalid_request_id",
            format!("request_id must have 1 to {MAX_ID_LEN} characters"),
        ));
    }
    let model = state.model()?;
    let classes = &model.predictor.metadata().class_names;
    if !classes.contains(&body.label) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_label",
            format!("label `{}` is not one of {classes:?}", body.label),
        ));
    }
    let kind = match state.log().feedback(&body.request_id, &body.label).await? {
        Some(FeedbackTarget::Prediction) => FeedbackKind::Prediction,
        Some(FeedbackTarget::Study) => FeedbackKind::Study,
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_request_id",
                format!("no prediction or study has id `{}`", body.request_id),
            ));
        }
    };
    Ok(Json(FeedbackResponse {
        request_id: body.request_id,
        label: body.label,
        kind,
    }))
}
