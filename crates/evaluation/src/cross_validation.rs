//! Summary of a group K-fold cross-validation: how each test metric varies over the folds.
//!
//! Every fold's model is evaluated on a test fold of groups it never saw, at the threshold and
//! temperature fitted on its own validation fold. A single test split of a small dataset can
//! land on easy or hard patients; the spread over folds shows how much.

use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::metrics::{BinaryMetrics, ConfusionMatrix, Metric, ratio};
use crate::report::RefusalSummary;

/// One metric over the folds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldSpread {
    /// The metric.
    pub metric: Metric,
    /// Its value on each fold's test set, in fold order; `None` where undefined.
    pub values: Vec<Option<f64>>,
    /// Mean over the folds where it is defined.
    pub mean: f64,
    /// Sample standard deviation over those folds (0 for a single fold).
    pub std_dev: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl FoldSpread {
    /// Each fold's value with three decimals (`n/a` where undefined), in fold order.
    pub fn per_fold(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| v.map_or("n/a".to_owned(), |v| format!("{v:.3}")))
            .collect()
    }
}

/// What [`summarize_folds`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidationSummary {
    /// Number of folds.
    pub folds: usize,
    /// Test images over all folds (each image is tested exactly once).
    pub images: usize,
    /// Every metric of [`Metric::ALL`] defined on at least one fold, in report order.
    pub metrics: Vec<FoldSpread>,
    /// The folds' confusion matrices added up: every image's decision at its fold's threshold.
    pub pooled_confusion: ConfusionMatrix,
    /// Accuracy of [`Self::pooled_confusion`].
    pub pooled_accuracy: f64,
    /// Sensitivity of [`Self::pooled_confusion`]; `None` without positives.
    pub pooled_sensitivity: Option<f64>,
    /// Specificity of [`Self::pooled_confusion`]; `None` without negatives.
    pub pooled_specificity: Option<f64>,
    /// Patient-level (group) metrics over the folds, each fold's groups scored by its own
    /// group calibration; empty when a fold has none.
    #[serde(default)]
    pub group_metrics: Vec<FoldSpread>,
    /// Test groups over all folds.
    #[serde(default)]
    pub groups: usize,
    /// What the folds' out-of-distribution gates refused of their test images, when every fold
    /// has a gate ([`fold_refusals`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusals: Option<FoldRefusals>,
}

/// The out-of-distribution refusals of the folds' test images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldRefusals {
    /// Test images refused over all folds.
    pub refused: usize,
    /// Test images over all folds.
    pub total: usize,
    /// `refused / total`.
    pub pooled_rate: f64,
    /// Each fold's refusal rate, in fold order.
    pub per_fold: Vec<f64>,
}

/// The folds' refusals from their reports' [`RefusalSummary`]s, in fold order; `None` unless
/// every fold has one.
pub fn fold_refusals(folds: &[Option<RefusalSummary>]) -> Option<FoldRefusals> {
    let summaries: Option<Vec<&RefusalSummary>> = folds.iter().map(Option::as_ref).collect();
    let summaries = summaries.filter(|s| !s.is_empty())?;
    let refused = summaries.iter().map(|s| s.refused).sum();
    let total: usize = summaries.iter().map(|s| s.total).sum();
    Some(FoldRefusals {
        refused,
        total,
        pooled_rate: refused as f64 / total.max(1) as f64,
        per_fold: summaries.iter().map(|s| s.rate).collect(),
    })
}

/// Summarises the test metrics of the folds, in fold order: slice-level `folds`, and
/// group-level `group_folds` when every fold has them.
pub fn summarize_folds(
    folds: &[BinaryMetrics],
    group_folds: Option<&[BinaryMetrics]>,
) -> Result<CrossValidationSummary, EvalError> {
    if folds.is_empty() {
        return Err(EvalError::Empty {
            what: "fold results",
        });
    }
    let spreads = |folds: &[BinaryMetrics]| -> Vec<FoldSpread> {
        Metric::ALL
            .into_iter()
            .filter_map(|metric| spread(metric, folds))
            .collect()
    };
    let metrics = spreads(folds);
    let group_folds = group_folds
        .filter(|g| g.len() == folds.len())
        .unwrap_or(&[]);
    let pooled_confusion = folds.iter().fold(ConfusionMatrix::default(), |sum, fold| {
        let c = fold.confusion;
        ConfusionMatrix {
            tp: sum.tp + c.tp,
            fp: sum.fp + c.fp,
            tn: sum.tn + c.tn,
            fn_: sum.fn_ + c.fn_,
        }
    });
    let c = pooled_confusion;
    Ok(CrossValidationSummary {
        folds: folds.len(),
        images: folds.iter().map(|fold| fold.n).sum(),
        metrics,
        pooled_confusion,
        pooled_accuracy: ratio(c.tp + c.tn, c.total()).unwrap_or(0.0),
        pooled_sensitivity: ratio(c.tp, c.tp + c.fn_),
        pooled_specificity: ratio(c.tn, c.tn + c.fp),
        group_metrics: spreads(group_folds),
        groups: group_folds.iter().map(|fold| fold.n).sum(),
        refusals: None,
    })
}

