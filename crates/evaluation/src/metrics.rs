//! Binary-classification metrics, curve points and reliability bins.
//!
//! Everywhere in this crate a sample is called positive when `probability >= threshold`.

use serde::{Deserialize, Serialize};

use crate::error::{
    EvalError, check_probabilities, check_threshold, class_counts, require_both_classes,
};

/// Number of equal-width bins of the expected calibration error and the reliability diagram.
pub const ECE_BINS: usize = 15;

/// Counts of a binary decision against the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Positives called positive.
    pub tp: usize,
    /// Negatives called positive.
    pub fp: usize,
    /// Negatives called negative.
    pub tn: usize,
    /// Positives called negative (`fn` in JSON).
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl ConfusionMatrix {
    /// Counts the decisions `probability >= threshold` against `labels`; works with one class.
    pub fn compute(
        probabilities: &[f64],
        labels: &[bool],
        threshold: f64,
    ) -> Result<Self, EvalError> {
        check_probabilities(probabilities, labels)?;
        check_threshold(threshold)?;
        Ok(Self::count(probabilities, labels, threshold))
    }

    fn count(probabilities: &[f64], labels: &[bool], threshold: f64) -> Self {
        let mut matrix = Self::default();
        for (&p, &label) in probabilities.iter().zip(labels) {
            match (p >= threshold, label) {
                (true, true) => matrix.tp += 1,
                (true, false) => matrix.fp += 1,
                (false, false) => matrix.tn += 1,
                (false, true) => matrix.fn_ += 1,
            }
        }
        matrix
    }

    /// Number of samples counted.
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }
}

/// A scalar metric of [`BinaryMetrics`], used to key confidence intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// (TP + TN) / n.
    Accuracy,
    /// TP / (TP + FN), the recall or true-positive rate.
    Sensitivity,
    /// TN / (TN + FP), the true-negative rate.
    Specificity,
    /// TP / (TP + FP), the positive predictive value.
    Precision,
    /// TN / (TN + FN), the negative predictive value.
    Npv,
    /// 2·TP / (2·TP + FP + FN).
    F1,
    /// Area under the ROC curve.
    RocAuc,
    /// Average precision (area under the step-wise precision-recall curve).
    PrAuc,
    /// Mean squared error of the probabilities.
    Brier,
    /// Expected calibration error over [`ECE_BINS`] bins.
    Ece,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 10] = [
        Metric::Accuracy,
        Metric::Sensitivity,
        Metric::Specificity,
        Metric::Precision,
        Metric::Npv,
        Metric::F1,
        Metric::RocAuc,
        Metric::PrAuc,
        Metric::Brier,
        Metric::Ece,
    ];

    /// The snake_case key used in JSON, MLflow metric names and on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::Sensitivity => "sensitivity",
            Metric::Specificity => "specificity",
            Metric::Precision => "precision",
            Metric::Npv => "npv",
            Metric::F1 => "f1",
            Metric::RocAuc => "roc_auc",
            Metric::PrAuc => "pr_auc",
            Metric::Brier => "brier",
            Metric::Ece => "ece",
        }
    }

    /// Whether a larger value is better (false for the Brier score and the ECE).
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::Brier | Metric::Ece)
    }

    /// The human-readable name shown in reports.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Accuracy => "Accuracy",
            Metric::Sensitivity => "Sensitivity (recall)",
            Metric::Specificity => "Specificity",
            Metric::Precision => "Precision (PPV)",
            Metric::Npv => "NPV",
            Metric::F1 => "F1",
            Metric::RocAuc => "ROC-AUC",
            Metric::PrAuc => "PR-AUC (average precision)",
            Metric::Brier => "Brier score",
            Metric::Ece => "ECE (15 bins)",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.key() == text)
            .ok_or_else(|| {
                let keys: Vec<&str> = Metric::ALL.iter().map(|m| m.key()).collect();
                format!(
                    "unknown metric `{text}`; expected one of {}",
                    keys.join(", ")
                )
            })
    }
}

