//! `POST /v1/predict/study`: one calibrated verdict for a series of slices.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, Request, State};
use base64::Engine;
use covidct_imaging::{DecodeOptions, SeriesInfo};
use covidct_model::Prediction;
use covidct_study::{
    ScoredSlice, SliceError, SliceFile, StudyAnswer, StudyLimits, StudyReport, Unreadable,
    assemble, check_pixels, is_zip, plan, read_zip, slice_id,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorBody};
use crate::input::{BatchForm, BatchJson, Expect, Upload, read_uploads};
use crate::limits::RequestId;
use crate::prediction_log::{StudyRecord, now_unix_ms};
use crate::routes::explain::grad_cam;
use crate::routes::predict::{Prepared, judge, observed_record, prepare};
use crate::state::{AppState, LoadedModel, ModelRef};

/// Query of `/v1/predict/study`.
#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct StudyQuery {
    /// Answer each DICOM series on its own instead of refusing a request that mixes several
    /// studies or series (default false).
    pub split: Option<bool>,
    /// Add the Grad-CAM overlay of each study's top driving slice (default false).
    pub explain: Option<bool>,
}

/// Grad-CAM of the slice that drove a verdict most.
#[derive(Debug, Serialize, ToSchema)]
pub struct StudyExplanation {
    /// The slice's position in the study's order.
    pub position: usize,
    /// The overlay PNG in base64 (as `/v1/explain` draws it).
    pub overlay_png_base64: String,
}

/// The verdict on one study (one DICOM series), as `covidct predict --study --json` prints it,
/// with the service's ids and, when asked, the Grad-CAM of its top driver.
#[derive(Debug, Serialize, ToSchema)]
pub struct StudyResult {
    /// The study, its verdict and its slices.
    #[serde(flatten)]
    pub report: StudyReport,
    /// With `explain=true`: Grad-CAM of the first driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<StudyExplanation>,
}

/// Where a study request's time went, in milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct StudyTiming {
    /// Reading the body and unpacking archives.
    pub read_ms: f64,
    /// Decoding, features and preprocessing of every slice (in parallel).
    pub decode_ms: f64,
    /// Forward passes of every slice (micro-batched).
    pub inference_ms: f64,
    /// From arrival to answer, logging included.
    pub total_ms: f64,
}

/// The answer of `/v1/predict/study`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StudyResponse {
    /// Id of the request.
    pub request_id: String,
    /// The model that answered.
    pub model: ModelRef,
    /// The positive class's name.
    pub positive_class: String,
    /// Files received (archive entries counted one by one).
    pub slices_received: usize,
    /// One study, or with `split=true` one per series.
    pub studies: Vec<StudyResult>,
    /// Files that could not be decoded.
    pub unreadable: Vec<Unreadable>,
    /// Timing.
    pub timing: StudyTiming,
}

/// The files of the request, archives unpacked, within the study limits; pixels are checked
/// from the headers before anything is decoded. Runs on the decoding pool.
fn unpack(
    uploads: Vec<Upload>,
    limits: StudyLimits,
    decode: DecodeOptions,
) -> Result<Vec<SliceFile>, ApiError> {
    let mut files: Vec<SliceFile> = Vec::new();
    let mut total = 0u64;
    for (index, upload) in uploads.into_iter().enumerate() {
        let name = upload
            .filename
            .clone()
            .unwrap_or_else(|| format!("file-{index}"));
        if is_zip(&upload.bytes) {
            for entry in read_zip(&upload.bytes, &name, &limits.remaining(files.len(), total))? {
                total += entry.bytes.len() as u64;
                files.push(entry);
            }
        } else {
            total += upload.bytes.len() as u64;
            files.push(SliceFile {
                name,
                bytes: upload.bytes.to_vec(),
            });
        }
        limits.check_count(files.len())?;
        limits.check_bytes(total)?;
    }
    check_pixels(&files, &decode, &limits)?;
    Ok(files)
}