/// The spread of `metric` over `folds`; `None` when no fold defines it.
fn spread(metric: Metric, folds: &[BinaryMetrics]) -> Option<FoldSpread> {
    let values: Vec<Option<f64>> = folds.iter().map(|fold| fold.get(metric)).collect();
    let defined: Vec<f64> = values.iter().flatten().copied().collect();
    if defined.is_empty() {
        return None;
    }
    let n = defined.len() as f64;
    let mean = defined.iter().sum::<f64>() / n;
    let std_dev = if defined.len() > 1 {
        (defined.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some(FoldSpread {
        metric,
        mean,
        std_dev,
        min: defined.iter().copied().fold(f64::INFINITY, f64::min),
        max: defined.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(refused: usize, total: usize) -> Option<RefusalSummary> {
        Some(RefusalSummary {
            refused,
            total,
            rate: refused as f64 / total as f64,
            by_check: Default::default(),
            accepted: None,
            accepted_group: None,
        })
    }

    #[test]
    fn refusals_pool_over_folds_only_when_every_fold_has_a_gate() {
        let pooled = fold_refusals(&[refused(1, 100), refused(6, 200)]).expect("two gates");
        assert_eq!((pooled.refused, pooled.total), (7, 300));
        assert!((pooled.pooled_rate - 7.0 / 300.0).abs() < 1e-12);
        assert_eq!(pooled.per_fold, vec![0.01, 0.03]);
        assert!(fold_refusals(&[refused(1, 100), None]).is_none());
        assert!(fold_refusals(&[]).is_none());
    }

    fn fold(probabilities: &[f64], labels: &[bool], threshold: f64) -> BinaryMetrics {
        BinaryMetrics::compute(probabilities, labels, threshold).expect("both classes")
    }

    #[test]
    fn spreads_and_pooled_counts_match_hand_computation() {
        // Fold 1: perfectly ranked, all right at 0.5 (accuracy 1, ROC-AUC 1).
        let first = fold(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false], 0.5);
        // Fold 2: one positive missed (accuracy 3/4), ROC-AUC 3/4 (the missed positive
        // ranks below one negative), precision 1.
        let second = fold(&[0.9, 0.3, 0.4, 0.1], &[true, true, false, false], 0.5);
        let summary = summarize_folds(&[first, second], None).expect("summary");
        assert_eq!(summary.folds, 2);
        assert_eq!(summary.images, 8);
        let accuracy = &summary.metrics[0];
        assert_eq!(accuracy.metric, Metric::Accuracy);
        assert_eq!(accuracy.values, vec![Some(1.0), Some(0.75)]);
        assert!((accuracy.mean - 0.875).abs() < 1e-12);
        // Sample standard deviation of {1, 0.75}: 0.25 / √2.
        assert!((accuracy.std_dev - 0.25 / 2f64.sqrt()).abs() < 1e-12);
        assert_eq!((accuracy.min, accuracy.max), (0.75, 1.0));
        let roc = summary
            .metrics
            .iter()
            .find(|m| m.metric == Metric::RocAuc)
            .expect("ROC-AUC");
        assert!((roc.mean - 0.875).abs() < 1e-12);
        assert_eq!(
            summary.pooled_confusion,
            ConfusionMatrix {
                tp: 3,
                fp: 0,
                tn: 4,
                fn_: 1
            }
        );
        assert!((summary.pooled_accuracy - 7.0 / 8.0).abs() < 1e-12);
        assert_eq!(summary.pooled_sensitivity, Some(0.75));
        assert_eq!(summary.pooled_specificity, Some(1.0));
    }

    #[test]
    fn undefined_values_are_left_out_of_the_spread() {
        // Nothing called positive at 0.95: precision undefined on this fold only.
        let none_called = fold(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false], 0.95);
        let all_right = fold(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false], 0.5);
        let summary = summarize_folds(&[none_called, all_right], None).expect("summary");
        let precision = summary
            .metrics
            .iter()
            .find(|m| m.metric == Metric::Precision)
            .expect("precision");
        assert_eq!(precision.values, vec![None, Some(1.0)]);
        assert_eq!((precision.mean, precision.std_dev), (1.0, 0.0));
    }

    #[test]
    fn no_folds_is_an_error() {
        let error = summarize_folds(&[], None).expect_err("empty");
        assert!(error.to_string().contains("fold results"), "{error}");
    }
}
