//! `POST /v1/predict` and `POST /v1/predict/batch`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, Request, State};
use covidct_imaging::{
    DecodeOptions, DecodedImage, FileFormat, ImageFeatures, SliceStats, decode_bytes,
    image_features,
};
use covidct_model::{OodAssessment, Prediction, prepare_input};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::input::{
    BatchForm, BatchJson, Expect, ImageForm, ImageJson, Upload, read_upload, read_uploads,
};
use crate::limits::RequestId;
use crate::prediction_log::{PredictionRecord, now_unix_ms};
use crate::state::{AppState, LoadedModel, ModelRef};

/// Where a request's time went, in milliseconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Timing {
    /// Decoding, features and preprocessing.
    pub decode_ms: f64,
    /// Waiting for the forward pass (micro-batching).
    pub queue_ms: f64,
    /// The forward pass (shared by the batch).
    pub inference_ms: f64,
    /// Images in that forward pass.
    pub batch_size: usize,
    /// From the request's arrival to the answer, logging included.
    pub total_ms: f64,
}

/// The answer for one image.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PredictionResponse {
    /// Id of this prediction: give it back to `/v1/feedback` with the true label.
    pub request_id: String,
    /// Predicted class.
    pub label: String,
    /// Calibrated probability of the positive class.
    pub probability: f64,
    /// The operating threshold: positive when `probability >= threshold`.
    pub threshold: f64,
    /// The positive class's name.
    pub positive_class: String,
    /// Whether the model could judge the image: always true unless `ood=warn` was asked
    /// (refused images are otherwise answered 422 `out_of_distribution`).
    pub in_distribution: bool,
    /// The out-of-distribution gate's verdict (absent for models without a gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodAssessment>,
    /// The model that answered.
    pub model: ModelRef,
    /// Timing.
    pub timing: Timing,
}

/// What to do with an image the out-of-distribution gate refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OodPolicy {
    /// Answer 422 `out_of_distribution` (per entry in a batch): no label is given.
    #[default]
    Refuse,
    /// Answer the prediction anyway with `in_distribution: false` and the gate's verdict.
    Warn,
}

/// Query of the prediction endpoints.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct PredictQuery {
    /// `refuse` (default) or `warn`: see [`OodPolicy`].
    pub ood: Option<OodPolicy>,
}

impl PredictQuery {
    /// The query, or a 400 `invalid_query` naming the fault.
    pub(crate) fn parse(
        query: Result<Query<PredictQuery>, QueryRejection>,
    ) -> Result<OodPolicy, ApiError> {
        let Query(query) =
            query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        Ok(query.ood.unwrap_or_default())
    }
}

/// One entry of a batch answer: a prediction, or the error of that image alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchEntry {
    /// Position of the image in the request.
    pub index: usize,
    /// File name, when the client gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The prediction, when the image could be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction: Option<PredictionResponse>,
    /// Why this image failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The answer of a batch request, one entry per image in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// Id of the request; each entry has its own id.
    pub request_id: String,
    /// The model that answered.
    pub model: ModelRef,
    /// One entry per image.
    pub results: Vec<BatchEntry>,
}

/// A decoded, prepared image.
pub(crate) struct Prepared {
    pub decoded: DecodedImage,
    pub features: ImageFeatures,
    pub stats: SliceStats,
    pub input: Vec<f32>,
    pub decode_ms: f64,
}

/// Decodes (header dimensions checked against the pixel limit first), computes the monitoring
/// features and prepares the network input, on the decoding pool.
pub(crate) async fn prepare(
    state: &AppState,
    model: &Arc<LoadedModel>,
    upload: &Upload,
) -> Result<Prepared, ApiError> {
    let model = model.clone();
    let bytes = upload.bytes.clone();
    let hint = upload.hint;
    let max_pixels = state.config().max_pixels;
    state
        .on_pool(move || {
            let started = Instant::now();
            let metadata = model.predictor.metadata();
            let options = DecodeOptions {
                max_pixels,
                dicom_window: metadata.dicom_window,
            };
            let decoded = decode_bytes(&bytes, hint, &options)?;
            let features = image_features(&decoded.image);
            let stats = SliceStats::with_features(&decoded, &features);
            let side = metadata.preprocess.size as usize;
            let mut input = vec![0f32; side * side * metadata.in_channels];
            prepare_input(&decoded.image, metadata, &mut input);
            Ok(Prepared {
                decoded,
                features,
                stats,
                input,
                decode_ms: started.elapsed().as_secs_f64() * 1e3,
            })
        })
        .await?
}