/// Metrics of probabilities of the positive class against binary labels at one threshold.
///
/// Computing them needs both classes. Ratios whose denominator can still be zero are `None`
/// (`null` in JSON): `precision` when nothing is called positive, `npv` when nothing is called
/// negative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Number of samples.
    pub n: usize,
    /// Number of positive labels.
    pub positives: usize,
    /// Number of negative labels.
    pub negatives: usize,
    /// The threshold: `probability >= threshold` is called positive.
    pub threshold: f64,
    /// Counts at the threshold.
    pub confusion: ConfusionMatrix,
    /// (TP + TN) / n.
    pub accuracy: f64,
    /// TP / (TP + FN).
    pub sensitivity: f64,
    /// TN / (TN + FP).
    pub specificity: f64,
    /// TP / (TP + FP); `None` when nothing is called positive.
    pub precision: Option<f64>,
    /// TN / (TN + FN); `None` when nothing is called negative.
    pub npv: Option<f64>,
    /// 2·TP / (2·TP + FP + FN); 0 when no positive is found.
    pub f1: f64,
    /// Exact ROC-AUC (Mann–Whitney U, ties counted ½).
    pub roc_auc: f64,
    /// Average precision as scikit-learn's `average_precision_score`.
    pub pr_auc: f64,
    /// Mean of (probability − label)².
    pub brier: f64,
    /// Expected calibration error of the positive-class probability ([`ECE_BINS`] bins).
    pub ece: f64,
}

impl BinaryMetrics {
    /// Computes every metric; fails on empty or mismatched inputs, probabilities that are not
    /// finite numbers in [0, 1], a threshold outside [0, 1], or labels of one class only.
    pub fn compute(
        probabilities: &[f64],
        labels: &[bool],
        threshold: f64,
    ) -> Result<Self, EvalError> {
        check_probabilities(probabilities, labels)?;
        check_threshold(threshold)?;
        require_both_classes(labels, "ROC-AUC and PR-AUC")?;
        let mut order = Vec::new();
        compute_unchecked(probabilities, labels, threshold, &mut order).ok_or_else(|| {
            let (positives, negatives) = class_counts(labels);
            EvalError::SingleClass {
                what: "ROC-AUC and PR-AUC",
                positives,
                negatives,
            }
        })
    }

    /// The value of one metric; `None` where it is undefined.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Accuracy => Some(self.accuracy),
            Metric::Sensitivity => Some(self.sensitivity),
            Metric::Specificity => Some(self.specificity),
            Metric::Precision => self.precision,
            Metric::Npv => self.npv,
            Metric::F1 => Some(self.f1),
            Metric::RocAuc => Some(self.roc_auc),
            Metric::PrAuc => Some(self.pr_auc),
            Metric::Brier => Some(self.brier),
            Metric::Ece => Some(self.ece),
        }
    }
}

/// `numerator / denominator`; `None` when the denominator is zero.
pub(crate) fn ratio(numerator: usize, denominator: usize) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Computes the metrics of already validated inputs; `None` when the labels hold one class.
/// `order` is scratch space, reused across calls by the bootstrap.
pub(crate) fn compute_unchecked(
    probabilities: &[f64],
    labels: &[bool],
    threshold: f64,
    order: &mut Vec<usize>,
) -> Option<BinaryMetrics> {
    let (positives, negatives) = class_counts(labels);
    if positives == 0 || negatives == 0 {
        return None;
    }
    let confusion = ConfusionMatrix::count(probabilities, labels, threshold);
    let ranking = sweep(probabilities, labels, order, |_| {});
    let n = labels.len();
    let brier = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &l)| (p - f64::from(u8::from(l))).powi(2))
        .sum::<f64>()
        / n as f64;
    let ece = ece_of(&bins_of(probabilities, labels), n);
    let ConfusionMatrix { tp, fp, tn, fn_ } = confusion;
    Some(BinaryMetrics {
        n,
        positives,
        negatives,
        threshold,
        confusion,
        accuracy: (tp + tn) as f64 / n as f64,
        sensitivity: tp as f64 / positives as f64,
        specificity: tn as f64 / negatives as f64,
        precision: ratio(tp, tp + fp),
        npv: ratio(tn, tn + fn_),
        f1: (2 * tp) as f64 / (2 * tp + fp + fn_) as f64,
        roc_auc: ranking.roc_auc,
        pr_auc: ranking.average_precision,
        brier,
        ece,
    })
}

