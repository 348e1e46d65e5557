//! Study-level diagnosis: a radiologist reads a series of slices, and the dataset's labels are
//! per patient, so the study is the unit a user works with.
//!
//! - [`input`]: the slices of a request — files, folders, zip archives — with limits checked
//!   before anything is decoded;
//! - [`series`]: slices grouped by DICOM StudyInstanceUID / SeriesInstanceUID and ordered by
//!   slice position, InstanceNumber or file name;
//! - [`verdict`]: the package's group rule (fitted on validation patients) turns the usable
//!   slices' probabilities into one calibrated study probability and decision;
//! - [`report`]: a study's answer in the one shape the CLI prints and the service returns;
//! - [`diagnose`]: the whole path on one machine (the CLI); the service runs the same steps with
//!   its own decoding pool and micro-batched forward passes.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod diagnose;
mod error;
pub mod input;
mod order;
pub mod report;
pub mod series;
mod text;
pub mod verdict;

pub use diagnose::{
    Diagnosis, ScoredSlice, SliceAnswer, StudyAnswer, StudyOptions, assemble, diagnose, plan,
};
pub use error::{SeriesSummary, SliceError, StudyError, Unreadable};
pub use input::{SliceFile, StudyLimits, check_pixels, collect_paths, is_zip, read_zip};
pub use order::natural_order;
pub use report::{DiagnosisReport, SliceReport, StudyReport, slice_id};
pub use series::{Series, SeriesKey, SliceOrder, group_series};
pub use verdict::{SliceScore, StudyRules, StudyVerdict, study_verdict};
