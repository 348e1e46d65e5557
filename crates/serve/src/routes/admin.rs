//! Admin routes: `POST /v1/admin/reload` loads the current champion without dropping
//! requests; `GET /v1/admin/monitoring/…` serves the latest monitoring report.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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

/// `GET /v1/admin/monitoring/`: the latest monitoring report's index page.
#[utoipa::path(
    get,
    path = "/v1/admin/monitoring/",
    tag = "admin",
    responses(
        (status = 200, description = "The report's index.html", content_type = "text/html"),
        (status = 401, description = "Missing or unknown admin key", body = ErrorBody),
        (status = 403, description = "An API key, not an admin key", body = ErrorBody),
        (status = 404, description = "No report yet, or reports not configured", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn monitoring_index(State(state): State<AppState>) -> Result<Response, ApiError> {
    monitoring_file(State(state), Path("index.html".to_owned())).await
}

/// `GET /v1/admin/monitoring/{file}`: one file of the latest monitoring report (the Evidently
/// job's `OUT/latest/` folder, `--monitoring-reports OUT`): HTML, JSON or PNG.
#[utoipa::path(
    get,
    path = "/v1/admin/monitoring/{file}",
    tag = "admin",
    params(("file" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]*\.(html|json|png)$",
        description = "File name inside the latest report, e.g. drift.html")),
    responses(
        (status = 200, description = "The file"),
        (status = 401, description = "Missing or unknown admin key", body = ErrorBody),
        (status = 403, description = "An API key, not an admin key", body = ErrorBody),
        (status = 404, description = "No such file, or reports not configured", body = ErrorBody),
    ),
    security(("admin_key" = []))
)]
pub async fn monitoring_file(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = |message: String| ApiError::new(StatusCode::NOT_FOUND, "no_report", message);
    let Some(root) = state.config().monitoring_reports.clone() else {
        return Err(not_found(
            "monitoring reports are not configured (--monitoring-reports)".to_owned(),
        ));
    };
    let Some(content_type) = report_content_type(&file) else {
        return Err(not_found(format!("`{file}` is not a report file")));
    };
    let path = root.join("latest").join(&file);
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())))
    };
    match read {
        Ok(bytes) => Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(not_found(format!(
            "no `{file}` in the latest monitoring report yet"
        ))),
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "reading a monitoring report");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "report_unreadable",
                format!("reading `{file}` failed"),
            ))
        }
    }
}

/// The content type of a monitoring report file, or `None` when `name` is not one plain report
/// file name (the `file` parameter's documented pattern: a letter or digit, then letters, digits,
/// `_` or `-`, and an `.html`, `.json` or `.png` extension). This rules out separators, parent
/// references and hidden files.
fn report_content_type(name: &str) -> Option<&'static str> {
    let (stem, extension) = name.rsplit_once('.')?;
    let plain_stem = stem.starts_with(|c: char| c.is_ascii_alphanumeric())
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain_stem {
        return None;
    }
    match extension {
        "html" => Some("text/html; charset=utf-8"),
        "json" => Some("application/json"),
        "png" => Some("image/png"),
        _ => None,
    }
}
