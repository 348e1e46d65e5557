//! Datasets of CT images laid out as one folder per class: scanning, inspection, leakage-aware
//! splits, and cached, augmented batches as plain `f32` buffers.
//!
//! This crate knows nothing of any deep-learning framework: the model crate turns its
//! [`Batch`]es into tensors.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod analyze;
mod bench;
mod error;
mod inspect;
mod leakage;
mod loader;
mod manifest;
mod problem;
mod scan;
mod split;

pub use analyze::{Analysis, ImageRecord};
pub use bench::*;
pub use error::DataError;
pub use inspect::{
    ClassSummary, Distribution, DuplicateGroup, InspectConfig, InspectReport, NearDuplicatePair,
    ShortcutCheck, TellingValue,
};
pub use leakage::{LeakageSummary, NEAR_COPY_DISTANCE, leakage_table, measure_leakage};
pub use loader::*;
pub use manifest::{Manifest, ManifestRow};
pub use problem::Problem;
pub use scan::{DatasetFile, FolderLayout, IMAGE_EXTENSIONS, Scan, SplitName, scan_dataset};
pub use split::{Ratios, SplitConfig, SplitStrategy, split_dataset};
