//! Group-level (patient or pseudo-patient) scores from slice probabilities.
//!
//! Labels in CT datasets are usually per patient, and many slices of a positive patient show no
//! finding, so a patient is judged on an aggregate of its slices. [`fit_group_calibration`]
//! tries every [`GroupRule`] on validation groups, keeps the one with the best group ROC-AUC,
//! then fits the group score's own temperature and threshold there; [`GroupCalibration`] is
//! stored in the model package so that every consumer (evaluation, the study service) applies
//! the same rule.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::bootstrap::{BootstrapConfig, MetricsWithCi, bootstrap_metrics};
use crate::calibration::{fit_temperature_smoothed, negative_log_likelihood, sigmoid};
use crate::error::{EvalError, check_lengths};
use crate::metrics::roc_auc;
use crate::threshold::{ThresholdRule, choose_threshold};

/// How the slice probabilities of one group become the group's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GroupRule {
    /// Mean probability.
    Mean,
    /// Mean of the top `fraction` of the probabilities (at least one slice).
    TopMean {
        /// Share of the slices kept, in (0, 1].
        fraction: f64,
    },
    /// Largest probability.
    Max,
    /// Mean of the slice log-odds, back to a probability (a geometric mean of the odds).
    MeanLogit,
    /// Probability that at least one slice is positive, slices taken as independent.
    NoisyOr,
}

impl GroupRule {
    /// The rules [`fit_group_calibration`] tries, in order of preference among ties.
    pub const CANDIDATES: [GroupRule; 6] = [
        GroupRule::Mean,
        GroupRule::MeanLogit,
        GroupRule::TopMean { fraction: 0.5 },
        GroupRule::TopMean { fraction: 0.25 },
        GroupRule::Max,
        GroupRule::NoisyOr,
    ];

    /// The group score of `probabilities` (non-empty, each in [0, 1]).
    pub fn aggregate(self, probabilities: &[f64]) -> f64 {
        let n = probabilities.len().max(1) as f64;
        let clamp = |p: f64| p.clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR);
        match self {
            GroupRule::Mean => probabilities.iter().sum::<f64>() / n,
            GroupRule::TopMean { fraction } => {
                let mut sorted = probabilities.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let keep = ((sorted.len() as f64 * fraction).ceil() as usize)
                    .clamp(1, sorted.len().max(1));
                sorted.iter().take(keep).sum::<f64>() / keep as f64
            }
            GroupRule::Max => probabilities.iter().copied().fold(0.0, f64::max),
            GroupRule::MeanLogit => {
                sigmoid(probabilities.iter().map(|&p| clamped_logit(p)).sum::<f64>() / n)
            }
            GroupRule::NoisyOr => {
                1.0 - probabilities
                    .iter()
                    .map(|&p| (1.0 - clamp(p)).ln())
                    .sum::<f64>()
                    .exp()
            }
        }
    }
}

impl fmt::Display for GroupRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupRule::Mean => f.write_str("mean"),
            GroupRule::TopMean { fraction } => write!(f, "top-mean:{fraction}"),
            GroupRule::Max => f.write_str("max"),
            GroupRule::MeanLogit => f.write_str("mean-logit"),
            GroupRule::NoisyOr => f.write_str("noisy-or"),
        }
    }
}

impl FromStr for GroupRule {
    type Err = EvalError;

    /// `mean`, `top-mean:F`, `max`, `mean-logit` or `noisy-or`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || EvalError::InvalidSetting {
            field: "group_rule",
            reason: format!(
                "`{text}` is not one of mean, top-mean:F (0 < F <= 1), max, mean-logit, noisy-or"
            ),
        };
        Ok(match text {
            "mean" => GroupRule::Mean,
            "max" => GroupRule::Max,
            "mean-logit" => GroupRule::MeanLogit,
            "noisy-or" => GroupRule::NoisyOr,
            other => {
                let fraction: f64 = other
                    .strip_prefix("top-mean:")
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(invalid)?;
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(invalid());
                }
                GroupRule::TopMean { fraction }
            }
        })
    }
}

impl TryFrom<String> for GroupRule {
    type Error = EvalError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<GroupRule> for String {
    fn from(rule: GroupRule) -> Self {
        rule.to_string()
    }
}

/// Probabilities are kept this far from 0 and 1 before taking log-odds.
const PROBABILITY_FLOOR: f64 = 1e-6;

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

/// The log-odds of `p` kept [`PROBABILITY_FLOOR`] away from 0 and 1.
fn clamped_logit(p: f64) -> f64 {
    logit(p.clamp(PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR))
}

/// The slices of each group, aggregated: one row per group in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScores {
    /// Group names, sorted.
    pub groups: Vec<String>,
    /// Raw group score of each group (the rule's aggregate, before the group temperature).
    pub scores: Vec<f64>,
    /// Whether each group is positive: the majority label of its slices (ties: positive).
    pub labels: Vec<bool>,
    /// Slices in each group.
    pub sizes: Vec<usize>,
}

