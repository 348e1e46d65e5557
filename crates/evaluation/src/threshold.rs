//! Rules that choose the decision threshold on data (usually the validation split).
//!
//! A sample is called positive when `probability >= threshold`; the rules choose among the
//! distinct probabilities of the data, since any threshold between two of them classifies
//! exactly as the higher one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, check_probabilities, check_threshold, class_counts};

fn default_min_sensitivity() -> f64 {
    0.95
}

/// How the decision threshold is chosen.
///
/// In JSON/TOML: `{"sensitivity": {"min": 0.95}}`, `"youden"`, `{"fixed": 0.5}`. As text
/// ([`FromStr`]/[`Display`](fmt::Display)): `sensitivity:0.95`, `youden`, `fixed:0.5`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdRule {
    /// The highest threshold whose sensitivity on the data is at least `min`.
    Sensitivity {
        /// The least sensitivity to keep, in (0, 1]; 0.95 when not given.
        #[serde(default = "default_min_sensitivity")]
        min: f64,
    },
    /// The threshold maximising Youden's J = sensitivity + specificity − 1 (the highest one
    /// among ties).
    Youden,
    /// A given threshold in [0, 1].
    Fixed(f64),
}

impl Default for ThresholdRule {
    fn default() -> Self {
        ThresholdRule::Sensitivity {
            min: default_min_sensitivity(),
        }
    }
}

impl fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdRule::Sensitivity { min } => write!(f, "sensitivity:{min}"),
            ThresholdRule::Youden => write!(f, "youden"),
            ThresholdRule::Fixed(threshold) => write!(f, "fixed:{threshold}"),
        }
    }
}

impl FromStr for ThresholdRule {
    type Err = EvalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| EvalError::InvalidSetting {
            field: "threshold rule",
            reason,
        };
        let (name, value) = match text.trim().split_once(':') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (text.trim(), None),
        };
        let number = |value: Option<&str>| -> Result<Option<f64>, EvalError> {
            value
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| invalid(format!("`{v}` in `{text}` is not a number")))
                })
                .transpose()
        };
        let rule = match (name, number(value)?) {
            ("sensitivity", min) => ThresholdRule::Sensitivity {
                min: min.unwrap_or_else(default_min_sensitivity),
            },
            ("youden", None) => ThresholdRule::Youden,
            ("fixed", Some(threshold)) => ThresholdRule::Fixed(threshold),
            _ => {
                return Err(invalid(format!(
                    "`{text}` is none of `sensitivity[:MIN]`, `youden`, `fixed:THRESHOLD`"
                )));
            }
        };
        rule.validate()?;
        Ok(rule)
    }
}

impl ThresholdRule {
    /// Checks the rule's parameter: `min` in (0, 1], a fixed threshold in [0, 1].
    pub fn validate(&self) -> Result<(), EvalError> {
        match *self {
            ThresholdRule::Sensitivity { min } if !(min > 0.0 && min <= 1.0) => {
                Err(EvalError::InvalidSetting {
                    field: "sensitivity min",
                    reason: format!("{min} is not in (0, 1]"),
                })
            }
            ThresholdRule::Fixed(threshold) => check_threshold(threshold),
            _ => Ok(()),
        }
    }
}

/// Chooses the threshold by `rule` on `probabilities` of the positive class and `labels`.
///
/// [`ThresholdRule::Sensitivity`] needs positives, [`ThresholdRule::Youden`] both classes;
/// [`ThresholdRule::Fixed`] returns its threshold after checking the inputs.
pub fn choose_threshold(
    probabilities: &[f64],
    labels: &[bool],
    rule: ThresholdRule,
) -> Result<f64, EvalError> {
    check_probabilities(probabilities, labels)?;
    rule.validate()?;
    let (positives, negatives) = class_counts(labels);
    let single_class = |what| EvalError::SingleClass {
        what,
        positives,
        negatives,
    };
    let min = match rule {
        ThresholdRule::Fixed(threshold) => return Ok(threshold),
        ThresholdRule::Sensitivity { .. } if positives == 0 => {
            return Err(single_class("the sensitivity threshold rule"));
        }
        ThresholdRule::Youden if negatives == 0 || positives == 0 => {
            return Err(single_class("the Youden threshold rule"));
        }
        ThresholdRule::Sensitivity { min } => Some(min),
        ThresholdRule::Youden => None,
    };
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_unstable_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best: Option<(f64, f64)> = None; // (Youden's J, threshold)
    let mut i = 0;
    while i < order.len() {
        let score = probabilities[order[i]];
        while i < order.len() && probabilities[order[i]] == score {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let sensitivity = tp as f64 / positives as f64;
        match min {
            // Sensitivity only grows as the threshold falls: the first score that reaches
            // `min` is the highest such threshold. The tolerance absorbs rounding of `min`.
            Some(min) if sensitivity >= min - 1e-12 => return Ok(score),
            Some(_) => {}
            None => {
                let j = sensitivity - fp as f64 / negatives as f64;
                if best.is_none_or(|(best_j, _)| j > best_j + 1e-12) {
                    best = Some((j, score));
                }
            }
        }
    }
    // Unreachable with valid inputs: the lowest score has sensitivity 1 and J is always set.
    best.map(|(_, threshold)| threshold)
        .ok_or_else(|| EvalError::InvalidSetting {
            field: "threshold rule",
            reason: format!("no threshold satisfies `{rule}`"),
        })
}
