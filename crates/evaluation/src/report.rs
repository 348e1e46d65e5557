//! The evaluation report: what was evaluated, on what, how the threshold was chosen, metrics
//! with intervals, curve points and the caller's extra sections ([`crate::write_report`] writes
//! it as JSON, HTML and PNG).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bootstrap::{BootstrapConfig, MetricsWithCi, bootstrap_metrics};
use crate::error::{EvalError, check_lengths, check_threshold};
use crate::group::{GroupCalibration, GroupEvaluation, group_metrics};
use crate::metrics::{PrPoint, ReliabilityBin, RocPoint, pr_curve, reliability_bins, roc_curve};
use crate::threshold::ThresholdRule;

/// Version of the report's JSON layout, raised on incompatible changes.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// The model evaluated, as the caller describes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name of the model or run.
    pub name: String,
    /// Version, checkpoint or run id.
    #[serde(default)]
    pub version: Option<String>,
    /// Network architecture, e.g. `resnet18`.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Anything else worth keeping (hyper-parameters, weights hash…).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// The data evaluated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Name of the dataset.
    pub name: String,
    /// The split evaluated, e.g. `test`.
    pub split: String,
    /// Number of samples.
    pub n: usize,
    /// Samples of the positive class.
    pub positives: usize,
    /// Samples of the other classes.
    pub negatives: usize,
    /// Number of distinct groups (patients or pseudo-patients).
    pub groups: usize,
}

/// The decision threshold and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdInfo {
    /// The threshold: `probability >= value` is called positive.
    pub value: f64,
    /// The rule that chose it.
    pub rule: ThresholdRule,
    /// The data it was chosen on, e.g. `validation`.
    pub chosen_on: String,
}

/// Curve points for plots and later analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// The ROC curve.
    pub roc: Vec<RocPoint>,
    /// The precision-recall curve.
    pub pr: Vec<PrPoint>,
    /// The reliability diagram's bins.
    pub reliability: Vec<ReliabilityBin>,
}

/// A section the caller adds (robustness, subgroups…): an array of objects is shown as a
/// table in HTML (columns in key order), an array of arrays as a table whose first array is
/// the header (columns in the order given), an object as a two-column table, anything else as
/// JSON; its plots follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtraSection {
    /// Heading of the section.
    pub title: String,
    /// Its content.
    pub content: serde_json::Value,
    /// Line charts drawn by [`write_report`] into the report folder and embedded in the HTML
    /// after the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plots: Vec<LinePlot>,
}

/// A line chart of an [`ExtraSection`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinePlot {
    /// File name of the PNG in the report folder, e.g. `robustness_accuracy.png`: ASCII
    /// letters, digits, `_`, `-` and `.`, ending in `.png`, unique in the report and not the
    /// name of a standard plot.
    pub file: String,
    /// Caption.
    pub title: String,
    /// Description of the x axis.
    pub x_label: String,
    /// Description of the y axis.
    pub y_label: String,
    /// Labels of the x positions 0, 1, 2… shown instead of numbers (empty: plain numbers).
    #[serde(default)]
    pub x_ticks: Vec<String>,
    /// The y axis range `[low, high]`; `None` fits the data and guides.
    #[serde(default)]
    pub y_range: Option<[f64; 2]>,
    /// The lines, each in its own colour and in the legend; non-finite points are skipped.
    pub series: Vec<PlotSeries>,
    /// Horizontal dashed reference lines.
    #[serde(default)]
    pub guides: Vec<PlotGuide>,
}

/// One line of a [`LinePlot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlotSeries {
    /// Legend entry.
    pub name: String,
    /// `[x, y]` points in drawing order.
    pub points: Vec<[f64; 2]>,
}

/// A horizontal reference line of a [`LinePlot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlotGuide {
    /// Legend entry.
    pub label: String,
    /// Height of the line.
    pub y: f64,
}

