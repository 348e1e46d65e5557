//! `GET /v1/model`: the model card and metadata of the loaded model.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, ModelRef};

/// What the service knows about the loaded model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    /// Name and version.
    pub model: ModelRef,
    /// Where it was loaded from (package path or registry URI).
    pub source: String,
    /// When it was loaded, in seconds since the Unix epoch.
    pub loaded_unix: u64,
    /// Architecture (`resnet18`, `efficientnet-lite0`, …).
    pub architecture: String,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// The positive class.
    pub positive_class: String,
    /// Operating threshold on the positive class's calibrated probability.
    pub threshold: f64,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// Calibration temperature.
    pub temperature: f64,
    /// Side of the square network input in pixels.
    pub input_size: u32,
    /// SHA-256 of the weights.
    pub weights_sha256: String,
    /// The covidct version that made the package.
    pub covidct_version: String,
    /// When the package was made, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// How slice probabilities become a study (patient) verdict, fitted on validation
    /// patients; absent for packages trained without them (their studies get no verdict).
    pub study_rule: Option<StudyRule>,
    /// The evaluation summary stored in the package.
    #[schema(value_type = Object)]
    pub evaluation: serde_json::Value,
    /// The model card (Markdown).
    pub model_card: String,
    /// The model card as an HTML fragment (raw HTML, links and images of the Markdown inert).
    pub model_card_html: String,
}

/// The package's study rule (`/v1/predict/study`).
#[derive(Debug, Serialize, ToSchema)]
pub struct StudyRule {
    /// Aggregation of the slice probabilities: `mean`, `mean-logit`, `top-mean:F`, `max`,
    /// `noisy-or`.
    pub rule: String,
    /// Temperature dividing the aggregate's log-odds.
    pub temperature: f64,
    /// Threshold on the calibrated study probability.
    pub threshold: f64,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// Validation patients (groups) it was fitted on.
    pub fitted_on_groups: usize,
}

/// The model card and metadata.
#[utoipa::path(
    get,
    path = "/v1/model",
    tag = "model",
    responses(
        (status = 200, description = "The loaded model", body = ModelInfo),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 503, description = "No model loaded yet", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn model_info(State(state): State<AppState>) -> Result<Json<ModelInfo>, ApiError> {
    let model = state.model()?;
    let metadata = model.predictor.metadata();
    Ok(Json(ModelInfo {
        model: model.reference.clone(),
        source: model.source.clone(),
        loaded_unix: model.loaded_unix,
        architecture: metadata.architecture.to_string(),
        class_names: metadata.class_names.clone(),
        positive_class: metadata.positive_class_name().to_owned(),
        threshold: metadata.threshold,
        threshold_rule: metadata.threshold_rule.clone(),
        temperature: metadata.temperature,
        input_size: metadata.preprocess.size,
        weights_sha256: metadata.weights_sha256.clone(),
        covidct_version: metadata.covidct_version.clone(),
        created_unix: metadata.created_unix,
        study_rule: metadata.group.as_ref().map(|g| StudyRule {
            rule: g.rule.to_string(),
            temperature: g.temperature,
            threshold: g.threshold,
            threshold_rule: g.threshold_rule.to_string(),
            fitted_on_groups: g.fitted_on_groups,
        }),
        evaluation: metadata.evaluation.clone(),
        model_card: model.model_card.clone(),
        model_card_html: model.model_card_html.clone(),
    }))
}
