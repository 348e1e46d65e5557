//! `covidct monitor export-reference`: the reference data of drift monitoring — one row per
//! labelled image with the model's prediction and the image features the service logs for every
//! request (the same function, [`covidct_imaging::image_features`]), for the Evidently job in
//! `monitoring/`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use covidct_imaging::{FEATURE_NAMES, ImageFeatures, SliceStats, image_features};
use covidct_model::Prediction;

use crate::cli::ExportReferenceArgs;
use crate::commands::evaluate::{load_model, target_samples};
use crate::progress;

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
struct ReferenceRow {
    path: String,
    group: String,
    label: String,
    file_bytes: u64,
    prediction: Prediction,
    features: ImageFeatures,
}

/// `covidct monitor export-reference`: scores the selected images and writes the CSV
/// atomically.
pub fn export_reference(args: &ExportReferenceArgs) -> Result<()> {
    let model = load_model(&args.model, &args.store)?;
    let predictor = &model.predictor;
    let meta = predictor.metadata();
    let (samples, split) = target_samples(&args.samples, &meta.class_names)?;
    if samples.is_empty() {
        bail!("no images to export in {}", args.samples.data_dir.display());
    }
    let paths: Vec<_> = samples.samples.iter().map(|s| s.path.clone()).collect();
    let bar = progress::bar(paths.len(), "scoring");
    let scored = predictor.score_files_inspecting(
        &paths,
        usize::from(args.batch_size),
        &mut |done| bar.set_position(done as u64),
        &|decoded| {
            let features = image_features(&decoded.image);
            (features, SliceStats::with_features(decoded, &features))
        },
    )?;
    bar.finish_and_clear();
    let mut rows = Vec::with_capacity(scored.len());
    for ((scored, (features, stats)), (sample, group)) in scored
        .into_iter()
        .zip(samples.samples.iter().zip(&samples.groups))
    {
        let file_bytes = std::fs::metadata(&sample.path)
            .with_context(|| format!("reading the size of {}", sample.path.display()))?
            .len();
        rows.push(ReferenceRow {
            path: relative_path(&sample.path, &args.samples.data_dir),
            group: group.clone(),
            label: meta.class_names[sample.label].clone(),
            file_bytes,
            prediction: predictor.judge(scored, &stats),
            features,
        });
    }
    let positive_class = &meta.class_names[meta.positive_class];
    let csv = reference_csv(&rows, &split, positive_class)?;
    covidct_evaluation::write_atomically(&args.out, &csv)?;
    let agree = rows
        .iter()
        .filter(|r| r.prediction.label == r.label)
        .count();
    println!(
        "{} images of split `{split}` ({} predicted correctly at threshold {:.4}) -> {}",
        rows.len(),
        agree,
        meta.threshold,
        args.out.display()
    );
    Ok(())
}

/// `path` relative to the dataset root when it lies under it, as written otherwise.
fn relative_path(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The CSV bytes: [`LEADING_COLUMNS`] then the feature columns, one row per image.
fn reference_csv(rows: &[ReferenceRow], split: &str, positive_class: &str) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(LEADING_COLUMNS.iter().chain(FEATURE_NAMES.iter()))?;
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
        writer.write_record(&record)?;
    }
    writer.into_inner().context("finishing the reference CSV")
}