/// One block of tied scores in a descending sweep: the cumulative counts once it is included.
#[derive(Clone, Copy)]
struct Step {
    score: f64,
    tp: usize,
    fp: usize,
}

struct Ranking {
    roc_auc: f64,
    average_precision: f64,
}

/// Sweeps the distinct scores from the highest down, calling `visit` after each block of tied
/// scores, and integrates ROC-AUC (trapezoids, i.e. ties counted ½) and average precision.
/// Both classes must be present.
fn sweep(
    probabilities: &[f64],
    labels: &[bool],
    order: &mut Vec<usize>,
    mut visit: impl FnMut(Step),
) -> Ranking {
    order.clear();
    order.extend(0..probabilities.len());
    order.sort_unstable_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let (positives, negatives) = class_counts(labels);
    let (mut tp, mut fp) = (0usize, 0usize);
    // Twice the ROC area in units of one positive-negative pair: exact integer arithmetic.
    let mut twice_area: u128 = 0;
    let mut average_precision = 0.0;
    let mut i = 0;
    while i < order.len() {
        let score = probabilities[order[i]];
        let (mut dp, mut dn) = (0usize, 0usize);
        while i < order.len() && probabilities[order[i]] == score {
            if labels[order[i]] {
                dp += 1;
            } else {
                dn += 1;
            }
            i += 1;
        }
        twice_area += dn as u128 * (2 * tp + dp) as u128;
        tp += dp;
        fp += dn;
        if dp > 0 {
            average_precision += (dp as f64 / positives as f64) * (tp as f64 / (tp + fp) as f64);
        }
        visit(Step { score, tp, fp });
    }
    Ranking {
        roc_auc: twice_area as f64 / (2.0 * positives as f64 * negatives as f64),
        average_precision,
    }
}

/// Exact ROC-AUC: the probability that a random positive scores above a random negative,
/// ties counted ½ (Mann–Whitney U / (P·N)). Fails with [`EvalError::SingleClass`] on one class.
pub fn roc_auc(probabilities: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    check_probabilities(probabilities, labels)?;
    require_both_classes(labels, "ROC-AUC")?;
    Ok(sweep(probabilities, labels, &mut Vec::new(), |_| {}).roc_auc)
}

/// Average precision as scikit-learn's `average_precision_score`: Σₖ (Rₖ − Rₖ₋₁)·Pₖ over the
/// distinct thresholds from the highest down. Fails with [`EvalError::SingleClass`] on one
/// class.
pub fn average_precision(probabilities: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    check_probabilities(probabilities, labels)?;
    require_both_classes(labels, "PR-AUC")?;
    Ok(sweep(probabilities, labels, &mut Vec::new(), |_| {}).average_precision)
}

/// A point of the ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// The threshold (`probability >= threshold` is positive); `None` for the starting point
    /// where nothing is called positive.
    pub threshold: Option<f64>,
    /// False-positive rate, 1 − specificity.
    pub fpr: f64,
    /// True-positive rate, the sensitivity.
    pub tpr: f64,
}

/// The ROC curve: the point (0, 0), then one point per distinct score from the highest down,
/// ending at (1, 1). Fails with [`EvalError::SingleClass`] on one class.
pub fn roc_curve(probabilities: &[f64], labels: &[bool]) -> Result<Vec<RocPoint>, EvalError> {
    check_probabilities(probabilities, labels)?;
    require_both_classes(labels, "the ROC curve")?;
    let (positives, negatives) = class_counts(labels);
    let mut points = vec![RocPoint {
        threshold: None,
        fpr: 0.0,
        tpr: 0.0,
    }];
    sweep(probabilities, labels, &mut Vec::new(), |step| {
        points.push(RocPoint {
            threshold: Some(step.score),
            fpr: step.fp as f64 / negatives as f64,
            tpr: step.tp as f64 / positives as f64,
        });
    });
    Ok(points)
}