/// Diagnose one study from a series of CT slices.
///
/// The slices come as a multipart form (one file per field, or one zip archive), as one zip
/// archive for the raw body (`application/zip`), or as JSON with the files in base64. DICOM
/// slices are grouped by StudyInstanceUID and SeriesInstanceUID and ordered by their position
/// (ImagePositionPatient along the slice normal), else by InstanceNumber; other formats keep
/// the natural order of their file names. A request that mixes series is refused
/// (`mixed_studies`) unless `split=true`. Slices the out-of-distribution gate refuses are
/// reported and left out of the study score; a study with too few usable slices gets no
/// verdict and says why. Limits on slices, bytes and pixels are checked before decoding. The
/// study and its slices are logged; give the `study_id` to `/v1/feedback`.
#[utoipa::path(
    post,
    path = "/v1/predict/study",
    tag = "prediction",
    params(StudyQuery),
    request_body(content(
        (BatchForm = "multipart/form-data"),
        (BatchJson = "application/json"),
        (String = "application/zip"),
    )),
    responses(
        (status = 200, description = "One verdict per study", body = StudyResponse),
        (status = 400, description = "Malformed request or unreadable zip archive (`invalid_archive`)", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Over the limits: `too_many_slices`, `body_too_large`, `study_too_large` (pixels)", body = ErrorBody),
        (status = 415, description = "Content type not accepted", body = ErrorBody),
        (status = 422, description = "Several studies or series without `split=true` (`mixed_studies`), or no slice could be decoded (`no_usable_slice`)", body = ErrorBody),
        (status = 503, description = "Overloaded, timed out or not ready (see Retry-After)", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn predict_study(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    query: Result<Query<StudyQuery>, QueryRejection>,
    request: Request,
) -> Result<Json<StudyResponse>, ApiError> {
    let arrived = Instant::now();
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let model = state.model()?;
    let config = state.config();
    let options = config.study_options(query.split.unwrap_or(false));
    let uploads = read_uploads(
        request,
        config.max_study_bytes,
        Expect::Study(config.max_study_slices),
    )
    .await?;
    let decode = DecodeOptions {
        max_pixels: config.max_pixels,
        dicom_window: model.predictor.metadata().dicom_window,
    };
    let limits = options.limits;
    let files = state
        .on_pool(move || unpack(uploads, limits, decode))
        .await??;
    let received = files.len();
    if received == 0 {
        return Err(covidct_study::StudyError::Empty(String::new()).into());
    }
    let read_ms = arrived.elapsed().as_secs_f64() * 1e3;

    // Decode every slice in parallel on the pool.
    let decoding = Instant::now();
    let mut tasks = JoinSet::new();
    for (index, file) in files.into_iter().enumerate() {
        let (state, model) = (state.clone(), model.clone());
        tasks.spawn(async move {
            let upload = Upload {
                hint: file.hint(),
                bytes: Bytes::from(file.bytes),
                filename: Some(file.name),
            };
            let prepared = prepare(&state, &model, &upload).await;
            (index, upload, prepared)
        });
    }
    let mut decoded: Vec<Option<(Upload, Prepared)>> = (0..received).map(|_| None).collect();
    let mut unreadable = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, upload, prepared) = joined.map_err(ApiError::internal)?;
        match prepared {
            Ok(prepared) => decoded[index] = Some((upload, prepared)),
            Err(error) => unreadable.push(Unreadable {
                index,
                name: upload.filename.unwrap_or_default(),
                error: SliceError {
                    code: error.detail.code,
                    message: error.detail.message,
                },
            }),
        }
    }
    unreadable.sort_by_key(|u| u.index);
    let readable: Vec<(usize, Upload, Prepared)> = decoded
        .into_iter()
        .enumerate()
        .filter_map(|(i, slot)| slot.map(|(u, p)| (i, u, p)))
        .collect();
    if readable.is_empty() {
        return Err(covidct_study::StudyError::nothing_decodable(&unreadable).into());
    }
    let decode_ms = decoding.elapsed().as_secs_f64() * 1e3;
    let names: Vec<&str> = readable
        .iter()
        .map(|(_, u, _)| u.filename.as_deref().unwrap_or_default())
        .collect();
    let infos: Vec<Option<&SeriesInfo>> = readable
        .iter()
        .map(|(_, _, p)| p.decoded.series.as_ref())
        .collect();
    let series = plan(&names, &infos, options.split)?;

    // Every slice through the micro-batched forward passes at once.
    let inferring = Instant::now();
    let mut tasks = JoinSet::new();
    for (position, (index, upload, mut prepared)) in readable.into_iter().enumerate() {
        let model = model.clone();
        tasks.spawn(async move {
            let judged = judge(&model, &mut prepared).await.map(|(p, _)| p);
            (position, index, upload, prepared, judged)
        });
    }
    let mut scored: Vec<Option<(usize, Upload, Prepared, Prediction)>> =
        (0..series.iter().map(|s| s.members.len()).sum())
            .map(|_| None)
            .collect();
    while let Some(joined) = tasks.join_next().await {
        let (position, index, upload, prepared, judged) = joined.map_err(ApiError::internal)?;
        scored[position] = Some((index, upload, prepared, judged?));
    }
    let inference_ms = inferring.elapsed().as_secs_f64() * 1e3;
    let mut slices = Vec::with_capacity(scored.len());
    let mut kept: Vec<Option<(Upload, Prepared)>> = (0..received).map(|_| None).collect();
    for (index, upload, prepared, prediction) in scored.into_iter().flatten() {
        slices.push(ScoredSlice {
            index,
            name: upload.filename.clone().unwrap_or_default(),
            series: prepared.decoded.series.clone(),
            prediction,
        });
        kept[index] = Some((upload, prepared));
    }
    let answers = assemble(&series, slices, model.predictor.metadata(), &options.rules);
    let mut studies = Vec::with_capacity(answers.len());
    let several = answers.len() > 1;
    for (k, answer) in answers.into_iter().enumerate() {
        let study_id = if several {
            format!("{request_id}-s{k}")
        } else {
            request_id.clone()
        };
        let explain = query.explain.unwrap_or(false);
        studies.push(answer_study(&state, &model, study_id, answer, &mut kept, explain).await?);
    }
    Ok(Json(StudyResponse {
        request_id,
        model: model.reference.clone(),
        positive_class: model.predictor.metadata().positive_class_name().to_owned(),
        slices_received: received,
        studies,
        unreadable,
        timing: StudyTiming {
            read_ms,
            decode_ms,
            inference_ms,
            total_ms: arrived.elapsed().as_secs_f64() * 1e3,
        },
    }))
}

/// One study's answer: logged (study and slices in one transaction), counted, and explained
/// when asked. `kept` holds each request index's upload and decoded slice.
async fn answer_study(
    state: &AppState,
    model: &Arc<LoadedModel>,
    study_id: String,
    answer: StudyAnswer,
    kept: &mut [Option<(Upload, Prepared)>],
    explain: bool,
) -> Result<StudyResult, ApiError> {
    let created = now_unix_ms();
    let mut records = Vec::with_capacity(answer.slices.len());
    for (position, slice) in answer.slices.iter().enumerate() {
        if let Some((upload, prepared)) = kept.get(slice.index).and_then(Option::as_ref) {
            records.push(observed_record(
                state,
                model,
                slice_id(&study_id, position),
                created,
                (upload, prepared),
                &slice.prediction,
                Some((study_id.clone(), position)),
            ));
        }
    }
    let report = StudyReport::new(answer, Some(study_id.clone()));
    let verdict = &report.verdict;
    state.metrics().observe_study(verdict.label.as_deref());
    state
        .log()
        .record_study(
            StudyRecord {
                study_id: study_id.clone(),
                created_unix_ms: created,
                model_name: model.reference.name.clone(),
                model_version: model.reference.version.clone(),
                label: verdict.label.clone().unwrap_or_default(),
                probability: verdict.probability,
                threshold: verdict.threshold.unwrap_or(0.0),
                rule: verdict.rule.clone().unwrap_or_default(),
                slices: report.slices_total,
                used: verdict.used,
                refused: verdict.refused,
                study_uid: report.series.study_uid.clone(),
                series_uid: report.series.series_uid.clone(),
                reason: verdict.reason.clone(),
            },
            records,
        )
        .await?;
    let mut explanation = None;
    if let Some(&top) = verdict.drivers.first().filter(|_| explain) {
        let image = report
            .slices
            .get(top)
            .and_then(|s| kept.get_mut(s.index))
            .and_then(Option::take)
            .map(|(_, prepared)| prepared.decoded.image);
        if let Some(image) = image {
            let (_, png) = grad_cam(state, model, image).await?;
            explanation = Some(StudyExplanation {
                position: top,
                overlay_png_base64: base64::engine::general_purpose::STANDARD.encode(&png),
            });
        }
    }
    Ok(StudyResult {
        report,
        explanation,
    })
}
