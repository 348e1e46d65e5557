//! From a trained network to a released model: temperature and threshold fitted on
//! validation, the test split evaluated with group-bootstrap intervals, a model card, and the
//! package written.

use std::path::{Path, PathBuf};

use covidct_evaluation::{
    BootstrapConfig, CrossValidationSummary, EvaluationReport, ModelInfo, Refused, ReportInput,
    ThresholdInfo, ThresholdRule, choose_threshold, fit_group_calibration,
    fit_temperature_smoothed, write_report,
};
use covidct_imaging::{DecodedImage, HuWindow, SliceStats};
use covidct_model::{
    ModelPackage, Network, OodAssessment, PackageMetadata, Predictor, Scored,
    calibrated_probabilities,
};

use crate::checkpoint::TrainState;
use crate::config::TrainConfig;
use crate::data::{SplitSamples, TrainingData};
use crate::error::TrainError;
use crate::gate::{fit_gate, gate_inputs, split_stats};
use crate::model_card::model_card;
use crate::trainer::SplitLogits;

/// What [`finalize`] produced.
#[derive(Debug)]
pub struct Release {
    /// The package file.
    pub package_path: PathBuf,
    /// The package.
    pub package: ModelPackage,
    /// The test-split evaluation.
    pub report: EvaluationReport,
    /// The folder of the evaluation report (JSON, HTML, plots).
    pub report_dir: PathBuf,
    /// Validation ROC-AUC of the calibration scores (the released predictor's, or out-of-fold
    /// when cross-fitted; equals the best epoch's).
    pub validation_roc_auc: f64,
}

/// Provenance recorded in the package besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Registered model name (`covidct`).
    pub name: String,
    /// Name of the dataset (e.g. its folder name).
    pub dataset_name: String,
    /// Fingerprint of the dataset's labelled pixels.
    pub dataset_fingerprint: String,
    /// Source revision of the code (git commit), when known.
    pub git_commit: Option<String>,
    /// A cross-validation of the same configuration, shown first in the model card.
    pub cross_validation: Option<CrossValidationSummary>,
}

/// The binary logit of each row: positive logit minus the log-sum-exp of the others (for two
/// classes, the difference of the two logits), so `sigmoid(z / T)` is the positive probability.
pub fn positive_logits(logits: &[Vec<f64>], positive: usize) -> Vec<f64> {
    logits
        .iter()
        .map(|row| {
            let others: Vec<f64> = row
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != positive)
                .map(|(_, v)| *v)
                .collect();
            let max = others.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + others.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            row.get(positive).copied().unwrap_or(0.0) - lse
        })
        .collect()
}

/// Calibrated positive probabilities of raw logits under `temperature`.
pub fn positive_probabilities(logits: &[Vec<f64>], positive: usize, temperature: f64) -> Vec<f64> {
    logits
        .iter()
        .map(|row| {
            calibrated_probabilities(row, temperature)
                .get(positive)
                .copied()
                .unwrap_or(0.0)
        })
        .collect()
}

/// Images per forward pass when scoring a split.
const SCORING_BATCH: usize = 32;

/// Raw logits of every image of a split through `predictor`.
pub fn split_logits(
    predictor: &Predictor,
    split: &SplitSamples,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<Vec<f64>>, TrainError> {
    let paths: Vec<PathBuf> = split.samples.iter().map(|s| s.path.clone()).collect();
    Ok(predictor.score_files(&paths, SCORING_BATCH, progress)?)
}

/// Labelled images to evaluate a model on.
#[derive(Debug, Clone)]
pub struct EvaluationTarget<'a> {
    /// Name of the dataset, for the report.
    pub dataset_name: String,
    /// Name of the split (or folder), for the report.
    pub split: String,
    /// The images, their labels (indices into the model's class names) and groups.
    pub samples: &'a SplitSamples,
    /// Settings of the group bootstrap.
    pub bootstrap: BootstrapConfig,
}

