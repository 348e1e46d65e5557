//! The OpenAPI 3.1 document, generated from the handlers and types.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use covidct_imaging::Refusal;
use covidct_model::OodAssessment;

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{admin, explain, feedback, health, model, predict, study};

/// The service's API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "covidct",
        description = "SARS-CoV-2 classification of CT slices and studies: predictions with \
                       calibrated probabilities, study verdicts, Grad-CAM explanations, \
                       feedback for monitoring."
    ),
    paths(
        predict::predict,
        predict::predict_batch,
        study::predict_study,
        explain::explain,
        model::model_info,
        feedback::feedback,
        admin::reload,
        admin::monitoring_index,
        admin::monitoring_file,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(ErrorBody, ErrorDetail, OodAssessment, Refusal, predict::OodPolicy, explain::ExplainFormat)),
    modifiers(&Security),
    tags(
        (name = "prediction", description = "Classify and explain images and studies"),
        (name = "model", description = "The loaded model"),
        (name = "monitoring", description = "Ground truth for monitoring"),
        (name = "admin", description = "Operations that need the admin key"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes: an API key header, a bearer token, and the admin key.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "an admin key (also accepted as `Authorization: Bearer`)",
            ))),
        );
    }
}

/// The document, with the crate's version.
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}
