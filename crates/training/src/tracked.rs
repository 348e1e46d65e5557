//! What training, evaluation, robustness and cross-validation log to MLflow: metric names,
//! artifacts and the logged model, in one place for every command.

use std::path::Path;

use covidct_evaluation::{
    CrossValidationSummary, EvaluationReport, MetricsWithCi, RobustnessAnalysis,
};
use covidct_tracking::{MODEL_CARD_FILE, ModelRecord, PACKAGE_FILE, Param, RunRecorder, Tag, tags};

use crate::checkpoint::{EpochRecord, Phase};
use crate::finalize::Release;
use crate::trainer::{TrainEvent, TrainObserver};

/// Metric values and their interval bounds as `<prefix>_<metric>`, `…_ci_lower`, `…_ci_upper`.
pub fn metric_values(prefix: &str, metrics: &MetricsWithCi) -> Vec<(String, f64)> {
    let mut values = Vec::new();
    for (metric, interval) in &metrics.intervals {
        let name = format!("{prefix}_{}", metric.key());
        for (suffix, value) in [
            ("", interval.value),
            ("_ci_lower", interval.lower),
            ("_ci_upper", interval.upper),
        ] {
            if let Some(value) = value {
                values.push((format!("{name}{suffix}"), value));
            }
        }
    }
    values
}

/// Logs an evaluation report: its slice, patient (`<prefix>_group_…`) and accepted-image
/// metrics at `step`, the refused share, and its files as artifacts under `artifact_dir`.
pub fn log_report(
    recorder: &mut RunRecorder,
    prefix: &str,
    step: i64,
    report: &EvaluationReport,
    report_dir: &Path,
    artifact_dir: &str,
) {
    let mut values = metric_values(prefix, &report.metrics);
    if let Some(group) = &report.group {
        values.extend(metric_values(&format!("{prefix}_group"), &group.metrics));
    }
    if let Some(refusals) = &report.refusals {
        values.push((format!("{prefix}_ood_refused_rate"), refusals.rate));
        if let Some(accepted) = &refusals.accepted {
            values.extend(metric_values(&format!("{prefix}_accepted"), accepted));
        }
    }
    recorder.log_metrics(step, &values);
    recorder.log_artifact_dir(artifact_dir, report_dir);
}

/// Logs a finished training run's results: final metrics, the split manifest, the evaluation
/// report, the model card and, with `log_package`, the package as a logged model.
pub fn log_release(
    recorder: &mut RunRecorder,
    release: &Release,
    run_dir: &Path,
    step: i64,
    model_name: &str,
    log_package: bool,
) {
    let meta = &release.package.metadata;
    recorder.log_metrics(
        step,
        &[
            ("val_roc_auc_final", release.validation_roc_auc),
            ("threshold", meta.threshold),
            ("temperature", meta.temperature),
        ],
    );
    log_report(
        recorder,
        "test",
        step,
        &release.report,
        &release.report_dir,
        "evaluation",
    );
    recorder.log_artifact("split/split.csv", &run_dir.join("split.csv"));
    let card = run_dir.join(MODEL_CARD_FILE);
    recorder.log_artifact(MODEL_CARD_FILE, &card);
    if !log_package {
        return;
    }
    let sha256 = match covidct_common::sha256_file(&release.package_path) {
        Ok(sha256) => sha256,
        Err(error) => {
            tracing::warn!(%error, "not logging the package as a model");
            return;
        }
    };
    recorder.log_model(ModelRecord {
        name: model_name.to_owned(),
        model_type: "covidct-package".to_owned(),
        files: vec![
            (PACKAGE_FILE.to_owned(), release.package_path.clone()),
            (MODEL_CARD_FILE.to_owned(), card),
        ],
        params: vec![
            Param::new("architecture", meta.architecture.to_string()),
            Param::new("image_size", meta.preprocess.size.to_string()),
        ],
        tags: vec![Tag::new(tags::PACKAGE_SHA256, sha256)],
        step,
    });
}

/// Forwards training events to another observer and logs each epoch's metrics, with the step
/// counting epochs across both phases.
pub struct TrackingObserver<'a> {
    /// The observer drawing progress.
    pub inner: &'a mut dyn TrainObserver,
    /// The run's recorder.
    pub recorder: &'a mut RunRecorder,
    /// Epochs of the head phase (fine-tuning steps follow them).
    pub head_epochs: usize,
}