/// Scores `target` with `predictor` (its temperature and threshold unchanged) and computes the
/// evaluation report: metrics at the package's threshold with group-bootstrap intervals, the
/// curves, and what the out-of-distribution gate refused.
pub fn evaluate_predictor(
    predictor: &Predictor,
    target: &EvaluationTarget<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvaluationReport, TrainError> {
    let scored = score_split(predictor, target.samples, progress, &|_| ())?;
    report_of_probabilities(predictor, target, &scored.probabilities, &scored.verdicts)
}

/// A split scored by a predictor, in sample order.
#[derive(Debug, Clone)]
pub struct ScoredSplit<T> {
    /// Calibrated positive-class probabilities (the package's temperature applied).
    pub probabilities: Vec<f64>,
    /// The out-of-distribution gate's verdict on each image (`None` without a gate).
    pub verdicts: Vec<Option<OodAssessment>>,
    /// What the caller's `inspect` computed from each decoded image.
    pub inspected: Vec<T>,
}

/// Scores every image of `samples` (one decode each): probabilities, the gate's verdicts, and
/// what `inspect` computes from each decoded image; `progress` receives (done, total).
pub fn score_split<T: Send>(
    predictor: &Predictor,
    samples: &SplitSamples,
    progress: &mut dyn FnMut(usize, usize),
    inspect: &(dyn Fn(&DecodedImage) -> T + Sync),
) -> Result<ScoredSplit<T>, TrainError> {
    let total = samples.len();
    let gated = predictor.has_gate();
    let paths: Vec<PathBuf> = samples.samples.iter().map(|s| s.path.clone()).collect();
    let scored = predictor.score_files_inspecting(
        &paths,
        SCORING_BATCH,
        &mut |done| progress(done, total),
        &|decoded| (gated.then(|| SliceStats::of(decoded)), inspect(decoded)),
    )?;
    let mut split = ScoredSplit {
        probabilities: Vec::with_capacity(total),
        verdicts: Vec::with_capacity(total),
        inspected: Vec::with_capacity(total),
    };
    for (scored, (stats, inspected)) in scored {
        let prediction = match stats {
            Some(stats) => predictor.judge(scored, &stats),
            None => predictor.interpret(scored.logits),
        };
        split.probabilities.push(prediction.probability);
        split.verdicts.push(prediction.ood);
        split.inspected.push(inspected);
    }
    Ok(split)
}

/// The evaluation report of `target` from the probabilities and gate verdicts
/// [`score_split`] gave (verdicts may be empty: no gate).
pub fn report_of_probabilities(
    predictor: &Predictor,
    target: &EvaluationTarget<'_>,
    probabilities: &[f64],
    verdicts: &[Option<OodAssessment>],
) -> Result<EvaluationReport, TrainError> {
    let meta = predictor.metadata();
    let truth = target.samples.positives(meta.positive_class);
    let rule = meta
        .threshold_rule
        .parse::<ThresholdRule>()
        .unwrap_or(ThresholdRule::Fixed(meta.threshold));
    let input = ReportInput {
        model: ModelInfo {
            name: meta.name.clone(),
            version: None,
            architecture: Some(meta.architecture.to_string()),
            details: serde_json::json!({
                // Empty while the package is being made (training's own test evaluation).
                "weights_sha256": (!meta.weights_sha256.is_empty()).then_some(&meta.weights_sha256),
                "image_size": meta.preprocess.size,
                "split_fingerprint": meta.split_fingerprint,
                "dataset_fingerprint": meta.dataset_fingerprint,
            }),
        },
        dataset_name: target.dataset_name.clone(),
        split: target.split.clone(),
        class_names: meta.class_names.clone(),
        positive_class: meta.positive_class_name().to_owned(),
        probabilities,
        labels: &truth,
        groups: &target.samples.groups,
        threshold: ThresholdInfo {
            value: meta.threshold,
            rule,
            chosen_on: "validation".to_owned(),
        },
        temperature: Some(meta.temperature),
        bootstrap: target.bootstrap.clone(),
        group: meta.group.as_ref(),
    };
    if verdicts.is_empty() || verdicts.iter().all(Option::is_none) {
        return Ok(EvaluationReport::compute(input)?);
    }
    let flags: Vec<bool> = verdicts
        .iter()
        .map(|v| v.as_ref().is_some_and(|v| !v.in_distribution))
        .collect();
    let checks: Vec<Vec<String>> = verdicts
        .iter()
        .map(|v| {
            v.iter()
                .flat_map(|v| v.refusals.iter().map(|r| r.check.clone()))
                .collect()
        })
        .collect();
    Ok(EvaluationReport::compute_with_refusals(
        input,
        Refused {
            flags: &flags,
            checks: &checks,
        },
    )?)
}

/// Images of validation the released predictor scores itself to check logits computed from
/// cached features ([`SplitLogits`]).
const AGREEMENT_SAMPLE: usize = 8;

/// Largest difference allowed between the predictor's logits and the cached features' ones,
/// relative to the logit's magnitude (at least 1): BatchNorm folding only reorders f32 sums.
const AGREEMENT_TOLERANCE: f64 = 1e-3;

/// Checks that the released predictor gives the logits computed from cached features, on the
/// first [`AGREEMENT_SAMPLE`] validation images: the evaluation then is of the model shipped.
fn check_agreement(
    predictor: &Predictor,
    split: &SplitSamples,
    cached: &[Vec<f64>],
) -> Result<(), TrainError> {
    let n = split.len().min(AGREEMENT_SAMPLE).min(cached.len());
    let paths: Vec<PathBuf> = split.samples[..n].iter().map(|s| s.path.clone()).collect();
    let scored = predictor.score_files(&paths, SCORING_BATCH, &mut |_| ())?;
    for ((path, ours), theirs) in paths.iter().zip(&scored).zip(cached) {
        for (a, b) in ours.iter().zip(theirs) {
            if (a - b).abs() > AGREEMENT_TOLERANCE * a.abs().max(1.0) {
                return Err(TrainError::Diverged(format!(
                    "{}: the released predictor gives logit {a} where the cached features give \
                     {b}; clear the feature cache (--feature-cache) and train again",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// The scored images temperature, threshold and patient rule are fitted on.
struct CalibrationSet {
    /// Class logits, one row per image.
    logits: Vec<Vec<f64>>,
    /// Whether each image is positive.
    truth: Vec<bool>,
    /// The group (patient) of each image.
    groups: Vec<String>,
    /// Where the validation images start (the rows before are training images).
    val_start: usize,
    /// What the rows are, for the log.
    source: &'static str,
}

impl CalibrationSet {
    /// The cross-fitted probe's out-of-fold logits of training + validation when the run has
    /// them, else the released network's validation logits (`val_logits`, only called then).
    fn of(
        state: &TrainState,
        data: &TrainingData,
        val_logits: impl FnOnce() -> Result<Vec<Vec<f64>>, TrainError>,
    ) -> Result<Self, TrainError> {
        let positive = data.positive_class;
        if state.out_of_fold.is_empty() {
            return Ok(Self {
                logits: val_logits()?,
                truth: data.val.positives(positive),
                groups: data.val.groups.clone(),
                val_start: 0,
                source: "validation",
            });
        }
        let rows = data.train.len() + data.val.len();
        if state.out_of_fold.len() != rows {
            return Err(TrainError::Config {
                field: "probe_folds",
                reason: format!(
                    "the run's out-of-fold logits cover {} images, its training + validation \
                     splits {rows}: resume with the manifest it started with",
                    state.out_of_fold.len()
                ),
            });
        }
        Ok(Self {
            logits: state.out_of_fold.clone(),
            truth: [data.train.positives(positive), data.val.positives(positive)].concat(),
            groups: [&data.train.groups[..], &data.val.groups].concat(),
            val_start: data.train.len(),
            source: "out-of-fold scores of training + validation",
        })
    }
}

/// Calibrates `best` on validation (or on the cross-fitted probe's out-of-fold scores of
/// training + validation), evaluates it on test and writes `model.ctpkg` and
/// `evaluation/` into `run_dir`. `frozen` gives the validation and test logits from cached
/// features (checked against the released predictor on a few images); without it the
/// predictor scores every image.
#[allow(clippy::too_many_arguments)]
pub fn finalize(
    best: Network,
    config: &TrainConfig,
    state: &TrainState,
    data: &TrainingData,
    provenance: &Provenance,
    run_dir: &Path,
    frozen: Option<&SplitLogits>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Release, TrainError> {
    let device = covidct_model::select_device(&config.device)?;
    let training = serde_json::json!({
        "config": config,
        "history": state.history,
        "best_epoch": state.best,
        "pretrained": config.pretrained_provenance()?,
        "git_commit": provenance.git_commit,
        "cross_validation": provenance.cross_validation,
        "train": data.summary(covidct_data::SplitName::Train),
        "val": data.summary(covidct_data::SplitName::Val),
        "test": data.summary(covidct_data::SplitName::Test),
    });
    let mut metadata = PackageMetadata {
        name: provenance.name.clone(),
        covidct_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        architecture: config.architecture,
        in_channels: 1,
        class_names: data.class_names.clone(),
        positive_class: data.positive_class,
        preprocess: config.preprocess(),
        dicom_window: HuWindow::default(),
        threshold: 0.5,
        threshold_rule: config.threshold.to_string(),
        temperature: 1.0,
        dataset_fingerprint: provenance.dataset_fingerprint.clone(),
        split_fingerprint: data.split_fingerprint.clone(),
        training,
        evaluation: serde_json::Value::Null,
        weights_sha256: String::new(),
        group: None,
        ood: None,
    };
    let predictor = Predictor::from_parts(best.clone(), metadata.clone(), &device)?;
    let positive = data.positive_class;

    if let Some(frozen) = frozen {
        check_agreement(&predictor, &data.val, &frozen.val)?;
    }
    let total = data.val.len();
    let calibration = CalibrationSet::of(state, data, || match frozen {
        Some(frozen) => Ok(frozen.val.clone()),
        None => split_logits(&predictor, &data.val, &mut |done| {
            progress("scoring validation", done, total)
        }),
    })?;
    // Platt's smoothed targets: a perfectly separated validation split (a confident probe) gets a
    // finite temperature instead of the coldest bound and saturated probabilities.
    let temperature = fit_temperature_smoothed(
        &positive_logits(&calibration.logits, positive),
        &calibration.truth,
    )?;
    let probabilities = positive_probabilities(&calibration.logits, positive, temperature);
    let threshold = choose_threshold(&probabilities, &calibration.truth, config.threshold)?;
    let validation_roc_auc = covidct_evaluation::roc_auc(
        &probabilities[calibration.val_start..],
        &calibration.truth[calibration.val_start..],
    )?;
    tracing::info!(
        temperature,
        threshold,
        validation_roc_auc,
        on = calibration.source,
        "calibrated"
    );
    metadata.group = match fit_group_calibration(
        &probabilities,
        &calibration.truth,
        &calibration.groups,
        config.threshold,
    ) {
        Ok(group) => {
            tracing::info!(
                rule = %group.rule,
                temperature = group.temperature,
                threshold = group.threshold,
                groups = group.fitted_on_groups,
                on = calibration.source,
                "group (patient) calibration fitted"
            );
            Some(group)
        }
        Err(error) => {
            tracing::warn!(%error, "no group calibration: the calibration groups cannot fit one");
            None
        }
    };
    metadata.temperature = temperature;
    metadata.threshold = threshold;
    let inputs = gate_inputs(&predictor, data, frozen.map(|f| &f.features), progress)?;
    // A release calibrated on out-of-fold scores chooses its gate's threshold on the same folds.
    let folds = (!state.out_of_fold.is_empty())
        .then(|| data.calibration_folds(config.probe_folds, config.seed));
    metadata.ood = match fit_gate(data, &inputs, folds.as_deref()) {
        Ok(gate) => {
            tracing::info!(
                threshold = gate.threshold,
                components = gate.features.variances.len(),
                validation_refused = gate.validation_refused,
                held_out = gate.validation_slices,
                "out-of-distribution gate fitted"
            );
            Some(gate)
        }
        Err(error) => {
            tracing::warn!(%error, "no out-of-distribution gate: the data cannot fit one");
            None
        }
    };
    let predictor = Predictor::from_parts(best.clone(), metadata.clone(), &device)?;

    let target = EvaluationTarget {
        dataset_name: provenance.dataset_name.clone(),
        split: "test".to_owned(),
        samples: &data.test,
        bootstrap: BootstrapConfig {
            resamples: config.bootstrap,
            seed: config.seed,
            ..BootstrapConfig::default()
        },
    };
    let test = match frozen {
        Some(frozen) => frozen_test(&predictor, data, frozen)?,
        None => score_split(
            &predictor,
            &data.test,
            &mut |done, total| progress("scoring test", done, total),
            &|_| (),
        )?,
    };
    let report = report_of_probabilities(&predictor, &target, &test.probabilities, &test.verdicts)?;
    let report_dir = run_dir.join("evaluation");
    write_report(&report_dir, &report)?;
    metadata.evaluation = serde_json::to_value(&report.metrics).unwrap_or_default();
    let mut package = ModelPackage::new(&best, metadata, String::new())?;
    // The card is rendered from the package's metadata, where the weights' SHA-256 is filled.
    package.model_card = model_card(
        &package.metadata,
        &report,
        provenance.cross_validation.as_ref(),
    );
    let package_path = run_dir.join(format!("model.{}", covidct_model::PACKAGE_EXTENSION));
    package.save(&package_path)?;
    covidct_common::write_atomically(
        &run_dir.join("MODEL_CARD.md"),
        package.model_card.as_bytes(),
    )?;
    Ok(Release {
        package_path,
        package,
        report,
        report_dir,
        validation_roc_auc,
    })
}

/// The test split scored from cached features: probabilities from the frozen logits, the gate's
/// verdicts from the cached features and the images' statistics.
fn frozen_test(
    predictor: &Predictor,
    data: &TrainingData,
    frozen: &SplitLogits,
) -> Result<ScoredSplit<()>, TrainError> {
    let meta = predictor.metadata();
    let probabilities = positive_probabilities(&frozen.test, meta.positive_class, meta.temperature);
    let verdicts = match &meta.ood {
        Some(gate) => {
            let stats = split_stats(predictor, &data.test)?;
            let dim = frozen.features.dim.max(1);
            frozen
                .features
                .test
                .chunks(dim)
                .zip(&frozen.test)
                .zip(&stats)
                .map(|((row, logits), stats)| {
                    let scored = Scored {
                        logits: logits.clone(),
                        ood_score: Some(gate.features.score(row)),
                    };
                    predictor.judge(scored, stats).ood
                })
                .collect()
        }
        None => Vec::new(),
    };
    Ok(ScoredSplit {
        inspected: vec![(); probabilities.len()],
        probabilities,
        verdicts,
    })
}
