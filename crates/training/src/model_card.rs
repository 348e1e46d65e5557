//! The model card: what a reader needs before trusting the model, generated from the package
//! metadata and the test evaluation.

use std::fmt::Write as _;

use covidct_evaluation::{CrossValidationSummary, EvaluationReport, FoldSpread, Metric};
use covidct_model::PackageMetadata;

use crate::config::TrainConfig;

/// Renders the Markdown model card; a cross-validation of the same configuration, when given,
/// comes first: it is the figure that says how the model does on patients it never saw.
pub fn model_card(
    meta: &PackageMetadata,
    report: &EvaluationReport,
    cross_validation: Option<&CrossValidationSummary>,
) -> String {
    let mut card = String::new();
    let positive = meta.positive_class_name();
    let pre = &meta.preprocess;
    let d = &report.dataset;
    let fitted_on = calibration_data(meta);
    // Writing to a String cannot fail.
    let _ = writeln!(
        card,
        "# Model card: {} ({})\n",
        meta.name, meta.architecture
    );
    let _ = writeln!(
        card,
        "## Intended use\n\nResearch and education: flags axial chest CT slices as `{positive}` \
         or not, for ML engineers studying CT classifiers and hospital IT teams evaluating MLOps \
         tooling. **Not a medical device; not for diagnosis or triage.** A positive output is a \
         statistical score on one slice, not a finding about a patient.\n"
    );
    if let Some(cv) = cross_validation {
        let _ = writeln!(
            card,
            "## Quality on unseen patients ({}-fold group cross-validation)\n\nThe same \
             configuration trained {} times, each time tested on groups (pseudo-patients) it \
             never saw; every one of {} images and {} groups is tested once. Mean ± sd over the \
             folds, worst fold, and every fold.\n",
            cv.folds, cv.folds, cv.images, cv.groups
        );
        spread_table(&mut card, "slices", &cv.metrics);
        if !cv.group_metrics.is_empty() {
            spread_table(&mut card, "patients (groups)", &cv.group_metrics);
        }
        let _ = writeln!(
            card,
            "Slices pooled over the folds at each fold's threshold: accuracy {:.4}.\n",
            cv.pooled_accuracy
        );
        if let Some(r) = &cv.refusals {
            let _ = writeln!(
                card,
                "The folds' out-of-distribution gates refused {} of the {} test slices ({:.2}%).\n",
                r.refused,
                r.total,
                100.0 * r.pooled_rate
            );
        }
    }
    let _ = writeln!(
        card,
        "## Model\n\n- Architecture: {} ({} input channel(s)), classes {:?}, positive class \
         `{positive}`\n- Input: grey image in `{}` orientation, resized to {}×{} ({:?}), \
         normalised with mean {} and std {}; DICOM windowed at centre {} HU, width {} HU\n- Calibration: temperature {:.3} \
         (fitted on {fitted_on})\n- Operating threshold: {:.4} ({}, chosen on the same scores); \
         `probability >= threshold` is positive\n- Initial weights: {}\n- Weights SHA-256: \
         `{}`\n- Dataset fingerprint: `{}`, split fingerprint: `{}`\n- Written by covidct {}\n",
        meta.architecture,
        meta.in_channels,
        meta.class_names,
        pre.orientation,
        pre.size,
        pre.size,
        pre.resize,
        pre.mean,
        pre.std,
        meta.dicom_window.center,
        meta.dicom_window.width,
        meta.temperature,
        meta.threshold,
        meta.threshold_rule,
        initial_weights(meta.training.get("pretrained")),
        meta.weights_sha256,
        meta.dataset_fingerprint,
        meta.split_fingerprint,
        meta.covidct_version,
    );
    let _ = writeln!(
        card,
        "## Evaluation\n\nDataset `{}`, split `{}`: {} images ({} positive, {} negative) from {} \
         groups. Intervals: {:.0}% percentile bootstrap over groups (pseudo-patients), {} \
         resamples.\n\n| Metric | Value | {:.0}% CI |\n|---|---|---|",
        d.name,
        d.split,
        d.n,
        d.positives,
        d.negatives,
        d.groups,
        report.metrics.bootstrap.confidence * 100.0,
        report.metrics.bootstrap.resamples,
        report.metrics.bootstrap.confidence * 100.0,
    );
    for metric in Metric::ALL {
        let Some(interval) = report.metrics.intervals.get(&metric) else {
            continue;
        };
        let fmt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
        let _ = writeln!(
            card,
            "| {} | {} | {} – {} |",
            metric.label(),
            fmt(interval.value),
            fmt(interval.lower),
            fmt(interval.upper)
        );
    }
    let c = &report.metrics.point.confusion;
    let _ = writeln!(
        card,
        "\nConfusion at the threshold: TP {}, FP {}, TN {}, FN {}.\n",
        c.tp, c.fp, c.tn, c.fn_
    );
    if let Some(group) = &report.group {
        let g = &group.calibration;
        let m = &group.metrics.point;
        let auc = m.roc_auc;
        let _ = writeln!(
            card,
            "Patient level (split `{}`, {} groups): slice probabilities aggregated by `{}` \
             (chosen on {} groups: {fitted_on}), temperature {:.3}, threshold {:.4}: ROC-AUC \
             {auc:.4}, accuracy {:.4}, sensitivity {:.4}, specificity {:.4}.\n",
            d.split,
            m.n,
            g.rule,
            g.fitted_on_groups,
            g.temperature,
            g.threshold,
            m.accuracy,
            m.sensitivity,
            m.specificity,
        );
    }
    out_of_distribution(&mut card, meta, report);
    let _ = writeln!(
        card,
        "## Data and limitations\n\n- Trained on the public SARS-CoV-2 CT-scan dataset (Soares \
         et al. 2020, CC BY-NC-SA) or the dataset named above. Its images carry no patient ids: \
         splits group near-identical slices into pseudo-patients, so test scores may still be \
         optimistic compared with a patient-level split on another hospital's data.\n- Image \
         format and size differ between the classes of that dataset (see `covidct data \
         inspect`); the model may exploit such shortcuts. Check the robustness and subgroup \
         analyses before trusting a score.\n- Only slices like the training data (axial chest CT, \
         lung window) are in scope; other body parts, modalities or paediatric scans are not.\n\
         - Calibration and threshold were fitted on {fitted_on}, all from the same source; \
         re-fit them on local data before any operational use.\n"
    );
    card
}