fn extension(format: FileFormat) -> &'static str {
    match format {
        FileFormat::Png => "png",
        FileFormat::Jpeg => "jpg",
        FileFormat::Bmp => "bmp",
        FileFormat::Tiff => "tif",
        FileFormat::Dicom => "dcm",
    }
}

/// A prepared image through the micro-batched forward pass: the prediction with the gate's
/// verdict, and the forward pass's timing.
pub(crate) async fn judge(
    model: &LoadedModel,
    prepared: &mut Prepared,
) -> Result<(Prediction, crate::batching::BatchOutput), ApiError> {
    let output = model
        .batcher
        .infer(std::mem::take(&mut prepared.input))
        .await?;
    let prediction = model
        .predictor
        .judge(output.scored.clone(), &prepared.stats);
    Ok((prediction, output))
}

/// Counts a judged image in the metrics (a prediction, or a refusal by its first failed check)
/// and makes its log entry: refused images get an empty label, and the uploaded bytes are kept
/// only when the log stores images. `study` places a study's slice.
pub(crate) fn observed_record(
    state: &AppState,
    model: &LoadedModel,
    request_id: String,
    created_unix_ms: i64,
    (upload, prepared): (&Upload, &Prepared),
    prediction: &Prediction,
    study: Option<(String, usize)>,
) -> PredictionRecord {
    let judged = prediction.in_distribution();
    match prediction.ood.as_ref().filter(|_| !judged) {
        Some(ood) => state.metrics().observe_refusal(ood),
        None => state
            .metrics()
            .observe_prediction(&prediction.label, prediction.probability),
    }
    PredictionRecord {
        request_id,
        created_unix_ms,
        model_name: model.reference.name.clone(),
        model_version: model.reference.version.clone(),
        label: if judged {
            prediction.label.clone()
        } else {
            String::new()
        },
        probability: prediction.probability,
        threshold: prediction.threshold,
        features: prepared.features,
        in_distribution: judged,
        ood_score: prediction.ood.as_ref().map(|o| o.score),
        image: state.log().stores_images().then(|| {
            (
                upload.bytes.clone(),
                extension(prepared.decoded.source.format),
            )
        }),
        study,
    }
}

/// Decode → micro-batched forward pass → calibration and gate → metrics → durable log entry.
/// A refused image is logged (without a label) and answered 422 unless `policy` is `warn`.
async fn score(
    state: AppState,
    model: Arc<LoadedModel>,
    upload: Upload,
    request_id: String,
    arrived: Instant,
    policy: OodPolicy,
) -> Result<PredictionResponse, ApiError> {
    let mut prepared = prepare(&state, &model, &upload).await?;
    let (prediction, output) = judge(&model, &mut prepared).await?;
    let judged = prediction.in_distribution();
    let record = observed_record(
        &state,
        &model,
        request_id.clone(),
        now_unix_ms(),
        (&upload, &prepared),
        &prediction,
        None,
    );
    state.log().record(record).await?;
    if let Some(ood) = prediction
        .ood
        .as_ref()
        .filter(|_| !judged && policy == OodPolicy::Refuse)
    {
        return Err(ApiError::out_of_distribution(ood));
    }
    Ok(PredictionResponse {
        request_id,
        label: prediction.label,
        probability: prediction.probability,
        threshold: prediction.threshold,
        positive_class: model.predictor.metadata().positive_class_name().to_owned(),
        in_distribution: judged,
        ood: prediction.ood.clone(),
        model: model.reference.clone(),
        timing: Timing {
            decode_ms: prepared.decode_ms,
            queue_ms: output.queue_ms,
            inference_ms: output.inference_ms,
            batch_size: output.batch_size,
            total_ms: arrived.elapsed().as_secs_f64() * 1e3,
        },
    })
}

