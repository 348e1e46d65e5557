//! `POST /v1/explain`: Grad-CAM of the positive class, overlaid on the image as PNG, or with the
//! raw map as JSON.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use covidct_imaging::{GreyImage, PreprocessConfig, fit_input};
use covidct_model::GradCam;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::input::{ImageForm, ImageJson, read_upload};
use crate::limits::RequestId;
use crate::routes::predict::{judge, prepare};
use crate::state::{AppState, LoadedModel, ModelRef};

/// Side of the overlay image in pixels.
const OVERLAY_SIDE: u32 = 384;

/// What `/v1/explain` answers with.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExplainFormat {
    /// The overlay as `image/png` (default).
    #[default]
    Png,
    /// JSON: the prediction, the raw map and the overlay in base64.
    Json,
}

/// Query of `/v1/explain`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ExplainQuery {
    /// `png` (default) or `json`.
    pub format: Option<ExplainFormat>,
}

/// The raw Grad-CAM map.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeatMap {
    /// Columns of the map (the network input side / 32).
    pub width: usize,
    /// Rows of the map.
    pub height: usize,
    /// `width × height` values in 0–1, row-major, over the square network input.
    pub values: Vec<f32>,
}

/// The JSON answer of `/v1/explain?format=json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainResponse {
    /// Request id.
    pub request_id: String,
    /// Predicted class.
    pub label: String,
    /// Calibrated probability of the positive class.
    pub probability: f64,
    /// The operating threshold.
    pub threshold: f64,
    /// The class explained (the positive class).
    pub explained_class: String,
    /// The model.
    pub model: ModelRef,
    /// The raw map.
    pub map: HeatMap,
    /// The overlay PNG in base64.
    pub overlay_png_base64: String,
    /// Milliseconds from arrival to answer.
    pub total_ms: f64,
}

