//! The reference data of drift monitoring: one row per labelled image with the model's
//! prediction and the image features the service logs for every request (the same function,
//! [`covidct_imaging::image_features`]), for the Evidently job in `monitoring/`.

use std::path::Path;

use covidct_imaging::{FEATURE_NAMES, ImageFeatures, SliceStats, image_features};
use covidct_model::{Prediction, Predictor};

use crate::data::SplitSamples;
use crate::error::TrainError;

/// Columns before the image features, in order.
const LEADING_COLUMNS: [&str; 11] = [
    "path",
    "split",
    "group",
    "label",
    "predicted_label",
    "probability",
    "threshold",
    "positive_class",
    "file_bytes",
    "in_distribution",
    "ood_score",
];

/// One image of the reference data.
pub struct ReferenceRow {
    /// The file, relative to the dataset root.
    pub path: String,
    /// Its group (patient).
    pub group: String,
    /// Its true label.
    pub label: String,
    /// Its size on disk.
    pub file_bytes: u64,
    /// The model's prediction.
    pub prediction: Prediction,
    /// Its image features.
    pub features: ImageFeatures,
}

/// Scores `samples` (`batch` images at a time; `progress` gets the count done) and returns one
/// reference row per image, paths relative to `data_dir`.
pub fn reference_rows(
    predictor: &Predictor,
    samples: &SplitSamples,
    data_dir: &Path,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<ReferenceRow>, TrainError> {
    let meta = predictor.metadata();
    let paths: Vec<_> = samples.samples.iter().map(|s| s.path.clone()).collect();
    let scored = predictor.score_files_inspecting(&paths, batch, progress, &|decoded| {
        let features = image_features(&decoded.image);
        (features, SliceStats::with_features(decoded, &features))
    })?;
    let mut rows = Vec::with_capacity(scored.len());
    for ((scored, (features, stats)), (sample, group)) in scored
        .into_iter()
        .zip(samples.samples.iter().zip(&samples.groups))
    {
        let file_bytes = std::fs::metadata(&sample.path)
            .map_err(|source| TrainError::Io {
                path: sample.path.clone(),
                source,
            })?
            .len();
        rows.push(ReferenceRow {
            path: relative_path(&sample.path, data_dir),
            group: group.clone(),
            label: meta.class_names[sample.label].clone(),
            file_bytes,
            prediction: predictor.judge(scored, &stats),
            features,
        });
    }
    Ok(rows)
}

/// `path` relative to the dataset root when it lies under it, as written otherwise.
fn relative_path(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The CSV bytes: [`LEADING_COLUMNS`] then the feature columns, one row per image.
pub fn reference_csv(
    rows: &[ReferenceRow],
    split: &str,
    positive_class: &str,
) -> Result<Vec<u8>, TrainError> {
    let fail = |e: &dyn std::fmt::Display| TrainError::Request {
        what: "reference CSV".into(),
        reason: e.to_string(),
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(LEADING_COLUMNS.iter().chain(FEATURE_NAMES.iter()))
        .map_err(|e| fail(&e))?;
    for row in rows {
        let mut record = vec![
            row.path.clone(),
            split.to_owned(),
            row.group.clone(),
            row.label.clone(),
            row.prediction.label.clone(),
            row.prediction.probability.to_string(),
            row.prediction.threshold.to_string(),
            positive_class.to_owned(),
            row.file_bytes.to_string(),
            row.prediction.in_distribution().to_string(),
            row.prediction
                .ood
                .as_ref()
                .map(|o| o.score.to_string())
                .unwrap_or_default(),
        ];
        record.extend(
            row.features
                .named_values()
                .iter()
                .map(|(_, value)| value.to_string()),
        );
        writer.write_record(&record).map_err(|e| fail(&e))?;
    }
    writer.into_inner().map_err(|e| fail(&e))
}