impl TrackingObserver<'_> {
    /// The run-wide step of an epoch.
    pub fn step(head_epochs: usize, record: &EpochRecord) -> i64 {
        let offset = match record.phase {
            Phase::Head => 0,
            Phase::FineTune | Phase::Done => head_epochs,
        };
        i64::try_from(offset + record.epoch).unwrap_or(i64::MAX)
    }
}

impl TrainObserver for TrackingObserver<'_> {
    fn on_event(&mut self, event: &TrainEvent<'_>) {
        self.inner.on_event(event);
        if let TrainEvent::EpochEnd(record) = event {
            self.recorder.log_metrics(
                Self::step(self.head_epochs, record),
                &[
                    ("train_loss", record.train_loss),
                    ("val_loss", record.val_loss),
                    ("val_roc_auc", record.val_roc_auc),
                    ("val_accuracy", record.val_accuracy),
                    ("learning_rate", record.learning_rate),
                    ("epoch_seconds", record.seconds),
                ],
            );
        }
    }
}

/// Logs robustness curves as metrics (`robustness_<kind>_accuracy` and `…_roc_auc`, step =
/// severity level, 0 the clean baseline) and, per perturbation, its severities and the
/// severity costing more than the allowed accuracy as parameters.
pub fn log_robustness(recorder: &mut RunRecorder, analysis: &RobustnessAnalysis) {
    let mut params = vec![
        Param::new("robustness.images", analysis.n.to_string()),
        Param::new(
            "robustness.max_accuracy_drop",
            analysis.max_accuracy_drop.to_string(),
        ),
    ];
    for curve in &analysis.curves {
        let accuracy = format!("robustness_{}_accuracy", curve.perturbation);
        let roc_auc = format!("robustness_{}_roc_auc", curve.perturbation);
        recorder.log_metrics(
            0,
            &[
                (accuracy.as_str(), analysis.clean_accuracy),
                (roc_auc.as_str(), analysis.clean_roc_auc),
            ],
        );
        for level in &curve.levels {
            recorder.log_metrics(
                i64::try_from(level.level).unwrap_or(i64::MAX),
                &[
                    (accuracy.as_str(), level.accuracy),
                    (roc_auc.as_str(), level.roc_auc),
                ],
            );
        }
        let prefix = format!("robustness.{}", curve.perturbation);
        params.push(Param::new(
            format!("{prefix}.severities"),
            curve.severities().join(", "),
        ));
        params.push(Param::new(
            format!("{prefix}.accuracy_drop_severity"),
            curve.verdict(),
        ));
    }
    recorder.log_params(params);
}

/// Logs a cross-validation summary on its parent run: `cv_mean_<metric>`, `cv_std_…`,
/// `cv_min_…`, `cv_max_…`, the patient-level `cv_group_…`, `cv_pooled_accuracy`, the refused
/// share, and the summary file.
pub fn log_cross_validation(
    recorder: &mut RunRecorder,
    summary: &CrossValidationSummary,
    path: &Path,
) {
    let mut values = Vec::new();
    for spread in &summary.metrics {
        let key = spread.metric.key();
        values.extend([
            (format!("cv_mean_{key}"), spread.mean),
            (format!("cv_std_{key}"), spread.std_dev),
            (format!("cv_min_{key}"), spread.min),
            (format!("cv_max_{key}"), spread.max),
        ]);
    }
    for spread in &summary.group_metrics {
        let key = spread.metric.key();
        values.extend([
            (format!("cv_group_mean_{key}"), spread.mean),
            (format!("cv_group_std_{key}"), spread.std_dev),
            (format!("cv_group_min_{key}"), spread.min),
        ]);
    }
    values.push(("cv_pooled_accuracy".into(), summary.pooled_accuracy));
    if let Some(refusals) = &summary.refusals {
        values.push(("cv_ood_refused_rate".into(), refusals.pooled_rate));
    }
    recorder.log_metrics(0, &values);
    recorder.log_artifact("cross-validation.json", path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_count_epochs_across_phases() {
        let record = |phase, epoch| EpochRecord {
            phase,
            epoch,
            train_loss: 0.5,
            val_loss: 0.5,
            val_roc_auc: 0.5,
            val_accuracy: 0.5,
            learning_rate: 1e-3,
            seconds: 1.0,
        };
        assert_eq!(TrackingObserver::step(5, &record(Phase::Head, 3)), 3);
        assert_eq!(TrackingObserver::step(5, &record(Phase::FineTune, 2)), 7);
    }
}