/// Explain a prediction with Grad-CAM.
///
/// Takes one image like `/v1/predict`. Answers the heat map of the positive class overlaid on
/// the image as the network saw it (PNG, with `X-Covidct-Label` and `X-Covidct-Probability`
/// headers), or with `format=json` the prediction, the raw map and the overlay in base64.
/// Explanations are not logged as predictions.
#[utoipa::path(
    post,
    path = "/v1/explain",
    tag = "prediction",
    params(ExplainQuery),
    request_body(content(
        (ImageForm = "multipart/form-data"),
        (ImageJson = "application/json"),
        (String = "image/png"),
        (String = "image/jpeg"),
        (String = "application/dicom"),
        (String = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The overlay (PNG) or, with format=json, the map", content(
            (String = "image/png"),
            (ExplainResponse = "application/json"),
        )),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body or image over the limits", body = ErrorBody),
        (status = 415, description = "Content type or image format not accepted", body = ErrorBody),
        (status = 422, description = "Not a readable image (`invalid_image`), or not one the model can judge (`out_of_distribution`)", body = ErrorBody),
        (status = 503, description = "Overloaded, timed out or not ready", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn explain(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<ExplainQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let model = state.model()?;
    let upload = read_upload(request, state.config().max_body_bytes).await?;
    let mut prepared = prepare(&state, &model, &upload).await?;
    let (prediction, _) = judge(&model, &mut prepared).await?;
    if let Some(ood) = prediction.ood.as_ref().filter(|o| !o.in_distribution) {
        state.metrics().observe_refusal(ood);
        return Err(ApiError::out_of_distribution(ood));
    }
    let (cam, png) = grad_cam(&state, &model, prepared.decoded.image).await?;
    let metadata = model.predictor.metadata();
    match query.format.unwrap_or_default() {
        ExplainFormat::Png => {
            let mut response = ([(header::CONTENT_TYPE, "image/png")], png).into_response();
            let headers = response.headers_mut();
            if let Ok(label) = HeaderValue::from_str(&prediction.label) {
                headers.insert("x-covidct-label", label);
            }
            if let Ok(p) = HeaderValue::from_str(&format!("{:.6}", prediction.probability)) {
                headers.insert("x-covidct-probability", p);
            }
            Ok(response)
        }
        ExplainFormat::Json => Ok(Json(ExplainResponse {
            request_id,
            label: prediction.label,
            probability: prediction.probability,
            threshold: prediction.threshold,
            explained_class: metadata.positive_class_name().to_owned(),
            model: model.reference.clone(),
            map: HeatMap {
                width: cam.width,
                height: cam.height,
                values: cam.map,
            },
            overlay_png_base64: base64::engine::general_purpose::STANDARD.encode(&png),
            total_ms: arrived.elapsed().as_secs_f64() * 1e3,
        })
        .into_response()),
    }
}

/// Grad-CAM of the positive class for `image` and its overlay PNG, on the decoding pool.
pub(crate) async fn grad_cam(
    state: &AppState,
    model: &Arc<LoadedModel>,
    image: GreyImage,
) -> Result<(GradCam, Vec<u8>), ApiError> {
    let explaining = model.clone();
    state
        .on_pool(move || {
            let cam = explaining
                .predictor
                .explain(&image)
                .map_err(ApiError::internal)?;
            let preprocess = &explaining.predictor.metadata().preprocess;
            let png = overlay_png(&image, preprocess, &cam).map_err(ApiError::internal)?;
            Ok::<_, ApiError>((cam, png))
        })
        .await?
}

/// The image as the network saw it (same orientation, square, same resize mode) at [`OVERLAY_SIDE`], with the map
/// upsampled bilinearly and blended in a blue–red colour scale (more heat, more colour).
pub fn overlay_png(
    image: &GreyImage,
    preprocess: &PreprocessConfig,
    cam: &GradCam,
) -> Result<Vec<u8>, String> {
    let at_overlay_side = PreprocessConfig {
        size: OVERLAY_SIDE,
        ..*preprocess
    };
    let base = fit_input(image, &at_overlay_side);
    let side = OVERLAY_SIDE as usize;
    let mut rgb = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let heat = sample(
                cam,
                (x as f32 + 0.5) / side as f32,
                (y as f32 + 0.5) / side as f32,
            );
            let grey = f32::from(base.pixels[y * side + x]);
            let alpha = 0.6 * heat;
            for channel in colour(heat) {
                rgb.push(
                    (grey * (1.0 - alpha) + channel * alpha)
                        .round()
                        .clamp(0.0, 255.0) as u8,
                );
            }
        }
    }
    let buffer = image::RgbImage::from_raw(OVERLAY_SIDE, OVERLAY_SIDE, rgb)
        .ok_or_else(|| "overlay buffer has the wrong size".to_owned())?;
    let mut png = Vec::new();
    buffer
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the overlay: {e}"))?;
    Ok(png)
}

/// Bilinear sample of the map at relative position (`u`, `v`) in 0–1.
fn sample(cam: &GradCam, u: f32, v: f32) -> f32 {
    if cam.width == 0 || cam.height == 0 {
        return 0.0;
    }
    let fx = (u * cam.width as f32 - 0.5).clamp(0.0, (cam.width - 1) as f32);
    let fy = (v * cam.height as f32 - 0.5).clamp(0.0, (cam.height - 1) as f32);
    let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(cam.width - 1), (y0 + 1).min(cam.height - 1));
    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
    let at = |x: usize, y: usize| cam.map.get(y * cam.width + x).copied().unwrap_or(0.0);
    let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
    let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// A blue → green → yellow → red scale for `t` in 0–1.
fn colour(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * t - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * t - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * t - 1.0).abs()).clamp(0.0, 1.0);
    [r * 255.0, g * 255.0, b * 255.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_a_square_png_and_sampling_interpolates() {
        let cam = GradCam {
            width: 2,
            height: 1,
            map: vec![0.0, 1.0],
            peak: 3.0,
        };
        assert_eq!(sample(&cam, 0.0, 0.5), 0.0);
        assert_eq!(sample(&cam, 1.0, 0.5), 1.0);
        assert!((sample(&cam, 0.5, 0.5) - 0.5).abs() < 1e-6);
        let png = overlay_png(
            &GreyImage::filled(50, 30, 100),
            &PreprocessConfig::default(),
            &cam,
        )
        .expect("overlay");
        let decoded = image::load_from_memory(&png).expect("a PNG");
        assert_eq!(
            (decoded.width(), decoded.height()),
            (OVERLAY_SIDE, OVERLAY_SIDE)
        );
    }
}