/// Everything known about one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// [`REPORT_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The model evaluated.
    pub model: ModelInfo,
    /// The data evaluated on.
    pub dataset: DatasetInfo,
    /// All class names of the model.
    pub class_names: Vec<String>,
    /// The class called positive; the others are negative.
    pub positive_class: String,
    /// The decision threshold.
    pub threshold: ThresholdInfo,
    /// Temperature applied to the logits before the probabilities, if any.
    pub temperature: Option<f64>,
    /// Metrics with confidence intervals.
    pub metrics: MetricsWithCi,
    /// Patient-level (group) metrics, where the model has a group calibration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupEvaluation>,
    /// Curve points.
    pub curves: Curves,
    /// What the model's out-of-distribution gate refused, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<RefusalSummary>,
    /// Sections added by the caller, in order.
    #[serde(default)]
    pub extra: Vec<ExtraSection>,
}

/// The images a model's out-of-distribution gate refused, and the metrics without them (the
/// report's own metrics cover every image, as if the gate did not exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalSummary {
    /// Images refused.
    pub refused: usize,
    /// Images evaluated.
    pub total: usize,
    /// `refused / total`.
    pub rate: f64,
    /// Refusals per failed check (an image can fail several).
    pub by_check: BTreeMap<String, usize>,
    /// Metrics of the accepted images alone; `None` when they no longer hold both classes.
    pub accepted: Option<MetricsWithCi>,
    /// Group-level metrics of the accepted images alone, where the model has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_group: Option<GroupEvaluation>,
}

