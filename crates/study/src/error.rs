//! Why a study request cannot be answered.

use std::fmt;

use serde::Serialize;

use crate::series::SeriesKey;

/// One series found in a request that mixes several.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesSummary {
    /// The series.
    #[serde(flatten)]
    pub key: SeriesKey,
    /// Its slices in the request.
    pub slices: usize,
}

impl fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} slices)", self.key, self.slices)
    }
}

/// A study request refused as a whole (a single unreadable slice is not one: it is reported
/// and left out).
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A file, folder or archive cannot be read.
    #[error("{path}: {reason}")]
    Input {
        /// The file, folder or archive entry at fault.
        path: String,
        /// Why.
        reason: String,
    },
    /// No slice at all.
    #[error("the study holds no slice{0}")]
    Empty(String),
    /// More slices than allowed.
    #[error("{count} slices is over the limit of {max} per study")]
    TooManySlices {
        /// Slices in the request (at least).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More bytes than allowed.
    #[error("the slices hold {total} bytes, over the limit of {max} per study")]
    TooManyBytes {
        /// Bytes in the request (at least).
        total: u64,
        /// The limit.
        max: u64,
    },
    /// More pixels than allowed, from the headers, before decoding.
    #[error("the slices hold {total} pixels, over the limit of {max} per study")]
    TooManyPixels {
        /// Pixels of the slices whose headers were read.
        total: u64,
        /// The limit.
        max: u64,
    },
    /// Slices of several studies or series, and one answer was asked for.
    #[error(
        "the slices belong to {} series: {}; send one series, or ask for one answer per study (series)",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Mixed(Vec<SeriesSummary>),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] covidct_model::ModelError),
}

impl StudyError {
    /// No slice of the request could be decoded: how many were `unreadable`, and why the first.
    pub fn nothing_decodable(unreadable: &[Unreadable]) -> Self {
        let first = unreadable
            .first()
            .map(|u| format!("{}: {}", u.name, u.error.message))
            .unwrap_or_default();
        StudyError::Empty(format!(
            " that can be decoded ({} unreadable; the first: {first})",
            unreadable.len()
        ))
    }
}

/// A slice that could not be decoded (left out of every study).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unreadable {
    /// Position in the request (files in order, a zip archive's entries in name order).
    pub index: usize,
    /// File name, or the archive entry's name.
    #[serde(rename = "filename")]
    pub name: String,
    /// Why.
    pub error: SliceError,
}

/// Why a slice could not be decoded.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SliceError {
    /// Stable code: `invalid_image`, `empty_image`, `unsupported_image`, `image_too_large`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}
