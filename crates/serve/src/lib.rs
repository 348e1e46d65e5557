//! The covidct inference service: a REST API over a model package.
//!
//! - `POST /v1/predict`, `POST /v1/predict/batch`, `POST /v1/predict/study` (one verdict for
//!   a series of slices), `POST /v1/explain` (Grad-CAM),
//!   `GET /v1/model`, `POST /v1/feedback`, `POST /v1/admin/reload`;
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus);
//! - `GET /openapi.json` (OpenAPI 3.1, generated from the code), `GET /docs` (Swagger UI
//!   served from the binary), `GET /` (a page for a person).
//!
//! [`router`] builds the whole application from an [`AppState`]; [`serve`] runs it with
//! graceful shutdown. Inference runs off the async threads: decoding on a pool sized to the
//! cores, forward passes micro-batched on inference workers ([`batching`]); predictions are
//! logged to SQLite by a writer thread ([`prediction_log`]). The model source is a package path
//! or a registry URI resolved by a function the binary provides ([`RegistryResolver`]).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod auth;
pub mod batching;
mod card_html;
pub mod config;
mod error;
mod input;
mod limits;
pub mod metrics;
mod openapi;
mod page;
pub mod prediction_log;
mod request_metrics;
mod routes;
mod state;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa_swagger_ui::SwaggerUi;

pub use crate::config::{ApiKeys, ServeConfig};
pub use crate::error::{ApiError, ErrorBody, ErrorDetail, ServeError};
pub use crate::openapi::spec as openapi_spec;
pub use crate::routes::explain::overlay_png;
pub use crate::state::{AppState, ModelRef, ModelSource, RegistryResolver, ResolvedModel, Slot};

/// The whole application: every route with its authentication, limits, metrics, request ids,
/// JSON errors (404/405 and panics included) and, when configured, CORS.
pub fn router(state: AppState) -> Router {
    use routes::{admin, explain, feedback, health, model, predict, study};
    // Layers run outside-in in the reverse order of the calls: authentication first (an
    // unauthenticated request takes no slot), then the concurrency limit, then the timeout.
    let api = Router::new()
        .route("/v1/predict", post(predict::predict))
        .route("/v1/predict/batch", post(predict::predict_batch))
        .route("/v1/explain", post(explain::explain))
        .route("/v1/model", get(model::model_info))
        .route("/v1/feedback", post(feedback::feedback))
        .route_layer(from_fn_with_state(state.clone(), limits::timeout))
        .route_layer(from_fn_with_state(state.clone(), limits::limit_concurrency))
        .route_layer(from_fn_with_state(state.clone(), auth::require_api_key));
    // A study is many slices: its own body limit and timeout, the same key and slot rules.
    let studies = Router::new()
        .route("/v1/predict/study", post(study::predict_study))
        .route_layer(DefaultBodyLimit::max(state.config().max_study_bytes))
        .route_layer(from_fn_with_state(state.clone(), limits::study_timeout))
        .route_layer(from_fn_with_state(state.clone(), limits::limit_concurrency))
        .route_layer(from_fn_with_state(state.clone(), auth::require_api_key));
    let admin = Router::new()
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1/admin/monitoring/", get(admin::monitoring_index))
        .route("/v1/admin/monitoring/{file}", get(admin::monitoring_file))
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin_key));
    let mut app = Router::new()
        .merge(api)
        .merge(studies)
        .merge(admin)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/", get(page::page))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::spec()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config().max_body_bytes))
        .layer(from_fn_with_state(state.clone(), request_metrics::track))
        .layer(from_fn(limits::request_id))
        .layer(CatchPanicLayer::custom(panic_response));
    if let Some(cors) = cors_layer(&state.config().cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

/// Serves the application on `listener` until `shutdown` completes, then stops accepting
/// connections and lets the requests in progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a request handler panicked").into_response()
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse::<HeaderValue>().ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([
                header::HeaderName::from_static("x-request-id"),
                header::HeaderName::from_static("x-covidct-label"),
                header::HeaderName::from_static("x-covidct-probability"),
            ]),
    )
}