impl RefusalSummary {
    /// The failed checks and their counts in one line, e.g. `entropy 1, features 10`.
    pub fn failed_checks(&self) -> String {
        self.by_check
            .iter()
            .map(|(check, n)| format!("{check} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which images the gate refused: one flag per image of a [`ReportInput`], and the checks that
/// refused them (see [`EvaluationReport::compute_with_refusals`]).
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// Whether each image was refused.
    pub flags: &'a [bool],
    /// The failed checks of each image (empty for accepted ones).
    pub checks: &'a [Vec<String>],
}

/// What [`EvaluationReport::compute`] needs.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    /// The model evaluated.
    pub model: ModelInfo,
    /// Name of the dataset.
    pub dataset_name: String,
    /// The split evaluated.
    pub split: String,
    /// All class names of the model (at least two, distinct).
    pub class_names: Vec<String>,
    /// The class called positive; one of `class_names`.
    pub positive_class: String,
    /// Probability of the positive class per sample (after any temperature).
    pub probabilities: &'a [f64],
    /// Whether each sample belongs to the positive class.
    pub labels: &'a [bool],
    /// Group (patient or pseudo-patient) of each sample.
    pub groups: &'a [String],
    /// The decision threshold.
    pub threshold: ThresholdInfo,
    /// Temperature applied before the probabilities, if any.
    pub temperature: Option<f64>,
    /// Settings of the bootstrap.
    pub bootstrap: BootstrapConfig,
    /// The model's group calibration: adds group-level metrics when given.
    pub group: Option<&'a GroupCalibration>,
}

impl EvaluationReport {
    /// Computes metrics, intervals and curves; fails on invalid inputs, a positive class that
    /// is not among the class names, or labels of one class only.
    pub fn compute(input: ReportInput<'_>) -> Result<Self, EvalError> {
        let ReportInput {
            model,
            dataset_name,
            split,
            class_names,
            positive_class,
            probabilities,
            labels,
            groups,
            threshold,
            temperature,
            bootstrap,
            group,
        } = input;
        check_classes(&class_names, &positive_class)?;
        check_threshold(threshold.value)?;
        threshold.rule.validate()?;
        if let Some(t) = temperature.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(EvalError::InvalidSetting {
                field: "temperature",
                reason: format!("{t} is not a finite number above 0"),
            });
        }
        check_lengths("groups", groups.len(), "labels", labels.len())?;
        let metrics =
            bootstrap_metrics(probabilities, labels, groups, threshold.value, &bootstrap)?;
        let group = group
            .map(|calibration| {
                group_metrics(probabilities, labels, groups, calibration, &bootstrap)
            })
            .transpose()?;
        let curves = Curves {
            roc: roc_curve(probabilities, labels)?,
            pr: pr_curve(probabilities, labels)?,
            reliability: reliability_bins(probabilities, labels)?,
        };
        let dataset = DatasetInfo {
            name: dataset_name,
            split,
            n: metrics.point.n,
            positives: metrics.point.positives,
            negatives: metrics.point.negatives,
            groups: metrics.bootstrap.groups,
        };
        Ok(Self {
            format_version: REPORT_FORMAT_VERSION,
            model,
            dataset,
            class_names,
            positive_class,
            threshold,
            temperature,
            metrics,
            group,
            curves,
            refusals: None,
            extra: Vec::new(),
        })
    }

    /// [`EvaluationReport::compute`] of every image, plus the [`RefusalSummary`] of a gate's
    /// verdicts: the same metrics on the images it accepted.
    pub fn compute_with_refusals(
        input: ReportInput<'_>,
        refused: Refused<'_>,
    ) -> Result<Self, EvalError> {
        check_lengths(
            "refused",
            refused.flags.len(),
            "probabilities",
            input.probabilities.len(),
        )?;
        let keep = |i: &usize| !refused.flags[*i];
        let kept: Vec<usize> = (0..refused.flags.len()).filter(keep).collect();
        let probabilities: Vec<f64> = kept.iter().map(|&i| input.probabilities[i]).collect();
        let labels: Vec<bool> = kept
            .iter()
            .filter_map(|&i| input.labels.get(i).copied())
            .collect();
        let groups: Vec<String> = kept
            .iter()
            .filter_map(|&i| input.groups.get(i).cloned())
            .collect();
        let accepted = EvaluationReport::compute(ReportInput {
            probabilities: &probabilities,
            labels: &labels,
            groups: &groups,
            ..input.clone()
        })
        .ok();
        let mut by_check = BTreeMap::new();
        for check in refused.checks.iter().flatten() {
            *by_check.entry(check.clone()).or_insert(0) += 1;
        }
        let total = refused.flags.len();
        let count = total - kept.len();
        let mut report = Self::compute(input)?;
        report.refusals = Some(RefusalSummary {
            refused: count,
            total,
            rate: count as f64 / total.max(1) as f64,
            by_check,
            accepted_group: accepted.as_ref().and_then(|r| r.group.clone()),
            accepted: accepted.map(|r| r.metrics),
        });
        Ok(report)
    }

    /// Appends a section shown after the standard ones.
    pub fn add_section(&mut self, title: impl Into<String>, content: serde_json::Value) {
        self.extra.push(ExtraSection {
            title: title.into(),
            content,
            plots: Vec::new(),
        });
    }

    /// A name for the negative side: the other class when there are two, else "not X".
    pub fn negative_label(&self) -> String {
        match self.class_names.as_slice() {
            [a, b] if *a == self.positive_class => b.clone(),
            [a, b] if *b == self.positive_class => a.clone(),
            _ => format!("not {}", self.positive_class),
        }
    }
}

fn check_classes(class_names: &[String], positive_class: &str) -> Result<(), EvalError> {
    let invalid = |reason: String| EvalError::InvalidSetting {
        field: "class_names",
        reason,
    };
    if class_names.len() < 2 {
        return Err(invalid(format!(
            "{} class name(s) given, at least 2 needed",
            class_names.len()
        )));
    }
    for (i, name) in class_names.iter().enumerate() {
        if class_names[..i].contains(name) {
            return Err(invalid(format!("`{name}` appears twice")));
        }
    }
    if !class_names.iter().any(|c| c == positive_class) {
        return Err(EvalError::InvalidSetting {
            field: "positive_class",
            reason: format!("`{positive_class}` is not one of {class_names:?}"),
        });
    }
    Ok(())
}
