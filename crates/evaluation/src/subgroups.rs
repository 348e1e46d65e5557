//! Metrics per subgroup of an image property (resolution, aspect, intensity, original pixel
//! layout…), with group-bootstrap intervals, and flags for subgroups that do clearly worse than
//! the whole.
//!
//! Each property assigns every sample a value (its subgroup key, e.g. `256-511` for the
//! resolution). For each value, accuracy, sensitivity, specificity and ROC-AUC are computed at
//! the model's threshold; unlike [`BinaryMetrics`](crate::BinaryMetrics) a subgroup may hold
//! one class only (then sensitivity or specificity, and ROC-AUC, are `None`). Intervals come
//! from the cluster bootstrap of [`bootstrap`](crate::bootstrap) over the groups present in the
//! subgroup.
//!
//! **Flag rule.** A subgroup with at least [`SubgroupConfig::min_samples`] samples is
//! [`SubgroupStatus::Flagged`] when, for accuracy or ROC-AUC (where the subgroup defines it),
//! - the upper bound of its interval lies below the whole's point estimate (the subgroup is
//!   worse beyond its own sampling noise), or
//! - its point estimate is at least [`SubgroupConfig::max_gap`] below the whole's (a large gap,
//!   worth a look even when the subgroup is too small for the interval to exclude chance).
//!
//! Smaller subgroups are listed as [`SubgroupStatus::TooSmall`] and never flagged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bootstrap::{BootstrapConfig, Interval, group_members, interval, resample_groups};
use crate::error::{EvalError, check_lengths, check_probabilities, check_threshold};
use crate::metrics::{ConfusionMatrix, roc_auc};

/// When a subgroup is reported and when it is flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubgroupConfig {
    /// Subgroups with fewer samples are reported as too small and never flagged (default 10).
    pub min_samples: usize,
    /// A point estimate this far (0–1) below the whole's flags the subgroup (default 0.10).
    pub max_gap: f64,
}

impl Default for SubgroupConfig {
    fn default() -> Self {
        Self {
            min_samples: 10,
            max_gap: 0.10,
        }
    }
}

/// An image property: its name and each sample's value of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// The property, e.g. `resolution`.
    pub name: String,
    /// The subgroup key of every sample, e.g. `256-511`.
    pub values: Vec<String>,
}

/// Whether a subgroup does worse than the whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubgroupStatus {
    /// Not clearly worse.
    Ok,
    /// Clearly worse by the module's flag rule.
    Flagged,
    /// Fewer samples than [`SubgroupConfig::min_samples`]: reported, not judged.
    TooSmall,
}

/// The metrics of one subgroup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubgroupRow {
    /// The property.
    pub property: String,
    /// The subgroup's value of it.
    pub value: String,
    /// Samples in the subgroup.
    pub n: usize,
    /// Positive samples in the subgroup.
    pub positives: usize,
    /// Distinct groups (patients or pseudo-patients) in the subgroup.
    pub groups: usize,
    /// Accuracy at the threshold.
    pub accuracy: Interval,
    /// Sensitivity; `None` values without positives.
    pub sensitivity: Interval,
    /// Specificity; `None` values without negatives.
    pub specificity: Interval,
    /// ROC-AUC; `None` values unless both classes are present.
    pub roc_auc: Interval,
    /// The verdict of the flag rule.
    pub status: SubgroupStatus,
    /// Why the subgroup was flagged.
    pub reasons: Vec<String>,
}

/// Subgroup metrics of every property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubgroupAnalysis {
    /// Accuracy on all the samples.
    pub overall_accuracy: f64,
    /// ROC-AUC on all the samples; `None` with one class.
    pub overall_roc_auc: Option<f64>,
    /// The settings used.
    pub config: SubgroupConfig,
    /// One row per property value, properties in the order given, values sorted.
    pub rows: Vec<SubgroupRow>,
}

impl SubgroupAnalysis {
    /// The flagged rows.
    pub fn flagged(&self) -> impl Iterator<Item = &SubgroupRow> {
        self.rows
            .iter()
            .filter(|r| r.status == SubgroupStatus::Flagged)
    }
}

/// Accuracy, sensitivity, specificity and ROC-AUC of already validated inputs; any class mix.
fn point_values(probabilities: &[f64], labels: &[bool], threshold: f64) -> [Option<f64>; 4] {
    let m = ConfusionMatrix::compute(probabilities, labels, threshold).unwrap_or_default();
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    [
        ratio(m.tp + m.tn, m.total()),
        ratio(m.tp, m.tp + m.fn_),
        ratio(m.tn, m.tn + m.fp),
        roc_auc(probabilities, labels).ok(),
    ]
}