/// A point of the precision-recall curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    /// The threshold (`probability >= threshold` is positive).
    pub threshold: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// TP / (TP + FP).
    pub precision: f64,
}

/// The precision-recall curve: one point per distinct score from the highest down (recall
/// rising to 1). Fails with [`EvalError::SingleClass`] on one class.
pub fn pr_curve(probabilities: &[f64], labels: &[bool]) -> Result<Vec<PrPoint>, EvalError> {
    check_probabilities(probabilities, labels)?;
    require_both_classes(labels, "the precision-recall curve")?;
    let (positives, _) = class_counts(labels);
    let mut points = Vec::new();
    sweep(probabilities, labels, &mut Vec::new(), |step| {
        points.push(PrPoint {
            threshold: step.score,
            recall: step.tp as f64 / positives as f64,
            precision: step.tp as f64 / (step.tp + step.fp) as f64,
        });
    });
    Ok(points)
}

/// One bin of the reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge (inclusive).
    pub lower: f64,
    /// Upper edge (exclusive, except 1 for the last bin).
    pub upper: f64,
    /// Number of samples whose probability falls in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin; `None` when empty.
    pub mean_probability: Option<f64>,
    /// Fraction of positive labels in the bin; `None` when empty.
    pub fraction_positive: Option<f64>,
}

/// The [`ECE_BINS`] equal-width bins of the positive-class probability: bin k holds
/// `k/15 <= p < (k+1)/15`, the last one also `p = 1`. Works with one class.
pub fn reliability_bins(
    probabilities: &[f64],
    labels: &[bool],
) -> Result<Vec<ReliabilityBin>, EvalError> {
    check_probabilities(probabilities, labels)?;
    Ok(bins_of(probabilities, labels))
}

/// Expected calibration error of the positive-class probability: Σ_bins (count/n)·|mean
/// probability − fraction positive| over [`ECE_BINS`] equal-width bins (the binary definition
/// of e.g. torchmetrics' `BinaryCalibrationError`). Works with one class.
pub fn expected_calibration_error(
    probabilities: &[f64],
    labels: &[bool],
) -> Result<f64, EvalError> {
    check_probabilities(probabilities, labels)?;
    Ok(ece_of(&bins_of(probabilities, labels), labels.len()))
}

/// Brier score: the mean of (probability − label)². Works with one class.
pub fn brier_score(probabilities: &[f64], labels: &[bool]) -> Result<f64, EvalError> {
    check_probabilities(probabilities, labels)?;
    let sum: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &l)| (p - f64::from(u8::from(l))).powi(2))
        .sum();
    Ok(sum / labels.len() as f64)
}

fn bins_of(probabilities: &[f64], labels: &[bool]) -> Vec<ReliabilityBin> {
    let mut sums = [(0usize, 0.0f64, 0usize); ECE_BINS];
    for (&p, &label) in probabilities.iter().zip(labels) {
        let bin = ((p * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        sums[bin].0 += 1;
        sums[bin].1 += p;
        sums[bin].2 += usize::from(label);
    }
    sums.iter()
        .enumerate()
        .map(|(k, &(count, sum, positives))| ReliabilityBin {
            lower: k as f64 / ECE_BINS as f64,
            upper: (k + 1) as f64 / ECE_BINS as f64,
            count,
            mean_probability: (count > 0).then(|| sum / count as f64),
            fraction_positive: ratio(positives, count),
        })
        .collect()
}

fn ece_of(bins: &[ReliabilityBin], n: usize) -> f64 {
    bins.iter()
        .filter_map(|bin| {
            let gap = (bin.mean_probability? - bin.fraction_positive?).abs();
            Some(bin.count as f64 / n as f64 * gap)
        })
        .sum()
}