impl GroupScores {
    /// Aggregates slice `probabilities` (with their `labels` and `groups`) by `rule`.
    pub fn compute<S: AsRef<str>>(
        probabilities: &[f64],
        labels: &[bool],
        groups: &[S],
        rule: GroupRule,
    ) -> Result<Self, EvalError> {
        check_lengths("labels", labels.len(), "probabilities", probabilities.len())?;
        check_lengths("groups", groups.len(), "probabilities", probabilities.len())?;
        let mut members: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
        for ((&p, &label), group) in probabilities.iter().zip(labels).zip(groups) {
            let entry = members.entry(group.as_ref()).or_default();
            entry.0.push(p);
            entry.1 += usize::from(label);
        }
        let mut out = GroupScores {
            groups: Vec::with_capacity(members.len()),
            scores: Vec::with_capacity(members.len()),
            labels: Vec::with_capacity(members.len()),
            sizes: Vec::with_capacity(members.len()),
        };
        for (group, (slices, positives)) in members {
            out.groups.push(group.to_owned());
            out.scores.push(rule.aggregate(&slices));
            out.labels.push(2 * positives >= slices.len());
            out.sizes.push(slices.len());
        }
        Ok(out)
    }

    /// The group log-odds of [`Self::scores`].
    pub fn logits(&self) -> Vec<f64> {
        self.scores.iter().map(|&s| clamped_logit(s)).collect()
    }
}

/// One rule's figures on the validation groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRuleScore {
    /// The rule.
    pub rule: GroupRule,
    /// Group ROC-AUC on validation.
    pub roc_auc: f64,
    /// Group negative log-likelihood on validation after its own temperature.
    pub nll: f64,
}

/// How a model turns slice probabilities into a calibrated group probability and a group
/// decision: stored in the package, fitted on held-out groups (validation, or the out-of-fold
/// scores of a cross-fitted probe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCalibration {
    /// The aggregation rule.
    pub rule: GroupRule,
    /// Temperature dividing the group log-odds.
    pub temperature: f64,
    /// Threshold on the calibrated group probability (`p >= threshold` ⇒ positive).
    pub threshold: f64,
    /// The threshold rule it was chosen by.
    pub threshold_rule: ThresholdRule,
    /// Validation groups it was fitted on.
    pub fitted_on_groups: usize,
    /// Every rule tried on validation, in [`GroupRule::CANDIDATES`] order.
    pub candidates: Vec<GroupRuleScore>,
}

impl GroupCalibration {
    /// The calibrated probability of a group whose slices have `probabilities`.
    pub fn probability(&self, probabilities: &[f64]) -> f64 {
        let score = self.rule.aggregate(probabilities);
        sigmoid(clamped_logit(score) / self.temperature)
    }

    /// Calibrated probabilities of precomputed group scores.
    pub fn calibrated(&self, scores: &GroupScores) -> Vec<f64> {
        scores
            .logits()
            .into_iter()
            .map(|z| sigmoid(z / self.temperature))
            .collect()
    }
}

/// Chooses the rule with the best validation group ROC-AUC (ties: lower NLL, then the earlier
/// candidate), then fits its temperature (Platt-smoothed targets) and its threshold by `threshold_rule` on the same
/// groups. Needs validation groups of both classes.
pub fn fit_group_calibration<S: AsRef<str>>(
    probabilities: &[f64],
    labels: &[bool],
    groups: &[S],
    threshold_rule: ThresholdRule,
) -> Result<GroupCalibration, EvalError> {
    let mut candidates = Vec::with_capacity(GroupRule::CANDIDATES.len());
    let mut best: Option<(usize, f64)> = None;
    for (index, rule) in GroupRule::CANDIDATES.into_iter().enumerate() {
        let scores = GroupScores::compute(probabilities, labels, groups, rule)?;
        let auc = roc_auc(&scores.scores, &scores.labels)?;
        let logits = scores.logits();
        let temperature = fit_temperature_smoothed(&logits, &scores.labels)?;
        let nll = negative_log_likelihood(&logits, &scores.labels, temperature)?;
        let better = match best.map(|(i, _)| &candidates[i]) {
            None => true,
            Some(GroupRuleScore {
                roc_auc,
                nll: best_nll,
                ..
            }) => auc > *roc_auc || (auc == *roc_auc && nll < *best_nll),
        };
        candidates.push(GroupRuleScore {
            rule,
            roc_auc: auc,
            nll,
        });
        if better {
            best = Some((index, temperature));
        }
    }
    let (index, temperature) = best.ok_or(EvalError::Empty {
        what: "group rules",
    })?;
    let rule = candidates[index].rule;
    let scores = GroupScores::compute(probabilities, labels, groups, rule)?;
    let mut calibration = GroupCalibration {
        rule,
        temperature,
        threshold: 0.5,
        threshold_rule,
        fitted_on_groups: scores.groups.len(),
        candidates,
    };
    let calibrated = calibration.calibrated(&scores);
    calibration.threshold = choose_threshold(&calibrated, &scores.labels, threshold_rule)?;
    Ok(calibration)
}