/// Computes the metrics of every subgroup of every property, with percentile intervals by the
/// cluster bootstrap over `groups`, and applies the flag rule of the module documentation.
///
/// Fails on empty or mismatched inputs, invalid probabilities or threshold, a property whose
/// values do not match the samples, or invalid bootstrap settings.
pub fn subgroup_metrics<S: AsRef<str> + Sync>(
    probabilities: &[f64],
    labels: &[bool],
    groups: &[S],
    threshold: f64,
    properties: &[Property],
    config: &SubgroupConfig,
    bootstrap: &BootstrapConfig,
) -> Result<SubgroupAnalysis, EvalError> {
    check_probabilities(probabilities, labels)?;
    check_lengths("groups", groups.len(), "labels", labels.len())?;
    check_threshold(threshold)?;
    bootstrap.validate()?;
    if !(config.max_gap.is_finite() && config.max_gap >= 0.0) {
        return Err(EvalError::InvalidSetting {
            field: "subgroups.max_gap",
            reason: format!("{} is not a finite number ≥ 0", config.max_gap),
        });
    }
    for property in properties {
        if property.values.len() != labels.len() {
            return Err(EvalError::InvalidSetting {
                field: "subgroups.properties",
                reason: format!(
                    "property `{}` has {} values for {} samples",
                    property.name,
                    property.values.len(),
                    labels.len()
                ),
            });
        }
    }
    let [overall_accuracy, _, _, overall_roc_auc] = point_values(probabilities, labels, threshold);
    let overall_accuracy = overall_accuracy.unwrap_or(0.0);
    let mut rows = Vec::new();
    for property in properties {
        let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, value) in property.values.iter().enumerate() {
            members.entry(value).or_default().push(i);
        }
        for (value, indices) in members {
            let probs: Vec<f64> = indices.iter().map(|&i| probabilities[i]).collect();
            let labs: Vec<bool> = indices.iter().map(|&i| labels[i]).collect();
            let sub_groups: Vec<&str> = indices.iter().map(|&i| groups[i].as_ref()).collect();
            let clusters = group_members(&sub_groups);
            let point = point_values(&probs, &labs, threshold);
            let draws = resample_groups(&clusters, bootstrap, |picked| {
                let p: Vec<f64> = picked.iter().map(|&i| probs[i]).collect();
                let l: Vec<bool> = picked.iter().map(|&i| labs[i]).collect();
                point_values(&p, &l, threshold)
            });
            let [accuracy, sensitivity, specificity, auc] = std::array::from_fn(|k| {
                interval(
                    point[k],
                    draws.iter().filter_map(|d| d[k]),
                    bootstrap.confidence,
                )
            });
            let mut row = SubgroupRow {
                property: property.name.clone(),
                value: value.to_owned(),
                n: indices.len(),
                positives: labs.iter().filter(|&&l| l).count(),
                groups: clusters.len(),
                accuracy,
                sensitivity,
                specificity,
                roc_auc: auc,
                status: SubgroupStatus::Ok,
                reasons: Vec::new(),
            };
            judge(&mut row, overall_accuracy, overall_roc_auc, config);
            rows.push(row);
        }
    }
    Ok(SubgroupAnalysis {
        overall_accuracy,
        overall_roc_auc,
        config: config.clone(),
        rows,
    })
}

/// Applies the flag rule to one row.
fn judge(row: &mut SubgroupRow, accuracy: f64, auc: Option<f64>, config: &SubgroupConfig) {
    if row.n < config.min_samples {
        row.status = SubgroupStatus::TooSmall;
        return;
    }
    for (name, interval, whole) in [
        ("accuracy", &row.accuracy, Some(accuracy)),
        ("ROC-AUC", &row.roc_auc, auc),
    ] {
        let (Some(value), Some(whole)) = (interval.value, whole) else {
            continue;
        };
        let range = match (interval.lower, interval.upper) {
            (Some(l), Some(u)) => format!(" [{l:.3}, {u:.3}]"),
            _ => String::new(),
        };
        if interval.upper.is_some_and(|u| u < whole) {
            row.reasons.push(format!(
                "{name} {value:.3}{range}: interval below the whole's {whole:.3}"
            ));
        } else if whole - value >= config.max_gap {
            row.reasons.push(format!(
                "{name} {value:.3}{range}: {:.0} points below the whole's {whole:.3}",
                (whole - value) * 100.0
            ));
        }
    }
    if !row.reasons.is_empty() {
        row.status = SubgroupStatus::Flagged;
    }
}