/// Classify one CT image.
///
/// The image comes as a multipart form (one file), as the raw body with its content type
/// (`image/png`, `image/jpeg`, `application/dicom`, `application/octet-stream`), or as JSON
/// with the file in base64. The prediction is logged with the request id.
#[utoipa::path(
    post,
    path = "/v1/predict",
    tag = "prediction",
    params(PredictQuery),
    request_body(content(
        (ImageForm = "multipart/form-data"),
        (ImageJson = "application/json"),
        (String = "image/png"),
        (String = "image/jpeg"),
        (String = "application/dicom"),
        (String = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "The prediction", body = PredictionResponse),
        (status = 400, description = "Malformed request (no image, two images, bad base64, bad JSON)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body or image over the limits", body = ErrorBody),
        (status = 415, description = "Content type or image format not accepted", body = ErrorBody),
        (status = 422, description = "Not a readable image (`invalid_image`), or not one the model can judge (`out_of_distribution`, with the gate's verdict in `error.ood`)", body = ErrorBody),
        (status = 503, description = "Overloaded, timed out or not ready (see Retry-After)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn predict(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<PredictionResponse>, ApiError> {
    let arrived = Instant::now();
    let policy = PredictQuery::parse(query)?;
    let model = state.model()?;
    let upload = read_upload(request, state.config().max_body_bytes).await?;
    score(state, model, upload, request_id, arrived, policy)
        .await
        .map(Json)
}

/// Classify several CT images in one request.
///
/// Up to the configured number of images, as a multipart form (one file per field) or as
/// JSON. Each image is answered on its own: a bad image, or one the out-of-distribution gate
/// refuses (`out_of_distribution`, unless `ood=warn`), fails only its own entry.
#[utoipa::path(
    post,
    path = "/v1/predict/batch",
    tag = "prediction",
    params(PredictQuery),
    request_body(content(
        (BatchForm = "multipart/form-data"),
        (BatchJson = "application/json"),
    )),
    responses(
        (status = 200, description = "One entry per image", body = BatchResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over the limit or too many images", body = ErrorBody),
        (status = 415, description = "Content type not accepted", body = ErrorBody),
        (status = 503, description = "Overloaded, timed out or not ready (see Retry-After)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn predict_batch(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<BatchResponse>, ApiError> {
    let arrived = Instant::now();
    let policy = PredictQuery::parse(query)?;
    let model = state.model()?;
    let config = state.config();
    let uploads = read_uploads(
        request,
        config.max_body_bytes,
        Expect::Batch(config.max_batch_images),
    )
    .await?;
    let mut tasks = JoinSet::new();
    let mut filenames = Vec::with_capacity(uploads.len());
    for (index, upload) in uploads.into_iter().enumerate() {
        filenames.push(upload.filename.clone());
        let id = format!("{request_id}-{index}");
        let job = score(state.clone(), model.clone(), upload, id, arrived, policy);
        tasks.spawn(async move { (index, job.await) });
    }
    let mut results: Vec<BatchEntry> = filenames
        .into_iter()
        .enumerate()
        .map(|(index, filename)| BatchEntry {
            index,
            filename,
            prediction: None,
            error: None,
        })
        .collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, outcome) = joined.map_err(ApiError::internal)?;
        let Some(entry) = results.get_mut(index) else {
            continue;
        };
        match outcome {
            Ok(prediction) => entry.prediction = Some(prediction),
            Err(error) => entry.error = Some(error.detail),
        }
    }
    Ok(Json(BatchResponse {
        request_id,
        model: model.reference.clone(),
        results,
    }))
}
