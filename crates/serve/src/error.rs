//! Errors: [`ServeError`] for starting the service and loading models, [`ApiError`] for what a
//! client sees — always JSON with a stable `code` and a message, never a stack trace.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use covidct_model::OodAssessment;
use serde::Serialize;
use utoipa::ToSchema;

/// Why the service cannot start, or a model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is out of range.
    #[error("invalid serve setting {field} = {value}: {reason}")]
    Config {
        /// The setting at fault.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The model source cannot be resolved to a package.
    #[error("cannot resolve model source {source_uri}: {reason}")]
    Resolve {
        /// The source as given (`models:/…` or a path).
        source_uri: String,
        /// What went wrong.
        reason: String,
    },
    /// The package cannot be loaded or warmed up.
    #[error(transparent)]
    Model(#[from] covidct_model::ModelError),
    /// The prediction log cannot be opened or written.
    #[error("prediction log {path}: {reason}")]
    Log {
        /// The SQLite file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A worker thread could not be started or stopped answering.
    #[error("{0}")]
    Worker(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code and a human-readable message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `unauthorized`, `invalid_image`, `image_too_large`, `overloaded`,
    /// `out_of_distribution`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// With `out_of_distribution`: the gate's score and the checks that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodAssessment>,
}

/// An error answer: status, code, message, and `Retry-After` when retrying later helps.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The code and message.
    pub detail: ErrorDetail,
    /// Seconds after which a retry may succeed (503 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code,
                message: message.into(),
                ood: None,
            },
            retry_after: None,
        }
    }

    /// 400 `bad_request`-style errors with their own code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500 `internal`: the cause is logged, the client sees only that something failed.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// 422 `out_of_distribution`: the model cannot judge this image (the gate's verdict).
    pub fn out_of_distribution(assessment: &covidct_model::OodAssessment) -> Self {
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "out_of_distribution",
            format!(
                "not an image this model can judge: {}",
                assessment.summary()
            ),
        );
        error.detail.ood = Some(assessment.clone());
        error
    }

    /// The 503 answered while no model is loaded.
    pub fn not_ready() -> Self {
        Self::unavailable("not_ready", "the model is not loaded yet", 1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<covidct_imaging::DecodeError> for ApiError {
    fn from(error: covidct_imaging::DecodeError) -> Self {
        use covidct_imaging::DecodeErrorKind as Kind;
        let status = match error.kind {
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Empty => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        // The reason without the `<memory>` path prefix.
        Self::new(status, error.kind.code(), error.reason)
    }
}

impl From<covidct_study::StudyError> for ApiError {
    fn from(error: covidct_study::StudyError) -> Self {
        use covidct_study::StudyError as E;
        let (status, code) = match &error {
            E::Input { .. } => (StatusCode::BAD_REQUEST, "invalid_archive"),
            E::Empty(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no_usable_slice"),
            E::TooManySlices { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_slices"),
            E::TooManyBytes { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            E::TooManyPixels { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "study_too_large"),
            E::Mixed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "mixed_studies"),
            E::Model(_) => return Self::internal(error),
        };
        Self::new(status, code, error.to_string())
    }
}
