//! A study's answer in one shape: what `covidct predict --study --json` prints and what
//! `POST /v1/predict/study` returns for each study (the service adds its ids and Grad-CAM).

use covidct_model::OodAssessment;
use serde::Serialize;

use crate::diagnose::{Diagnosis, StudyAnswer};
use crate::error::Unreadable;
use crate::series::{SeriesKey, SliceOrder};
use crate::verdict::StudyVerdict;

/// The id of a study's slice in the prediction log: the study id and the slice's position.
pub fn slice_id(study_id: &str, position: usize) -> String {
    format!("{study_id}-{position}")
}

/// One slice of a study, in the study's order.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SliceReport {
    /// Position in the study's order (what `drivers` refer to).
    pub position: usize,
    /// Position in the request (files in order, a zip archive's entries in name order).
    pub index: usize,
    /// File name, or the archive entry's name.
    pub filename: String,
    /// The slice's id in the prediction log (the service's answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// DICOM InstanceNumber.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_number: Option<i64>,
    /// Position along the slice normal in millimetres (DICOM ImagePositionPatient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_mm: Option<f64>,
    /// Calibrated positive probability; withheld when the gate refused the slice.
    pub probability: Option<f64>,
    /// Whether the out-of-distribution gate let the slice into the study score.
    pub in_distribution: bool,
    /// The gate's verdict (absent for models without a gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodAssessment>,
}

/// The verdict on one study (one DICOM series) with its slices.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StudyReport {
    /// Id of this study in the prediction log: give it back to `/v1/feedback` with the true
    /// label (the service's answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_id: Option<String>,
    /// The DICOM study and series, when the slices carry them.
    #[serde(flatten)]
    pub series: SeriesKey,
    /// What the slices are ordered by.
    pub ordered_by: SliceOrder,
    /// The verdict, or why there is none.
    #[serde(flatten)]
    pub verdict: StudyVerdict,
    /// Decoded slices of this study.
    pub slices_total: usize,
    /// Every decoded slice, in order.
    pub slices: Vec<SliceReport>,
}

impl StudyReport {
    /// The report of `answer`; with a `study_id`, each slice gets its log id ([`slice_id`]).
    pub fn new(answer: StudyAnswer, study_id: Option<String>) -> Self {
        let slices: Vec<SliceReport> = answer
            .slices
            .into_iter()
            .enumerate()
            .map(|(position, slice)| {
                let judged = slice.prediction.in_distribution();
                SliceReport {
                    position,
                    index: slice.index,
                    filename: slice.name,
                    request_id: study_id.as_deref().map(|id| slice_id(id, position)),
                    instance_number: slice.instance_number,
                    location_mm: slice.location,
                    probability: judged.then_some(slice.prediction.probability),
                    in_distribution: judged,
                    ood: slice.prediction.ood,
                }
            })
            .collect();
        Self {
            study_id,
            series: answer.series,
            ordered_by: answer.ordered_by,
            verdict: answer.verdict,
            slices_total: slices.len(),
            slices,
        }
    }
}

/// Every study of a request, as `covidct predict --study --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct DiagnosisReport {
    /// Files received (archive entries counted one by one).
    pub slices_received: usize,
    /// One study, or with `--split` one per series.
    pub studies: Vec<StudyReport>,
    /// Files that could not be decoded.
    pub unreadable: Vec<Unreadable>,
}

impl From<Diagnosis> for DiagnosisReport {
    fn from(diagnosis: Diagnosis) -> Self {
        Self {
            slices_received: diagnosis.slices,
            studies: diagnosis
                .studies
                .into_iter()
                .map(|study| StudyReport::new(study, None))
                .collect(),
            unreadable: diagnosis.unreadable,
        }
    }
}