/// Group-level metrics of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupEvaluation {
    /// The calibration applied (rule, temperature, threshold).
    pub calibration: GroupCalibration,
    /// Metrics over groups with intervals from resampling groups.
    pub metrics: MetricsWithCi,
}

/// Group-level metrics of slice `probabilities` under `calibration`, with a bootstrap over groups.
pub fn group_metrics<S: AsRef<str>>(
    probabilities: &[f64],
    labels: &[bool],
    groups: &[S],
    calibration: &GroupCalibration,
    bootstrap: &BootstrapConfig,
) -> Result<GroupEvaluation, EvalError> {
    let scores = GroupScores::compute(probabilities, labels, groups, calibration.rule)?;
    let calibrated = calibration.calibrated(&scores);
    let metrics = bootstrap_metrics(
        &calibrated,
        &scores.labels,
        &scores.groups,
        calibration.threshold,
        bootstrap,
    )?;
    Ok(GroupEvaluation {
        calibration: calibration.clone(),
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_aggregates_as_documented() {
        let p = [0.1, 0.2, 0.9, 0.6];
        assert!((GroupRule::Mean.aggregate(&p) - 0.45).abs() < 1e-12);
        assert!((GroupRule::TopMean { fraction: 0.5 }.aggregate(&p) - 0.75).abs() < 1e-12);
        assert!((GroupRule::TopMean { fraction: 0.01 }.aggregate(&p) - 0.9).abs() < 1e-12);
        assert_eq!(GroupRule::Max.aggregate(&p), 0.9);
        let noisy_or = 1.0 - 0.9 * 0.8 * 0.1 * 0.4;
        assert!((GroupRule::NoisyOr.aggregate(&p) - noisy_or).abs() < 1e-9);
        let mean_logit = sigmoid(p.iter().map(|&x| logit(x)).sum::<f64>() / 4.0);
        assert!((GroupRule::MeanLogit.aggregate(&p) - mean_logit).abs() < 1e-12);
    }

    #[test]
    fn perfectly_separated_groups_get_a_finite_temperature() {
        let logits = [-3.0, -2.0, 2.0, 3.0];
        let labels = [false, false, true, true];
        let plain = crate::calibration::fit_temperature(&logits, &labels).expect("fit");
        let smoothed = fit_temperature_smoothed(&logits, &labels).expect("fit");
        assert_eq!(plain, crate::calibration::TEMPERATURE_RANGE.0);
        assert!(smoothed > 0.5 && smoothed < 20.0, "{smoothed}");
        // Platt's targets (3/4 and 1/4 here) are matched at the optimum by the mean slope zero.
        let p = |z: f64| sigmoid(z / smoothed);
        let slope: f64 = logits
            .iter()
            .zip(labels)
            .map(|(&z, y)| (p(z) - if y { 0.75 } else { 0.25 }) * z)
            .sum();
        assert!(slope.abs() < 1e-6, "{slope}");
    }

    #[test]
    fn rules_round_trip_as_text_and_bad_ones_are_named() {
        for rule in GroupRule::CANDIDATES {
            assert_eq!(rule.to_string().parse::<GroupRule>().expect("parses"), rule);
        }
        let error = "top-mean:2".parse::<GroupRule>().expect_err("out of range");
        assert!(error.to_string().contains("group_rule"), "{error}");
    }

    #[test]
    fn groups_are_scored_by_majority_label_and_the_fitted_rule_separates_them() {
        // Positive groups: most slices negative-looking, one clearly positive; negatives flat.
        let mut p = Vec::new();
        let mut labels = Vec::new();
        let mut groups = Vec::new();
        for g in 0..10 {
            let positive = g % 2 == 0;
            for s in 0..8 {
                let value = if positive && s == 0 {
                    0.95
                } else {
                    0.2 + 0.01 * g as f64
                };
                p.push(value);
                labels.push(positive);
                groups.push(format!("g{g}"));
            }
        }
        let scores = GroupScores::compute(&p, &labels, &groups, GroupRule::Max).expect("scores");
        assert_eq!(scores.groups.len(), 10);
        assert_eq!(scores.labels.iter().filter(|&&l| l).count(), 5);
        let fit = fit_group_calibration(&p, &labels, &groups, ThresholdRule::Youden).expect("fit");
        assert_eq!(fit.candidates.len(), GroupRule::CANDIDATES.len());
        let chosen = fit
            .candidates
            .iter()
            .find(|c| c.rule == fit.rule)
            .expect("chosen");
        assert_eq!(chosen.roc_auc, 1.0);
        let evaluation = group_metrics(
            &p,
            &labels,
            &groups,
            &fit,
            &BootstrapConfig {
                resamples: 50,
                ..BootstrapConfig::default()
            },
        )
        .expect("metrics");
        assert_eq!(evaluation.metrics.point.n, 10);
        assert_eq!(evaluation.metrics.point.accuracy, 1.0);
    }
}