/// The resolution bucket of an image by its short side: `0-255`, `256-511` or `512+` pixels.
pub fn resolution_bucket(width: u32, height: u32) -> &'static str {
    match width.min(height) {
        0..256 => "0-255",
        256..512 => "256-511",
        _ => "512+",
    }
}

/// The aspect bucket of an image: `portrait` when width / height < 0.9, `landscape` when
/// above 1/0.9 (≈ 1.11), `square` in between (and for empty images).
pub fn aspect_bucket(width: u32, height: u32) -> &'static str {
    if width == 0 || height == 0 {
        return "square";
    }
    let ratio = f64::from(width) / f64::from(height);
    if ratio < 0.9 {
        "portrait"
    } else if ratio > 1.0 / 0.9 {
        "landscape"
    } else {
        "square"
    }
}

/// The quartile of each value among all of them, as `Q1 (≤ 80.5)` … `Q4 (> 120.0)`; the cut
/// points are the 25th, 50th and 75th percentiles (linear interpolation), a value on a cut
/// point going to the lower quartile. Non-finite values get `unknown`.
pub fn quartile_labels(values: &[f64]) -> Vec<String> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_unstable_by(f64::total_cmp);
    let cuts: Vec<f64> = [0.25, 0.5, 0.75]
        .iter()
        .filter_map(|&q| crate::bootstrap::percentile(&sorted, q))
        .collect();
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() || cuts.len() < 3 {
                return "unknown".to_owned();
            }
            match cuts.iter().position(|&c| v <= c) {
                Some(0) => format!("Q1 (≤ {:.1})", cuts[0]),
                Some(k) => format!("Q{} ({:.1}–{:.1})", k + 1, cuts[k - 1], cuts[k]),
                None => format!("Q4 (> {:.1})", cuts[2]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(resamples: usize) -> BootstrapConfig {
        BootstrapConfig {
            resamples,
            ..BootstrapConfig::default()
        }
    }

    /// 200 samples, 2 per group: subgroup `bad` gets every decision wrong, `good` every one
    /// right, `tiny` (4 samples) wrong too.
    fn fixture() -> (Vec<f64>, Vec<bool>, Vec<String>, Property) {
        let mut probabilities = Vec::new();
        let mut labels = Vec::new();
        let mut values = Vec::new();
        for i in 0..200 {
            let label = i % 2 == 0;
            let value = match i {
                0..40 => "bad",
                40..44 => "tiny",
                _ => "good",
            };
            let right = value == "good";
            probabilities.push(if label == right { 0.8 } else { 0.2 });
            labels.push(label);
            values.push(value.to_owned());
        }
        let groups = (0..200).map(|i| format!("g{}", i / 2)).collect();
        let property = Property {
            name: "layout".into(),
            values,
        };
        (probabilities, labels, groups, property)
    }

    #[test]
    fn flags_a_subgroup_far_below_the_whole_and_spares_small_ones() {
        let (p, l, g, property) = fixture();
        let analysis = subgroup_metrics(
            &p,
            &l,
            &g,
            0.5,
            &[property],
            &SubgroupConfig::default(),
            &config(200),
        )
        .expect("subgroups");
        assert!((analysis.overall_accuracy - 156.0 / 200.0).abs() < 1e-12);
        let row = |v: &str| {
            analysis
                .rows
                .iter()
                .find(|r| r.value == v)
                .expect("row present")
        };
        assert_eq!(row("bad").status, SubgroupStatus::Flagged);
        assert_eq!(row("bad").accuracy.value, Some(0.0));
        assert!(!row("bad").reasons.is_empty());
        assert_eq!(row("good").status, SubgroupStatus::Ok);
        assert_eq!(row("good").accuracy.value, Some(1.0));
        assert_eq!(row("good").roc_auc.value, Some(1.0));
        assert_eq!(row("tiny").status, SubgroupStatus::TooSmall);
        assert_eq!((row("tiny").n, row("tiny").positives), (4, 2));
        assert_eq!(row("bad").groups, 20);
        let flagged: Vec<&str> = analysis.flagged().map(|r| r.value.as_str()).collect();
        assert_eq!(flagged, ["bad"]);
        // Rows sorted by value; intervals hold their point estimates.
        let values: Vec<&str> = analysis.rows.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(values, ["bad", "good", "tiny"]);
        let good = row("good");
        assert!(good.accuracy.lower.is_some_and(|lo| lo <= 1.0));
    }

    #[test]
    fn one_class_subgroups_have_no_auc_and_the_missing_rate() {
        let p = [0.9, 0.8, 0.1, 0.2];
        let l = [true, true, false, false];
        let g = ["a", "b", "c", "d"];
        let property = Property {
            name: "layout".into(),
            values: vec!["RGB".into(), "RGB".into(), "grey".into(), "grey".into()],
        };
        let config = SubgroupConfig {
            min_samples: 1,
            ..SubgroupConfig::default()
        };
        let analysis = subgroup_metrics(
            &p,
            &l,
            &g,
            0.5,
            &[property],
            &config,
            &BootstrapConfig::default(),
        )
        .expect("subgroups");
        let rgb = &analysis.rows[0];
        assert_eq!(rgb.value, "RGB");
        assert_eq!(rgb.sensitivity.value, Some(1.0));
        assert_eq!(rgb.specificity.value, None);
        assert_eq!(rgb.roc_auc.value, None);
        assert_eq!(rgb.roc_auc.lower, None);
        assert_eq!(rgb.status, SubgroupStatus::Ok);
    }

    #[test]
    fn an_interval_below_the_whole_flags_even_a_small_gap() {
        // Whole accuracy 0.95; subgroup exactly 0.9 with every group identical, so its
        // interval collapses to [0.9, 0.9], below 0.95 though only 5 points away.
        let mut row = SubgroupRow {
            property: "p".into(),
            value: "v".into(),
            n: 50,
            positives: 25,
            groups: 50,
            accuracy: Interval {
                value: Some(0.9),
                lower: Some(0.9),
                upper: Some(0.9),
                resamples: 10,
            },
            sensitivity: Interval {
                value: None,
                lower: None,
                upper: None,
                resamples: 0,
            },
            specificity: Interval {
                value: None,
                lower: None,
                upper: None,
                resamples: 0,
            },
            roc_auc: Interval {
                value: Some(0.95),
                lower: Some(0.9),
                upper: Some(1.0),
                resamples: 10,
            },
            status: SubgroupStatus::Ok,
            reasons: Vec::new(),
        };
        let mut wide = row.clone();
        judge(&mut row, 0.95, Some(0.96), &SubgroupConfig::default());
        assert_eq!(row.status, SubgroupStatus::Flagged);
        assert_eq!(row.reasons.len(), 1, "{:?}", row.reasons);
        // The same 5-point gap with an interval reaching the whole is not flagged.
        wide.accuracy.upper = Some(0.97);
        judge(&mut wide, 0.95, Some(0.96), &SubgroupConfig::default());
        assert_eq!(wide.status, SubgroupStatus::Ok);
    }

    #[test]
    fn mismatched_property_is_refused() {
        let property = Property {
            name: "resolution".into(),
            values: vec!["0-255".into()],
        };
        let error = subgroup_metrics(
            &[0.1, 0.9],
            &[false, true],
            &["a", "b"],
            0.5,
            &[property],
            &SubgroupConfig::default(),
            &config(10),
        )
        .expect_err("one value for two samples");
        assert!(error.to_string().contains("resolution"), "{error}");
    }

    #[test]
    fn buckets() {
        assert_eq!(resolution_bucket(512, 255), "0-255");
        assert_eq!(resolution_bucket(300, 600), "256-511");
        assert_eq!(resolution_bucket(512, 512), "512+");
        assert_eq!(aspect_bucket(100, 200), "portrait");
        assert_eq!(aspect_bucket(105, 100), "square");
        assert_eq!(aspect_bucket(354, 261), "landscape");
        assert_eq!(aspect_bucket(0, 10), "square");
        let labels = quartile_labels(&[1.0, 2.0, 3.0, 4.0, 5.0, f64::NAN]);
        assert_eq!(labels[0], "Q1 (≤ 2.0)");
        assert_eq!(labels[1], "Q1 (≤ 2.0)");
        assert_eq!(labels[2], "Q2 (2.0–3.0)");
        assert_eq!(labels[3], "Q3 (3.0–4.0)");
        assert_eq!(labels[4], "Q4 (> 4.0)");
        assert_eq!(labels[5], "unknown");
    }
}
