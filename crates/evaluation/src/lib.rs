//! Evaluation of a binary classifier (a positive class, e.g. COVID, against the rest) from
//! plain `f64` probabilities and `bool` labels; no deep-learning framework involved.
//!
//! - [`metrics`]: [`BinaryMetrics::compute`] (accuracy, sensitivity, specificity, precision,
//!   NPV, F1, exact ROC-AUC, average precision, Brier score, ECE, confusion matrix) and the
//!   points of [`roc_curve`], [`pr_curve`] and [`reliability_bins`].
//! - [`calibration`]: [`fit_temperature`] and [`apply_temperature`] for a binary logit.
//! - [`threshold`]: [`choose_threshold`] by a [`ThresholdRule`] (least sensitivity, Youden's J,
//!   fixed).
//! - [`bootstrap`]: [`bootstrap_metrics`], percentile intervals by a seeded cluster bootstrap
//!   over groups (patients or pseudo-patients).
//! - [`subgroups`]: [`subgroup_metrics`] per value of an image property, flagging subgroups
//!   clearly below the whole; [`shortcut`]: [`shortcut_test`], a metadata-only classifier
//!   under grouped cross-validation; [`attribution`]: [`summarize_attribution`] of Grad-CAM
//!   shares inside the body.
//! - [`robustness`]: [`robustness_analysis`], accuracy and ROC-AUC under graded image
//!   perturbations and the mildest severity costing more than 5 points of accuracy.
//! - [`cross_validation`]: [`summarize_folds`], each test metric's mean, spread and range over
//!   the folds of a group K-fold cross-validation, and the pooled confusion matrix.
//! - [`report`]: [`EvaluationReport::compute`] gathers all of it; [`write_report`] writes
//!   `report.json`, a self-contained `report.html` and `roc.png`, `pr.png`,
//!   `reliability.png`, `confusion.png`, plus the line charts of extra sections.
//!
//! **One convention everywhere:** a sample is called positive when
//! `probability >= threshold`. Metrics that need both classes (ROC-AUC, PR-AUC, and so
//! [`BinaryMetrics`] as a whole) fail with [`EvalError::SingleClass`] on labels of one class;
//! ratios whose denominator can be zero are `Option`s (`null` in JSON), never NaN.
//!
//! ```
//! use covidct_evaluation::{BinaryMetrics, ThresholdRule, choose_threshold};
//! let probabilities = [0.9, 0.8, 0.4, 0.3, 0.1];
//! let labels = [true, true, false, true, false];
//! let threshold = choose_threshold(&probabilities, &labels, ThresholdRule::Youden)?;
//! let metrics = BinaryMetrics::compute(&probabilities, &labels, threshold)?;
//! assert_eq!(threshold, 0.8);
//! assert!((metrics.roc_auc - 5.0 / 6.0).abs() < 1e-12);
//! # Ok::<(), covidct_evaluation::EvalError>(())
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod attribution;
pub mod bootstrap;
pub mod calibration;
pub mod cross_validation;
mod error;
pub mod folds;
pub mod group;
mod html;
pub mod metrics;
mod plot;
pub mod report;
mod report_files;
pub mod robustness;
pub mod shortcut;
pub mod subgroups;
mod text;
pub mod threshold;

pub use attribution::{AttributionStats, AttributionSummary, INSIDE_CUTOFF, summarize_attribution};
pub use bootstrap::{
    BootstrapConfig, BootstrapSummary, Interval, MetricsWithCi, bootstrap_metrics,
};
pub use calibration::{
    TEMPERATURE_RANGE, apply_temperature, fit_temperature, fit_temperature_smoothed,
    negative_log_likelihood, sigmoid, softplus,
};
pub use covidct_common::write_atomically;
pub use cross_validation::{
    CrossValidationSummary, FoldRefusals, FoldSpread, fold_refusals, summarize_folds,
};
pub use error::EvalError;
pub use folds::group_folds;
pub use group::{
    GroupCalibration, GroupEvaluation, GroupRule, GroupRuleScore, GroupScores,
    fit_group_calibration, group_metrics,
};
pub use html::escape_html;
pub use metrics::{
    BinaryMetrics, ConfusionMatrix, ECE_BINS, Metric, PrPoint, ReliabilityBin, RocPoint,
    average_precision, brier_score, expected_calibration_error, pr_curve, reliability_bins,
    roc_auc, roc_curve,
};
pub use report::{
    Curves, DatasetInfo, EvaluationReport, ExtraSection, LinePlot, ModelInfo, PlotGuide,
    PlotSeries, REPORT_FORMAT_VERSION, RefusalSummary, Refused, ReportInput, ThresholdInfo,
};
pub use report_files::{ReportFiles, read_json, read_report, write_report};
pub use robustness::{
    DEFAULT_MAX_ACCURACY_DROP, LevelScores, PerturbationScores, RobustnessAnalysis,
    RobustnessCurve, RobustnessLevel, robustness_analysis,
};
pub use shortcut::{
    FeatureAuc, ImageMetadata, LayoutCount, ShortcutConfig, ShortcutReport, ShortcutVerdict,
    shortcut_test,
};
pub use subgroups::{
    Property, SubgroupAnalysis, SubgroupConfig, SubgroupRow, SubgroupStatus, aspect_bucket,
    quartile_labels, resolution_bucket, subgroup_metrics,
};
pub use threshold::{ThresholdRule, choose_threshold};