/// A Markdown table of metrics over folds: mean ± sd, worst and best fold, per fold.
/// The gate's section: what it checks, how its threshold was chosen, what it refused on test.
fn out_of_distribution(card: &mut String, metadata: &PackageMetadata, report: &EvaluationReport) {
    let Some(gate) = &metadata.ood else {
        let _ = writeln!(
            card,
            "## Inputs it refuses\n\nNo out-of-distribution gate: every input gets an answer.\n"
        );
        return;
    };
    let i = &gate.image;
    let f = &gate.features;
    let kept: f64 = f.variances.iter().sum();
    let rest = f.residual_variance * f.dim.saturating_sub(f.variances.len()) as f64;
    let _ = writeln!(
        card,
        "## Inputs it refuses\n\nAn image is refused (\"not an image this model can judge\", no \
         label) when any check fails. Image checks, fitted on {} slices it was trained on: \
         shorter side at least {} px, side ratio at most {:.2}, at most {:.1}% coloured pixels, \
         mean grey {:.1}–{:.1}, grey spread {:.1}–{:.1}, histogram entropy {:.2}–{:.2} bits, \
         body area \
         {:.0}–{:.0}% of the image. Feature check: the squared Mahalanobis distance of the pooled \
         features to the nearest class mean (shared covariance, {} principal directions holding \
         {:.0}% of the within-class variance, the rest pooled), per dimension, at most {:.3}: the \
         {}; {:.2}% of those {} held-out slices are refused.",
        i.fitted_on,
        i.min_side,
        i.max_aspect,
        100.0 * i.max_colour_share,
        i.mean.min,
        i.mean.max,
        i.std.min,
        i.std.max,
        i.entropy.min,
        i.entropy.max,
        100.0 * i.body_share.min.max(0.0),
        100.0 * i.body_share.max.min(1.0),
        gate.features.variances.len(),
        100.0 * kept / (kept + rest),
        gate.threshold,
        gate.threshold_rule,
        100.0 * gate.validation_refused,
        gate.validation_slices,
    );
    if let Some(r) = &report.refusals {
        let _ = writeln!(
            card,
            "On split `{}` it refuses {} of {} slices ({:.2}%).",
            report.dataset.split,
            r.refused,
            r.total,
            100.0 * r.rate
        );
    }
    card.push('\n');
}

fn spread_table(card: &mut String, unit: &str, spreads: &[FoldSpread]) {
    let _ = writeln!(
        card,
        "| Metric ({unit}) | Mean ± sd | Range | Per fold |\n|---|---|---|---|"
    );
    for spread in spreads {
        let _ = writeln!(
            card,
            "| {} | {:.4} ± {:.4} | {:.4} – {:.4} | {} |",
            spread.metric.label(),
            spread.mean,
            spread.std_dev,
            spread.min,
            spread.max,
            spread.per_fold().join(", ")
        );
    }
    card.push('\n');
}

/// What the temperature, threshold and patient rule were fitted on, from the training
/// configuration recorded in the package.
fn calibration_data(meta: &PackageMetadata) -> String {
    let config = meta
        .training
        .get("config")
        .and_then(|c| serde_json::from_value::<TrainConfig>(c.clone()).ok());
    match config {
        Some(config) if config.cross_fits_probe() => format!(
            "out-of-fold scores of {} patient-grouped folds of training + validation (the head \
             refitted on both)",
            config.probe_folds
        ),
        _ => "the validation split".to_owned(),
    }
}

/// The initial weights as the package records them (`training.pretrained`): source, file,
/// SHA-256 and licence (of each backbone, for a pair); "random initialisation" when there were
/// none.
fn initial_weights(pretrained: Option<&serde_json::Value>) -> String {
    let pretrained = match pretrained {
        None => return "not recorded (package written before covidct recorded them)".to_owned(),
        Some(serde_json::Value::Null) => return "random initialisation".to_owned(),
        Some(value) => value,
    };
    let describe = |weights: &serde_json::Value| {
        let field = |name: &str| weights[name].as_str().unwrap_or("unknown");
        let backbone = weights["backbone"]
            .as_str()
            .map_or_else(String::new, |name| format!("{name}: "));
        format!(
            "{backbone}`{}` from `{}` (SHA-256 `{}`), licence: {}",
            field("source"),
            field("file"),
            field("sha256"),
            field("licence")
        )
    };
    match pretrained.as_array() {
        Some(backbones) => backbones
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join("; "),
        None => describe(pretrained),
    }
}
